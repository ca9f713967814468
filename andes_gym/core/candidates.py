"""Candidates and capacity: what a scheduling policy sees at one decision point.

Each engine (the surrogate simulator, the vLLM hook) builds these in exactly one place, with
`make_candidates`, so the derived fields (QoE now, predicted QoE if served / if waiting) are
computed the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes_gym.qoe import QoEState, predict_qoe_many


def kv_blocks_needed(
    context_tokens: np.ndarray,
    computed_tokens: np.ndarray,
    generated_tokens: np.ndarray,
    block_size: int,
) -> np.ndarray:
    """KV blocks each request holds if it runs in the next iteration (the knapsack weight l_i).

    One rule for every engine. A decoding request needs its context (prompt + generated
    tokens; the last sampled token is computed next). A request in prefill (fresh,
    recompute-preempted or mid-chunk) needs its whole (re-)prefill context plus the first
    decode token.

    Args:
        context_tokens: Prompt plus generated tokens of each request.
        computed_tokens: Tokens whose KV is computed (held) now.
        generated_tokens: Output tokens generated so far.
        block_size: Tokens per KV block.

    Returns:
        int64 blocks per request.
    """
    in_prefill = (context_tokens - computed_tokens > 1) | (generated_tokens == 0)
    return (context_tokens + in_prefill + (block_size - 1)) // block_size


@dataclass(frozen=True)
class Capacity:
    """The engine's limits at a decision point.

    Attributes:
        total_kv_blocks: KV-cache blocks in the engine (the knapsack's M).
        free_kv_blocks: Blocks not held by any request right now.
        block_size: Tokens per KV block.
        max_num_seqs: Most requests one iteration may run (the knapsack's B).
        iter_latency_s: Predicted decode-iteration latency for batch sizes
            0..max_num_seqs at the current context lengths (shape `(max_num_seqs + 1,)`).
        prefill_s_per_token: Predicted seconds per prefill token (the cost of
            re-prefilling a recompute-preempted request), or None when the engine has no
            prediction (policies then fall back to their own assumption).
    """

    total_kv_blocks: int
    free_kv_blocks: int
    block_size: int
    max_num_seqs: int
    iter_latency_s: np.ndarray
    prefill_s_per_token: float | None = None

    def __post_init__(self) -> None:
        if self.total_kv_blocks <= 0 or self.block_size <= 0 or self.max_num_seqs <= 0:
            raise ValueError(
                "Capacity needs positive total_kv_blocks, block_size and max_num_seqs, got "
                f"{self.total_kv_blocks}, {self.block_size}, {self.max_num_seqs}"
            )
        lat = np.asarray(self.iter_latency_s, dtype=np.float64)
        # min >= 0 and max < inf: finite and non-negative (a NaN fails both comparisons).
        if lat.shape != (self.max_num_seqs + 1,) or not (
            np.minimum.reduce(lat) >= 0.0 and np.maximum.reduce(lat) < np.inf
        ):
            raise ValueError(
                f"Capacity.iter_latency_s must be {self.max_num_seqs + 1} finite non-negative "
                f"latencies (batch 0..max_num_seqs), got shape {lat.shape}"
            )
        object.__setattr__(self, "iter_latency_s", lat)
        spt = self.prefill_s_per_token
        if spt is not None and not (0.0 < spt < np.inf):
            raise ValueError(
                f"Capacity.prefill_s_per_token must be a positive number or None, got {spt}"
            )

    def token_latency_s(self, batch_size: int) -> float:
        """Predicted decode-iteration latency at `batch_size` (clamped to the limits)."""
        b = min(max(int(batch_size), 1), self.max_num_seqs)
        return float(self.iter_latency_s[b])


@dataclass(frozen=True, eq=False)
class Candidates:
    """Struct of arrays over the running and waiting requests at one decision point.

    Every array has one entry per candidate, in the engine's order (callers must not rely
    on it; policies rank by their own keys). Finished requests are never candidates.

    Attributes:
        now_s: Engine time of the decision, seconds (same clock as arrival_s).
        lookahead_s: Look-ahead dt used for q_serve / q_wait.
        request_id: Engine-local request ids (unique).
        is_running: True for requests that ran in the last iteration (hold KV blocks).
        arrival_s: Arrival times.
        prompt_tokens: Prompt lengths.
        tokens_delivered: Output tokens delivered so far.
        kv_blocks_held: KV blocks the request holds now.
        kv_blocks_needed: Blocks it would hold if it runs in the next iteration: for a
            running request its context plus the next token; for a waiting one its full
            (re-)prefill context. The knapsack weight l_i.
        ttft_s: Target time to first token.
        tds_tok_s: Target token delivery speed.
        num_preemptions: Times the request was preempted so far.
        qoe_now: QoE so far (tokens due by now but not delivered count as delivered now).
        q_serve: Predicted QoE at now + lookahead if served.
        q_wait: Predicted QoE at now + lookahead if it waits.
        qoe_state: The QoE summaries, row-aligned with the candidates.
        remaining_tokens: True remaining output tokens (oracle); None unless the engine
            exposes it and the caller enabled oracle information.
    """

    now_s: float
    lookahead_s: float
    request_id: np.ndarray
    is_running: np.ndarray
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    tokens_delivered: np.ndarray
    kv_blocks_held: np.ndarray
    kv_blocks_needed: np.ndarray
    ttft_s: np.ndarray
    tds_tok_s: np.ndarray
    num_preemptions: np.ndarray
    qoe_now: np.ndarray
    q_serve: np.ndarray
    q_wait: np.ndarray
    qoe_state: QoEState
    remaining_tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def num_running(self) -> int:
        return int(np.count_nonzero(self.is_running))


def make_candidates(
    *,
    now_s: float,
    request_id: np.ndarray,
    is_running: np.ndarray,
    prompt_tokens: np.ndarray,
    kv_blocks_held: np.ndarray,
    kv_blocks_needed: np.ndarray,
    num_preemptions: np.ndarray,
    qoe_state: QoEState,
    capacity: Capacity,
    lookahead_s: float,
    qoe_variant: str = "delay",
    remaining_tokens: np.ndarray | None = None,
) -> Candidates:
    """Builds candidates and their QoE predictions; the one constructor every engine uses.

    A served request is predicted to receive tokens at `1 / token_latency` where the latency
    is the capacity's prediction at the batch the engine would run if it served as many
    candidates as it may; the client consumes no faster than its tds (docs/ANDES.md §2).

    Args:
        now_s: Engine time.
        request_id: Request ids, one per candidate.
        is_running: Whether each candidate ran in the last iteration.
        prompt_tokens: Prompt lengths.
        kv_blocks_held: Blocks held now.
        kv_blocks_needed: Blocks needed to run in the next iteration.
        num_preemptions: Preemptions so far.
        qoe_state: QoE summaries, row-aligned with the other arrays.
        capacity: Engine limits and latency prediction.
        lookahead_s: Look-ahead dt for q_serve / q_wait.
        qoe_variant: QoE variant of the predictions.
        remaining_tokens: Oracle remaining lengths, or None.

    Returns:
        The candidates.
    """
    n = len(request_id)
    batch = min(n, capacity.max_num_seqs)
    rate_tok_s = 1.0 / max(capacity.token_latency_s(batch), 1e-9)
    total = None if remaining_tokens is None else qoe_state.num_tokens + remaining_tokens
    horizon_s = now_s + lookahead_s
    # One pass for the three scenarios (now; served / waiting over the look-ahead): each
    # row equals its own predict_qoe call bit for bit, at a third of the numpy calls.
    qoe_now, q_serve, q_wait = predict_qoe_many(
        qoe_state,
        now_s=now_s,
        horizons_s=(now_s, horizon_s, horizon_s),
        rates_tok_s=(0.0, rate_tok_s, 0.0),
        variant=qoe_variant,
        total_tokens=total,
    )
    return Candidates(
        now_s=float(now_s),
        lookahead_s=float(lookahead_s),
        request_id=np.asarray(request_id, dtype=np.int64),
        is_running=np.asarray(is_running, dtype=bool),
        arrival_s=qoe_state.arrival_s,
        prompt_tokens=np.asarray(prompt_tokens, dtype=np.int64),
        tokens_delivered=qoe_state.num_tokens,
        kv_blocks_held=np.asarray(kv_blocks_held, dtype=np.int64),
        kv_blocks_needed=np.asarray(kv_blocks_needed, dtype=np.int64),
        ttft_s=qoe_state.ttft_s,
        tds_tok_s=qoe_state.tds_tok_s,
        num_preemptions=np.asarray(num_preemptions, dtype=np.int64),
        qoe_now=qoe_now,
        q_serve=q_serve,
        q_wait=q_wait,
        qoe_state=qoe_state,
        remaining_tokens=(
            None if remaining_tokens is None else np.asarray(remaining_tokens, dtype=np.int64)
        ),
    )
