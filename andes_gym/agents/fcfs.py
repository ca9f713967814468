"""First come, first served: vLLM's default scheduling policy."""

from __future__ import annotations

import numpy as np

from andes_gym.agents.base import ScoringPolicy
from andes_gym.agents.ranking import rank_scores
from andes_gym.core.candidates import Candidates, Capacity


class FCFS(ScoringPolicy):
    """Oldest request first (vLLM's default; the baseline of the Andes paper, §5).

    Scores rank candidates by arrival time (ties: lower request id). Through the shared
    `select` this admits waiting requests in arrival order while they fit and, under KV
    pressure, keeps the oldest running requests, so the newest running ones are preempted,
    as vLLM does. One difference from vLLM V0: `select` skips a request that does not fit
    and may admit a smaller, newer one behind it (vLLM stops at the first that does not
    fit); the rule is shared by every policy, so comparisons stay fair.
    """

    name = "fcfs"

    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        return rank_scores(candidates.arrival_s, candidates.request_id)
