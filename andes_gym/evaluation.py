"""Runs agents through episodes and collects their metrics; shared by training, leaderboards and fidelity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes_gym.metrics import RequestMetrics


@dataclass
class EpisodeResult:
    """What one episode of one agent produced.

    Attributes:
        agent: The agent's name.
        seed: The episode seed (same seed -> same workload for every agent).
        summary: `andes_gym.metrics.summarize` fields plus `decision_ms_p50` and `return`.
        requests: Per-request metrics.
    """

    agent: str
    seed: int
    summary: dict
    requests: RequestMetrics


def run_episode(env, agent, seed: int, max_steps: int | None = None) -> EpisodeResult:
    """Plays one episode of `agent` (a `PolicyAgent` or `ModelAgent`) on `env`.

    Args:
        env: An andes_gym environment (possibly wrapped).
        agent: Object with `reset(seed)`, `step(env, obs)` (returning `env.step`'s tuple),
            `name` and `decision_ms`: a `PolicyAgent` or a `ModelAgent`.
        seed: Episode seed.
        max_steps: Stop after this many decisions (the episode then counts as truncated).

    Returns:
        The episode's result.
    """
    agent.reset(seed)
    obs, info = env.reset(seed=seed)
    total_reward = 0.0
    steps = 0
    done = False
    while not done:
        # An episode with no contested decision point ends on its first step (the agents
        # handle that step: it only reports the reward).
        obs, reward, terminated, truncated, info = agent.step(env, obs)
        total_reward += reward
        steps += 1
        done = terminated or truncated or (max_steps is not None and steps >= max_steps)
    results = env.unwrapped.episode_results()
    summary = dict(results["qoe_summary"])
    summary["return"] = total_reward
    summary["decision_ms_p50"] = float(np.median(agent.decision_ms)) if agent.decision_ms else 0.0
    return EpisodeResult(agent.name, seed, summary, results["request_metrics"])
