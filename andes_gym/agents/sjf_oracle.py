"""Shortest remaining job first, with the true remaining lengths (an oracle)."""

from __future__ import annotations

import numpy as np

from andes_gym.agents.base import ScoringPolicy
from andes_gym.agents.ranking import rank_scores
from andes_gym.core.candidates import Candidates, Capacity


class ShortestJobFirstOracle(ScoringPolicy):
    """Fewest true remaining output tokens first (SRPT; an upper-bound style baseline).

    Reads `Candidates.remaining_tokens`, which only a simulator can provide: run it in an
    environment built with `oracle=True`. Ties: earlier arrival, then lower id. Shortest
    first minimizes mean completion time but ignores each user's QoE targets.

    Raises:
        ValueError: From `score` when the candidates carry no remaining lengths.
    """

    name = "sjf_oracle"
    oracle = True

    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        if candidates.remaining_tokens is None:
            raise ValueError(
                "sjf_oracle needs the true remaining lengths (Candidates.remaining_tokens is "
                "None): it needs oracle=True in the environment; simulator only"
            )
        return rank_scores(candidates.remaining_tokens, candidates.arrival_s, candidates.request_id)
