"""Candidates and capacity from a vLLM V1 scheduler's requests: the hook's only adapter.

This is the one place that reads vLLM `Request` objects and the KV cache manager for the
policy; everything derived (QoE now, q_serve, q_wait) comes from the shared
`andes_gym.core.make_candidates`, exactly as in the surrogate.

vLLM surface read here (vLLM 0.32): `Request.request_id`, `.num_tokens`,
`.num_computed_tokens`, `.num_output_tokens`, `.num_prompt_tokens`, `.num_preemptions`;
`KVCacheManager.coordinator.get_blocks(request_id)`, `.block_pool.num_gpu_blocks`,
`.block_pool.get_num_free_blocks()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity, make_candidates
from andes_gym.core.candidates import kv_blocks_needed as core_kv_blocks_needed
from andes_gym.engine_bridge.ledger import RequestLedger


@dataclass(frozen=True)
class EngineLimits:
    """The scheduler limits that enter `Capacity`.

    Attributes:
        block_size: Tokens per KV block.
        max_num_seqs: Most requests one iteration runs.
        max_num_batched_tokens: Token budget of one iteration (prefill chunk size).
    """

    block_size: int
    max_num_seqs: int
    max_num_batched_tokens: int = 2048


@dataclass(frozen=True, eq=False)
class DecisionPoint:
    """A decision point of the live engine.

    Attributes:
        candidates: The candidates (`request_id` holds ledger rows).
        capacity: The engine's limits.
        requests: The vLLM `Request` of each candidate, row-aligned.
    """

    candidates: Candidates
    capacity: Capacity
    requests: list[Any]


def kv_blocks_needed(requests: Sequence[Any], block_size: int, num_groups: int = 1) -> np.ndarray:
    """KV blocks each request holds if it runs in the next iteration (the knapsack weight).

    The shared rule `andes_gym.core.candidates.kv_blocks_needed` on vLLM's counters
    (`num_tokens` is the context, the last sampled token included); one set of blocks per
    KV cache group.
    """
    n = len(requests)
    context = np.fromiter((r.num_tokens for r in requests), np.int64, count=n)
    computed = np.fromiter((r.num_computed_tokens for r in requests), np.int64, count=n)
    generated = np.fromiter((r.num_output_tokens for r in requests), np.int64, count=n)
    return num_groups * core_kv_blocks_needed(context, computed, generated, block_size)


def build_decision_point(
    *,
    running: Sequence[Any],
    waiting: Sequence[Any],
    kv_cache_manager: Any,
    limits: EngineLimits,
    ledger: RequestLedger,
    latency_model: Any,
    lookahead_s: float,
    qoe_variant: str = "delay",
    oracle: bool = False,
) -> DecisionPoint:
    """The candidates and capacity of the scheduler's current state.

    Args:
        running: Requests that ran in the last iteration (they hold KV blocks).
        waiting: Waiting or preempted requests that may be admitted.
        kv_cache_manager: The scheduler's `KVCacheManager`.
        limits: Block size and batch limit.
        ledger: Rows of every request (QoE summaries, targets).
        latency_model: A `surrogate.latency.LatencyModel` (its `serving_latency_by_batch`
            and `prefill_s_per_token` give the capacity's latencies).
        lookahead_s: Look-ahead dt of q_serve / q_wait.
        qoe_variant: QoE variant of the predictions.
        oracle: Expose the remaining tokens (`max_tokens` - delivered; exact only when
            EOS is ignored, as in the live environment).

    Returns:
        The decision point.

    Raises:
        KeyError: When a request has no ledger row.
    """
    requests = [*running, *waiting]
    n = len(requests)
    try:
        rows = np.fromiter((ledger.rows[r.request_id] for r in requests), np.int64, count=n)
    except KeyError as exc:
        raise KeyError(
            f"request {exc.args[0]!r} has no ledger row; with the live environment attached, "
            "add requests through the environment only"
        ) from None
    context = np.fromiter((r.num_tokens for r in requests), np.int64, count=n)
    prompt = np.fromiter((r.num_prompt_tokens for r in requests), np.int64, count=n)
    preemptions = np.fromiter((r.num_preemptions for r in requests), np.int64, count=n)
    coordinator = kv_cache_manager.coordinator
    num_groups = len(coordinator.single_type_managers)
    held = np.fromiter(
        (sum(len(g) for g in coordinator.get_blocks(r.request_id)) for r in requests),
        np.int64,
        count=n,
    )
    needed = kv_blocks_needed(requests, limits.block_size, num_groups)
    pool = kv_cache_manager.block_pool
    # Latency at the running batch's context (all candidates' when nothing runs), as the
    # surrogate predicts it.
    mean_context = (
        float(context[: len(running)].mean() if running else context.mean()) if n else 0.0
    )
    capacity = Capacity(
        total_kv_blocks=int(pool.num_gpu_blocks) - 1,  # one block is vLLM's null block
        free_kv_blocks=int(pool.get_num_free_blocks()),
        block_size=limits.block_size,
        max_num_seqs=limits.max_num_seqs,
        iter_latency_s=latency_model.serving_latency_by_batch(limits.max_num_seqs, mean_context, n),
        prefill_s_per_token=latency_model.prefill_s_per_token(limits.max_num_batched_tokens),
    )
    for r, row in zip(requests, rows, strict=True):
        ledger.set_preemptions(int(row), r.num_preemptions)
    state = ledger.tracker.state.take(rows)
    remaining = None
    if oracle:
        remaining = np.maximum(ledger.max_tokens[rows] - state.num_tokens, 0)
    is_running = np.zeros(n, dtype=bool)
    is_running[: len(running)] = True
    candidates = make_candidates(
        now_s=ledger.clock(),
        request_id=rows,
        is_running=is_running,
        prompt_tokens=prompt,
        kv_blocks_held=held,
        kv_blocks_needed=needed,
        num_preemptions=preemptions,
        qoe_state=state,
        capacity=capacity,
        lookahead_s=lookahead_s,
        qoe_variant=qoe_variant,
        remaining_tokens=remaining,
    )
    return DecisionPoint(candidates=candidates, capacity=capacity, requests=requests)
