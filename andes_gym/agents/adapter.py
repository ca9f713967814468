"""Lets any policy act in the Gymnasium environments, scored by the same code as learned ones.

`PolicyAgent.step` asks the policy for a decision on the environment's pending candidates
and applies it with `SchedulingEnv.step_decision`, as the vLLM hook applies it in serving:
nothing limits a registered policy to the K observed slots. `PolicyAgent.act` instead
encodes the decision as the K slot scores a learned policy would output (the environment
then runs the shared `select`); it is what imitation learning records, and with
`via_slots=True` what `step` uses, to see a policy through a learned policy's eyes.
Either way the same backend, reward and metrics score every agent.
"""

from __future__ import annotations

import time

import numpy as np

from andes_gym.agents.base import Policy
from andes_gym.core.features import slot_action_from_decision
from andes_gym.core.selection import Decision, check_decision


def attach_world(policy: Policy, env) -> None:
    """Gives a model-based policy (one with an `attach` method, e.g. `andes_rollout`)
    what a deployment would tell it: the engine profile and the traffic distribution
    (the environment's workload source, a distribution it samples from; never the
    episode's requests). Other policies, and environments without a profile, are left
    alone."""
    attach = getattr(policy, "attach", None)
    unwrapped = env.unwrapped
    if attach is not None and hasattr(unwrapped, "engine_profile"):
        attach(unwrapped.engine_profile, unwrapped.workload_source)


class PolicyAgent:
    """Wraps a `Policy` so it acts through an environment's action space.

    Args:
        policy: The policy.
        check: Check every decision against the invariants (cheap; on by default).
        via_slots: Act through the K slot scores (as a learned policy does) instead of
            applying the decision over all candidates.
    """

    def __init__(self, policy: Policy, check: bool = True, via_slots: bool = False) -> None:
        self.policy = policy
        self.check = check
        self.via_slots = via_slots
        self.decision_ms: list[float] = []
        self._attached = False

    @property
    def name(self) -> str:
        return self.policy.name

    def reset(self, seed: int | None = None) -> None:
        self.policy.reset(seed)
        self.decision_ms = []
        self._attached = False

    def decide(self, env) -> Decision:
        """The policy's decision for the environment's pending decision point (timed)."""
        ctx = env.unwrapped.decision_context
        if ctx is None:
            raise RuntimeError("the environment has no pending decision (episode over?)")
        candidates, capacity, _ = ctx
        if not self._attached:
            attach_world(self.policy, env)
            self._attached = True
        start = time.perf_counter()
        decision = self.policy.decide(candidates, capacity)
        self.decision_ms.append((time.perf_counter() - start) * 1e3)
        if self.check:
            check_decision(decision, candidates, capacity)
        return decision

    def act(self, obs: np.ndarray, env) -> np.ndarray:
        """The K slot scores that encode the policy's decision (see the module docstring)."""
        decision = self.decide(env)
        slot_idx = env.unwrapped.decision_context[2]
        return slot_action_from_decision(decision.order, slot_idx, env.action_space.shape[0])

    def step(self, env, obs: np.ndarray):
        """One environment step under the policy; returns `env.step`'s tuple."""
        if env.unwrapped.decision_context is None:
            return env.unwrapped.step_decision(None)
        if self.via_slots:
            return env.step(self.act(obs, env))
        return env.unwrapped.step_decision(self.decide(env))


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

    def step(self, env, obs: np.ndarray):
        """One environment step under the model; returns `env.step`'s tuple."""
        if env.unwrapped.decision_context is None:
            return env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        return env.step(self.act(obs, env))
