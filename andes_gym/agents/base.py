"""The policy interface: the surrogate env, the live env and the vLLM hook call it alike."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision, select


class Policy(ABC):
    """Chooses which candidates run in the next iteration.

    Contract: `decide` is a pure function of its arguments and the policy's own state
    (set by `reset`); it never mutates the candidates; its decision passes
    `andes_gym.core.check_decision`. Policies hold no engine objects, so the same object
    runs in the surrogate, the live environment and the vLLM scheduler hook.

    Attributes:
        name: Registered name.
        oracle: True when the policy reads `Candidates.remaining_tokens` (simulator only).
    """

    name: ClassVar[str] = ""
    oracle: ClassVar[bool] = False

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 (optional hook)
        """Clears per-episode state; `seed` seeds any randomness."""

    @abstractmethod
    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        """The selection for the next iteration."""


class ScoringPolicy(Policy):
    """A policy that scores candidates; the shared rule `select` turns scores into a decision."""

    @abstractmethod
    def score(self, candidates: Candidates, capacity: Capacity) -> np.ndarray:
        """One finite score per candidate; higher runs first."""

    def decide(self, candidates: Candidates, capacity: Capacity) -> Decision:
        return select(self.score(candidates, capacity), candidates, capacity)
