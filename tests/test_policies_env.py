"""Every policy acting in the surrogate environment through the one adapter."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import andes_gym.envs  # noqa: F401  (registers the environment ids)
from andes_gym.agents import make_policy
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.evaluation import run_episode
from andes_gym.workloads import load_workload_config, workload_config_to_dict

POLICIES = ["andes", "andes_dp", "edf", "fcfs", "lqf", "random", "round_robin", "sjf_oracle"]
# Scaled to the tiny engine's millisecond steps (the default quantum is for GPU seconds).
KWARGS = {"round_robin": {"quantum_s": 0.02}}


def contended_env(oracle: bool):
    spec = workload_config_to_dict(load_workload_config("bursty_2x_cpu"))
    spec["num_requests"] = 150
    spec["arrivals"]["rate_rps"] = 400.0  # a burst well above the tiny engine's capacity
    # K covers every candidate, so the slot encoding carries the whole decision.
    return gym.make(
        "andes_gym/Surrogate-v0", engine="cpu_tiny", workload=spec, oracle=oracle, k_slots=256
    )


@pytest.mark.parametrize("name", POLICIES)
def test_policy_runs_episode_to_completion(name):
    policy = make_policy(name, **KWARGS.get(name, {}))
    env = contended_env(policy.oracle)
    agent = PolicyAgent(policy)  # checks every decision with check_decision
    result = run_episode(env, agent, seed=3)
    summary, requests = result.summary, result.requests
    assert summary["num_decisions"] > 20  # the workload is contended
    assert len(agent.decision_ms) == summary["num_decisions"]
    assert summary["num_unfinished"] == 0
    assert requests.finished.all()
    assert len(requests.qoe) == 150 and np.all((requests.qoe >= 0) & (requests.qoe <= 1))
    # Requests that were preempted were re-admitted and finished like the others.
    preempted = requests.num_preemptions > 0
    assert np.all(requests.num_tokens[preempted] > 0)
    if name in ("edf", "random", "lqf", "round_robin"):
        assert preempted.any()
    if name in ("andes", "andes_dp"):
        # The default cap (P = 1) holds except for the rare forced preemption (the running
        # set itself outgrew the KV cache).
        assert (requests.num_preemptions > 1).mean() < 0.05
    env.close()


def test_same_seed_same_episode():
    results = []
    for _ in range(2):
        env = contended_env(False)
        results.append(run_episode(env, PolicyAgent(make_policy("andes")), seed=5).requests)
        env.close()
    np.testing.assert_array_equal(results[0].qoe, results[1].qoe)
    np.testing.assert_array_equal(results[0].num_preemptions, results[1].num_preemptions)


def test_sjf_oracle_in_a_non_oracle_env_fails_clearly():
    env = contended_env(False)
    with pytest.raises(ValueError, match="oracle=True"):
        run_episode(env, PolicyAgent(make_policy("sjf_oracle")), seed=3)
    env.close()
