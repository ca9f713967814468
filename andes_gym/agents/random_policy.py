"""Uniformly random priorities: the floor any sensible policy must beat."""

from __future__ import annotations

import numpy as np

from andes_gym.agents.base import ScoringPolicy
from andes_gym.core.candidates import Candidates, Capacity


class RandomPolicy(ScoringPolicy):
    """Independent uniform random scores every decision (a sanity baseline, no paper source).

    The generator is a numpy `Generator` seeded by `reset(seed)`; `reset(None)` reseeds
    with the constructor's `seed`, so runs are reproducible unless asked otherwise.

    Args:
        seed: Seed used at construction and by `reset(None)`.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def reset(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(self.seed if seed is None else seed)

    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        return self._rng.random(len(candidates))
