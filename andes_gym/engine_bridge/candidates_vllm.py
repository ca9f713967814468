"""Candidates and capacity from a vLLM V1 scheduler's requests: the hook's only adapter.

This is the one place that turns vLLM `Request` objects and the KV cache manager into what
the policy sees: `request_counters` and `knapsack_weights` (which `live_requests` keeps
up to date incrementally), `build_decision_point` (everything read from scratch) and
`assemble_decision_point` (what both paths share). Everything derived (QoE now, q_serve,
q_wait) comes from the shared `andes_gym.core.make_candidates`, exactly as in the
surrogate.

vLLM surface read here (vLLM 0.32): `Request.request_id`, `.num_tokens`,
`.num_output_placeholders`, `.num_computed_tokens`, `.num_output_tokens`,
`.num_prompt_tokens`, `.num_preemptions`;
`KVCacheManager.coordinator.get_blocks(request_id)`, `.block_pool.num_gpu_blocks`,
`.block_pool.get_num_free_blocks()`.
"""

from __future__ import annotations

import operator
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


COUNTERS = ("context", "computed", "generated", "prompt", "preemptions")
"""The scheduler counters of a request that enter its candidate row (`request_counters`)."""
# Read with C-level map(attrgetter) loops: these run over every running request per step.
_PLACEHOLDERS = operator.attrgetter("num_output_placeholders")
_NUM_TOKENS = operator.attrgetter("num_tokens")
_COMPUTED = operator.attrgetter("num_computed_tokens")
_OUTPUT_TOKENS = operator.attrgetter("num_output_tokens")
_PROMPT = operator.attrgetter("num_prompt_tokens")
_PREEMPTIONS = operator.attrgetter("num_preemptions")


def request_counters(requests: Sequence[Any]) -> dict[str, np.ndarray]:
    """The scheduler's counters of `requests`, as arrays (one entry per request).

    The counters the scheduler plans the next step with: under async scheduling the step
    in flight has computed its tokens (`num_computed_tokens`) and will deliver one output
    token per request (`num_output_placeholders`); without it, the placeholders are 0.

    Returns:
        A mapping of `COUNTERS`: `context` (prompt plus output tokens, in-flight ones
        included), `computed` (tokens whose KV is computed or being computed),
        `generated` (output tokens, in-flight ones included), `prompt`, `preemptions`.
    """
    n = len(requests)

    def read(getter: operator.attrgetter) -> np.ndarray:
        return np.fromiter(map(getter, requests), np.int64, n)

    placeholders = read(_PLACEHOLDERS)
    return {
        "context": read(_NUM_TOKENS) + placeholders,
        "computed": read(_COMPUTED),
        "generated": read(_OUTPUT_TOKENS) + placeholders,
        "prompt": read(_PROMPT),
        "preemptions": read(_PREEMPTIONS),
    }


def knapsack_weights(counters: dict[str, np.ndarray], block_size: int, num_groups: int = 1):
    """KV blocks each request needs to run next iteration (the knapsack weight l_i).

    The shared rule `andes_gym.core.candidates.kv_blocks_needed` on `request_counters`;
    one set of blocks per KV cache group.
    """
    weights = core_kv_blocks_needed(
        counters["context"], counters["computed"], counters["generated"], block_size
    )
    return num_groups * weights


def kv_blocks_needed(requests: Sequence[Any], block_size: int, num_groups: int = 1) -> np.ndarray:
    """The knapsack weight of each of `requests` (`knapsack_weights` of their counters)."""
    return knapsack_weights(request_counters(requests), block_size, num_groups)


def held_blocks(kv_cache_manager: Any, requests: Sequence[Any]) -> np.ndarray:
    """KV blocks each request holds now, over all KV cache groups."""
    coordinator = kv_cache_manager.coordinator
    return np.fromiter(
        (sum(len(g) for g in coordinator.get_blocks(r.request_id)) for r in requests),
        np.int64,
        count=len(requests),
    )


@dataclass(frozen=True, eq=False)
class PointContext:
    """What a decision point needs besides the requests: the engine and the QoE settings.

    Attributes:
        kv_cache_manager: The scheduler's `KVCacheManager`.
        limits: Block size and batch limit.
        ledger: Rows of every request (QoE summaries, targets).
        latency_model: A `surrogate.latency.LatencyModel` (its `serving_latency_by_batch`
            and `prefill_s_per_token` give the capacity's latencies).
        lookahead_s: Look-ahead dt of q_serve / q_wait.
        qoe_variant: QoE variant of the predictions.
        oracle: Expose the remaining tokens (`max_tokens` - delivered; exact only when
            EOS is ignored, as in the live environment).
    """

    kv_cache_manager: Any
    limits: EngineLimits
    ledger: RequestLedger
    latency_model: Any
    lookahead_s: float
    qoe_variant: str = "delay"
    oracle: bool = False


def build_decision_point(
    running: Sequence[Any], waiting: Sequence[Any], context: PointContext
) -> DecisionPoint:
    """The candidates and capacity of the scheduler's current state, read from scratch.

    Args:
        running: Requests that ran in the last iteration (they hold KV blocks).
        waiting: Waiting or preempted requests that may be admitted.
        context: The engine and the QoE settings.

    Returns:
        The decision point.

    Raises:
        KeyError: When a request has no ledger row.
    """
    requests = [*running, *waiting]
    counters = request_counters(requests)
    manager = context.kv_cache_manager
    num_groups = len(manager.coordinator.single_type_managers)
    return assemble_decision_point(
        requests,
        len(running),
        counters,
        knapsack_weights(counters, context.limits.block_size, num_groups),
        held_blocks(manager, requests),
        context,
    )


def assemble_decision_point(
    requests: list[Any],
    num_running: int,
    counters: dict[str, np.ndarray],
    needed: np.ndarray,
    held: np.ndarray,
    context: PointContext,
) -> DecisionPoint:
    """The decision point of `requests` (running first) from their counters and weights.

    What `build_decision_point` and the hook's incremental state (`LiveRequests`) share:
    ledger rows, capacity, and `make_candidates`.

    Args:
        requests: Running requests first, then waiting ones.
        num_running: How many of `requests` run.
        counters: `request_counters` of `requests`.
        needed: Their knapsack weights.
        held: KV blocks each holds now.
        context: The engine and the QoE settings.

    Raises:
        KeyError: When a request has no ledger row.
    """
    ledger, limits, latency_model = context.ledger, context.limits, context.latency_model
    n = len(requests)
    try:
        rows = np.fromiter((ledger.rows[r.request_id] for r in requests), np.int64, count=n)
    except KeyError as exc:
        raise KeyError(
            f"request {exc.args[0]!r} has no ledger row; with the live environment attached, "
            "add requests through the environment only"
        ) from None
    tokens = counters["context"]
    pool = context.kv_cache_manager.block_pool
    # Latency at the running batch's context (all candidates' when nothing runs), as the
    # surrogate predicts it.
    mean_context = (
        float(tokens[:num_running].mean() if num_running else tokens.mean()) if n else 0.0
    )
    capacity = Capacity(
        total_kv_blocks=int(pool.num_gpu_blocks) - 1,  # one block is vLLM's null block
        free_kv_blocks=int(pool.get_num_free_blocks()),
        block_size=limits.block_size,
        max_num_seqs=limits.max_num_seqs,
        iter_latency_s=latency_model.serving_latency_by_batch(limits.max_num_seqs, mean_context, n),
        prefill_s_per_token=latency_model.prefill_s_per_token(limits.max_num_batched_tokens),
    )
    preemptions = counters["preemptions"]
    ledger.set_preemptions(rows, preemptions)
    state = ledger.tracker.state.take(rows)
    remaining = None
    if context.oracle:
        remaining = np.maximum(ledger.max_tokens[rows] - state.num_tokens, 0)
    is_running = np.zeros(n, dtype=bool)
    is_running[:num_running] = True
    candidates = make_candidates(
        now_s=ledger.clock(),
        request_id=rows,
        is_running=is_running,
        prompt_tokens=counters["prompt"],
        kv_blocks_held=held,
        kv_blocks_needed=needed,
        num_preemptions=preemptions,
        qoe_state=state,
        capacity=capacity,
        lookahead_s=context.lookahead_s,
        qoe_variant=context.qoe_variant,
        remaining_tokens=remaining,
    )
    return DecisionPoint(candidates=candidates, capacity=capacity, requests=requests)
