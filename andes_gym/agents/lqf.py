"""Least QoE first: serve the requests whose experience is worst right now."""

from __future__ import annotations

import numpy as np

from andes_gym.agents.base import ScoringPolicy
from andes_gym.agents.ranking import rank_scores
from andes_gym.core.candidates import Candidates, Capacity

KEYS = ("qoe_now", "gain")


class LeastQoEFirst(ScoringPolicy):
    """Least QoE first (the Andes paper's LQSF baseline, docs/ANDES.md §4).

    docs/ANDES.md §4 describes the baseline as "Andes' value with every weight set to 1". Our reading:
    the knapsack weights l_i (KV blocks) are all set to 1, so memory use no longer buys
    priority, and the ranking is by QoE alone. With `key="qoe_now"` (default) the lowest
    current QoE (`Candidates.qoe_now`, tokens due but missing counted as delivered now)
    goes first, ties broken by the larger predicted gain `q_serve - q_wait`, then earlier
    arrival, then lower id. With `key="gain"` the ranking is Andes' value itself without
    the density division (largest `q_serve - q_wait` first, ties by lower QoE now); this
    is the other possible reading, kept for comparison.

    Args:
        key: `"qoe_now"` or `"gain"` (see above).

    Raises:
        ValueError: For another key.
    """

    name = "lqf"

    def __init__(self, key: str = "qoe_now") -> None:
        if key not in KEYS:
            raise ValueError(f"lqf key must be one of {KEYS}, got {key!r}")
        self.key = key

    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        c = candidates
        neg_gain = -(c.q_serve - c.q_wait)
        first, second = (c.qoe_now, neg_gain) if self.key == "qoe_now" else (neg_gain, c.qoe_now)
        return rank_scores(first, second, c.arrival_s, c.request_id)
