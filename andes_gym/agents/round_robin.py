"""Round robin: requests take turns of a fixed quantum of engine time."""

from __future__ import annotations

import math

import numpy as np

from andes_gym.agents.base import Policy
from andes_gym.agents.ranking import rank_scores
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision, select


class RoundRobin(Policy):
    """Round robin over a FIFO queue with a time quantum (a baseline of the Andes paper, §5).

    Each request has a queue key, its place in the round-robin queue: its arrival time when
    it is first seen. A running request whose turn has lasted `quantum_s` seconds of engine
    time goes to the back of the queue (its key becomes the current time). Candidates are
    ranked by key (ties: earlier arrival, then lower id) and the shared `select` admits them
    while they fit, so under contention a request that used up its turn yields its KV blocks
    to the requests queued before it, and every request gets turns. Time-based turns stay
    correct when an environment skips uncontested decisions (the policy is not asked then).

    State (cleared by `reset`): the queue key and the start of the current turn per
    request id, pruned to the current candidates at each decision. Deterministic.

    Args:
        quantum_s: Length of a turn, seconds of engine time (> 0).

    Raises:
        ValueError: For a quantum that is not a positive finite number.
    """

    name = "round_robin"

    def __init__(self, quantum_s: float = 2.0) -> None:
        if not (math.isfinite(quantum_s) and quantum_s > 0):
            raise ValueError(f"quantum_s must be a positive number of seconds, got {quantum_s}")
        self.quantum_s = float(quantum_s)
        self._queue_key_s: dict[int, float] = {}
        self._turn_start_s: dict[int, float] = {}

    def reset(self, seed: int | None = None) -> None:
        self._queue_key_s = {}
        self._turn_start_s = {}

    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        now = candidates.now_s
        ids = candidates.request_id.tolist()
        keys = np.empty(len(ids), dtype=np.float64)
        turn_start: list[float | None] = []
        for i, (rid, running, arrival) in enumerate(
            zip(ids, candidates.is_running.tolist(), candidates.arrival_s.tolist(), strict=True)
        ):
            key = self._queue_key_s.get(rid, arrival)
            start = self._turn_start_s.get(rid) if running else None
            if running and start is None:
                start = now  # admitted while the policy was not asked: its turn starts now
            elif running and now - start >= self.quantum_s:
                key, start = now, None  # turn used up: back of the queue
            keys[i] = key
            turn_start.append(start)
        decision = select(
            rank_scores(keys, candidates.arrival_s, candidates.request_id), candidates, capacity
        )
        selected = decision.selected.tolist()
        self._queue_key_s = dict(zip(ids, keys.tolist(), strict=True))
        self._turn_start_s = {
            rid: (now if start is None else start)
            for rid, start, sel in zip(ids, turn_start, selected, strict=True)
            if sel
        }
        return decision
