"""The surrogate engine's cost formulas, each written once.

Plain arithmetic on numbers or numpy arrays (elementwise), so the same function serves
the latency models (`latency.py`, on scalars and arrays), the specification engine
(`simulator.py`) and the compiled engine, whose kernels compile these very functions
with numba (`compiled/kernels.py`). Keep them to operations numba compiles the same way
on scalars (`+ - * / //`, `np.maximum`, `float`); their order of operations fixes the
engine's results bit for bit.

Editing this file: the compiled kernels pin its digest (`kernels.COSTS_DIGEST`), because
numba's disk cache notices edits only in the kernels' own file; the import error names
the new digest to paste there (which also refreshes the cache).
"""

from __future__ import annotations

import numpy as np


def linear_latency_s(
    base_s, per_prefill_s, per_prefill_sq_s, per_decode_s, per_context_s, p, d, ctx
):
    """One iteration's forward pass under the linear model: `p` prefill tokens, `d` decoding
    sequences, `ctx` context tokens attended to (`LinearLatencySpec` names the terms)."""
    return (
        base_s
        + per_prefill_s * p
        + per_prefill_sq_s * p * p
        + per_decode_s * d
        + per_context_s * ctx
    )


def roofline_latency_s(weight_s, kv_token_s, token_s, pair_s, overhead_s, p, d, ctx):
    """One iteration's forward pass under the roofline model (`RooflineLatencyModel`):
    the slower of reading the weights and the attended KV, and computing the tokens and
    the attention pairs, plus a fixed overhead."""
    memory_s = weight_s + kv_token_s * ctx
    compute_s = token_s * (p + d) + pair_s * (ctx + 0.5 * p * p)
    return overhead_s + np.maximum(memory_s, compute_s)


def serving_overhead_s(per_prefill_seq_s, per_request_s, num_prefill_seqs, num_requests):
    """The profile's serving overhead of one iteration (`OverheadSpec`): per request that
    computes prefill tokens in it, and per request in the engine (running or waiting)."""
    return per_prefill_seq_s * num_prefill_seqs + per_request_s * num_requests


def decision_overhead_s(decision_s, per_candidate_s, num_candidates):
    """What building a decision handed to a policy delays the next iteration by."""
    return decision_s + per_candidate_s * num_candidates


def swap_s(num_blocks, swap_s_per_block):
    """Seconds to move `num_blocks` KV blocks between GPU and host memory."""
    return float(num_blocks) * swap_s_per_block


def kv_blocks(tokens, block_size):
    """KV blocks that hold `tokens` tokens."""
    return (tokens + (block_size - 1)) // block_size
