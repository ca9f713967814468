"""Lets any policy act in the Gymnasium environments exactly like a learned one.

The adapter asks the policy for a decision on the environment's pending candidates and
encodes it as the K slot scores a learned policy would output; the environment then runs
the same `select` for both. Baselines and learned policies are scored by identical code.
"""

from __future__ import annotations

import time

import numpy as np

from andes_gym.agents.base import Policy
from andes_gym.core.features import slot_action_from_decision
from andes_gym.core.selection import check_decision


class PolicyAgent:
    """Wraps a `Policy` so it acts through an environment's action space.

    Args:
        policy: The policy.
        check: Check every decision against the invariants (cheap; on by default).
    """

    def __init__(self, policy: Policy, check: bool = True) -> None:
        self.policy = policy
        self.check = check
        self.decision_ms: list[float] = []

    @property
    def name(self) -> str:
        return self.policy.name

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)
        self.decision_ms = []

    def act(self, obs: np.ndarray, env) -> np.ndarray:
        """The K slot scores for the environment's pending decision."""
        ctx = env.unwrapped.decision_context
        if ctx is None:
            raise RuntimeError("the environment has no pending decision (episode over?)")
        candidates, capacity, slot_idx = ctx
        start = time.perf_counter()
        decision = self.policy.decide(candidates, capacity)
        self.decision_ms.append((time.perf_counter() - start) * 1e3)
        if self.check:
            check_decision(decision, candidates, capacity)
        return slot_action_from_decision(decision.order, slot_idx, env.action_space.shape[0])


class ModelAgent:
    """Wraps a stable-baselines3 model (or anything with `predict(obs, deterministic)`)."""

    def __init__(self, model, name: str = "learned", deterministic: bool = True) -> None:
        self.model = model
        self._name = name
        self.deterministic = deterministic
        self.decision_ms: list[float] = []

    @property
    def name(self) -> str:
        return self._name

    def reset(self, seed: int | None = None) -> None:
        self.decision_ms = []

    def act(self, obs: np.ndarray, env) -> np.ndarray:
        start = time.perf_counter()
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        self.decision_ms.append((time.perf_counter() - start) * 1e3)
        return action
