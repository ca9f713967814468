"""Hand-built candidate sets for the policy tests (through the one constructor, make_candidates)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity, make_candidates
from andes_gym.qoe import QoETracker


@dataclass
class Req:
    """One hand-made request: targets, delivered token times, engine state."""

    arrival_s: float
    running: bool = False
    token_times_s: list[float] = field(default_factory=list)
    ttft_s: float = 1.0
    tds_tok_s: float = 5.0
    prompt_tokens: int = 100
    kv_needed: int = 10
    kv_held: int | None = None
    preemptions: int = 0
    remaining: int | None = None
    request_id: int | None = None


def capacity(
    total_kv_blocks: int = 100,
    max_num_seqs: int = 8,
    base_latency_s: float = 0.02,
    per_seq_s: float = 0.001,
    block_size: int = 16,
    free_kv_blocks: int | None = None,
) -> Capacity:
    """A capacity with a linear latency model `base + per_seq * batch`."""
    lat = base_latency_s + per_seq_s * np.arange(max_num_seqs + 1)
    lat[0] = 0.0
    return Capacity(
        total_kv_blocks=total_kv_blocks,
        free_kv_blocks=total_kv_blocks if free_kv_blocks is None else free_kv_blocks,
        block_size=block_size,
        max_num_seqs=max_num_seqs,
        iter_latency_s=lat,
    )


def build(reqs: list[Req], now_s: float, cap: Capacity, lookahead_s: float = 1.0) -> Candidates:
    """Candidates for `reqs` at `now_s` (request ids default to list positions)."""
    tracker = QoETracker(capacity=max(len(reqs), 1))
    for i, r in enumerate(reqs):
        tracker.add(r.arrival_s, r.ttft_s, r.tds_tok_s)
        if r.token_times_s:
            tracker.deliver_many(i, np.asarray(r.token_times_s, dtype=np.float64))
    state = tracker.state.take(np.arange(len(reqs)))
    remaining = None
    if reqs and all(r.remaining is not None for r in reqs):
        remaining = np.array([r.remaining for r in reqs], dtype=np.int64)
    return make_candidates(
        now_s=now_s,
        request_id=np.array(
            [i if r.request_id is None else r.request_id for i, r in enumerate(reqs)],
            dtype=np.int64,
        ),
        is_running=np.array([r.running for r in reqs], dtype=bool),
        prompt_tokens=np.array([r.prompt_tokens for r in reqs], dtype=np.int64),
        kv_blocks_held=np.array(
            [
                (r.kv_needed - 1 if r.running else 0) if r.kv_held is None else r.kv_held
                for r in reqs
            ],
            dtype=np.int64,
        ),
        kv_blocks_needed=np.array([r.kv_needed for r in reqs], dtype=np.int64),
        num_preemptions=np.array([r.preemptions for r in reqs], dtype=np.int64),
        qoe_state=state,
        capacity=cap,
        lookahead_s=lookahead_s,
        remaining_tokens=remaining,
    )


def random_candidates(
    rng: np.random.Generator, n: int, cap: Capacity, now_s: float = 100.0, oracle: bool = True
) -> Candidates:
    """A random but plausible decision point: some running (with tokens), some waiting."""
    reqs = []
    for i in range(n):
        arrival = float(rng.uniform(now_s - 60.0, now_s))
        tds = float(rng.choice([3.2, 4.0, 4.8, 5.3, 7.7]))
        ttft = float(rng.uniform(0.5, 2.0))
        running = bool(rng.random() < 0.5)
        k = int(rng.integers(0, 60)) if arrival + ttft < now_s else 0
        times = []
        if k:
            start = arrival + ttft * float(rng.uniform(0.3, 3.0))
            times = sorted(
                min(now_s, start + float(x)) for x in rng.uniform(0, max(now_s - start, 0.0), k)
            )
            times = [t for t in times if t >= arrival]
        reqs.append(
            Req(
                arrival_s=arrival,
                running=running,
                token_times_s=times,
                ttft_s=ttft,
                tds_tok_s=tds,
                prompt_tokens=int(rng.integers(10, 800)),
                kv_needed=int(rng.integers(1, max(2, cap.total_kv_blocks // 4))),
                preemptions=int(rng.integers(0, 3)),
                remaining=int(rng.integers(1, 500)) if oracle else None,
                request_id=1000 + i,
            )
        )
    return build(reqs, now_s, cap)
