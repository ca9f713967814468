"""Earliest deadline first, with per-token deadlines from the QoE targets."""

from __future__ import annotations

import numpy as np

from andes_gym.agents.base import ScoringPolicy
from andes_gym.agents.ranking import rank_scores
from andes_gym.core.candidates import Candidates, Capacity


def next_token_deadline_s(candidates: Candidates) -> np.ndarray:
    """Ideal consumption time of each candidate's next token (docs/ANDES.md §1).

    With k tokens delivered, the next token is k + 1 and its ideal time is
    `e_{k+1} = arrival + ttft + k / tds`; for k = 0 that is the TTFT deadline.
    """
    return (
        candidates.arrival_s
        + candidates.ttft_s
        + candidates.tokens_delivered / candidates.tds_tok_s
    )


class EarliestDeadlineFirst(ScoringPolicy):
    """Earliest deadline first (classic real-time scheduling; an Andes-paper style baseline).

    A waiting request with no token yet has the TTFT deadline `arrival + ttft`; once tokens
    flow, the deadline is the next token's ideal consumption time
    `e_{k+1} = arrival + ttft + k / tds` (docs/ANDES.md §1). Requests behind schedule have
    deadlines in the past and run first; requests whose client buffer is ahead of the user
    have later deadlines and yield. Ties: earlier arrival, then lower id.
    """

    name = "edf"

    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        return rank_scores(
            next_token_deadline_s(candidates), candidates.arrival_s, candidates.request_id
        )
