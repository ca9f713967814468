"""`andes_gym/VLLM-v0` on the real (tiny, CPU) vLLM engine shared by the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import andes_gym.envs  # noqa: F401 (registers the ids)
from andes_gym.agents import make_policy
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.evaluation import run_episode
from andes_gym.qoe import qoe
from andes_gym.workloads.spec import Workload

pytestmark = pytest.mark.vllm

ENV_ID = "andes_gym/VLLM-v0"
REPO_ROOT = Path(__file__).resolve().parents[1]


def burst(n: int = 24, seed: int = 0) -> Workload:
    """n requests arriving within 20 ms: more KV than the test engine's 24 blocks hold."""
    rng = np.random.default_rng(seed)
    return Workload(
        arrival_s=np.sort(rng.uniform(0.0, 0.02, n)),
        prompt_tokens=rng.integers(40, 120, n),
        output_tokens=rng.integers(16, 48, n),
        ttft_s=np.full(n, 0.05),
        tds_tok_s=np.full(n, 100.0),
        name=f"burst{n}",
    )


class RaisingPolicy:
    name = "raising"

    def reset(self, seed=None):
        pass

    def decide(self, candidates, capacity):
        raise RuntimeError("boom: broken policy")


@pytest.fixture
def make_env(vllm_engine):
    envs = []

    def make(**kwargs):
        env = gym.make(ENV_ID, engine_handle=vllm_engine, **kwargs)
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()


def test_check_env(make_env):
    env = make_env(workload=burst(12), k_slots=16)
    assert env.unwrapped.spec.nondeterministic, (
        f"{ENV_ID} must be registered with nondeterministic=True: its timing is measured"
    )
    check_env(env.unwrapped)


def test_spaces_match_the_surrogate(make_env):
    live = make_env(workload=burst(4), k_slots=16)
    surrogate = gym.make("andes_gym/Surrogate-v0", engine="cpu_tiny", k_slots=16)
    assert live.observation_space == surrogate.observation_space
    assert live.action_space == surrogate.action_space
    assert live.unwrapped.feature_spec == surrogate.unwrapped.feature_spec


@pytest.mark.parametrize("policy", ["fcfs", "andes"])
def test_episode_delivers_exact_lengths_and_qoe_from_delivery_times(make_env, policy):
    workload = burst()
    env = make_env(workload=workload, k_slots=32)
    backend = env.unwrapped.backend
    backend.record_token_times = True
    result = run_episode(env, PolicyAgent(make_policy(policy)), seed=3)
    assert result.summary["num_unfinished"] == 0
    assert result.summary["num_decisions"] > 0  # the burst is contested
    np.testing.assert_array_equal(backend.tokens_received, workload.output_tokens)
    np.testing.assert_array_equal(backend.tracker.state.num_tokens, workload.output_tokens)
    assert sorted(backend.completion_order.tolist()) == list(range(len(workload)))
    for i in range(len(workload)):
        times = backend.tracker.token_times(i)
        assert len(times) == workload.output_tokens[i]
        assert times[0] >= workload.arrival_s[i] and np.all(np.diff(times) >= 0)
        expected = qoe(
            times, arrival=workload.arrival_s[i], ttft=workload.ttft_s[i], tds=workload.tds_tok_s[i]
        )
        assert result.requests.qoe[i] == pytest.approx(expected, abs=1e-9)
    assert result.summary["return"] == pytest.approx(result.summary["mean_qoe"], abs=1e-6)


def test_andes_preempts_and_reorders_under_kv_contention(make_env):
    """Identical arrivals: FCFS keeps the oldest running and finishes nearly in arrival order;
    Andes trades running requests for late waiting ones (preempting them) to raise QoE."""
    workload = burst()
    runs = {}
    for policy in ("fcfs", "andes"):
        env = make_env(workload=workload, k_slots=32)
        result = run_episode(env, PolicyAgent(make_policy(policy)), seed=5)
        backend = env.unwrapped.backend
        runs[policy] = (backend.num_preemptions.copy(), backend.completion_order.copy(), result)
    fcfs_pre, fcfs_order, _ = runs["fcfs"]
    andes_pre, andes_order, andes_result = runs["andes"]
    assert andes_pre.sum() > 0
    assert andes_pre.sum() > fcfs_pre.sum(), (andes_pre, fcfs_pre)
    assert not np.array_equal(andes_order, fcfs_order)
    # FCFS runs the oldest first: its completion order follows arrival order far more
    # closely than Andes's does.
    rank = np.arange(len(workload))
    assert np.corrcoef(fcfs_order, rank)[0, 1] > np.corrcoef(andes_order, rank)[0, 1]
    assert andes_result.summary["num_unfinished"] == 0


def test_broken_policy_and_bad_actions_raise_then_the_engine_is_reusable(make_env):
    workload = burst()
    env = make_env(workload=workload, k_slots=32)
    with pytest.raises(RuntimeError, match="boom"):
        run_episode(env, PolicyAgent(RaisingPolicy()), seed=0)
    env.reset(seed=0)
    k = env.action_space.shape[0]
    with pytest.raises(ValueError, match="not finite"):
        env.step(np.full(k, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(k + 1, dtype=np.float32))
    # reset aborts what the broken episodes left; a full episode then runs normally.
    result = run_episode(env, PolicyAgent(make_policy("fcfs")), seed=0)
    assert result.summary["num_unfinished"] == 0
    np.testing.assert_array_equal(env.unwrapped.backend.tokens_received, workload.output_tokens)


def test_reset_aborts_the_previous_episode(make_env, vllm_engine):
    workload = burst()
    env = make_env(workload=workload, k_slots=32)
    env.reset(seed=1)
    for _ in range(3):
        if env.unwrapped.decision_context is not None:
            env.step(env.action_space.sample())
    assert vllm_engine.scheduler.get_num_unfinished_requests() > 0
    env.reset(seed=2)
    # Only this episode's requests are in the engine: arrived minus finished.
    backend = env.unwrapped.backend
    in_engine = vllm_engine.scheduler.get_num_unfinished_requests()
    assert in_engine == backend._next_arrival - int(backend.finished.sum())
    assert env.unwrapped.backend.engine_handle is vllm_engine


def test_time_scale_stretches_arrivals_and_time_limit_truncates(make_env):
    workload = burst(8)
    env = make_env(workload=workload, time_scale=3.0, time_limit_s=0.01)
    env.reset(seed=0)
    np.testing.assert_allclose(env.unwrapped.workload.arrival_s, 3.0 * workload.arrival_s)
    truncated = False
    while env.unwrapped.decision_context is not None:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert env.unwrapped.backend.now_s >= 0.01 or truncated
    assert not env.unwrapped.backend.finished.all()


def test_oracle_observes_the_exact_remaining_tokens(make_env):
    workload = burst()
    env = make_env(workload=workload, k_slots=32, oracle=True)
    env.reset(seed=0)
    for _ in range(5):
        ctx = env.unwrapped.decision_context
        if ctx is None:
            break
        candidates = ctx[0]
        rows = candidates.request_id
        expected = workload.output_tokens[rows] - candidates.tokens_delivered
        np.testing.assert_array_equal(candidates.remaining_tokens, expected)
        env.step(env.action_space.sample())


def test_realtime_clock_runs_an_episode_to_the_end(make_env):
    workload = burst(8)
    env = make_env(workload=workload, realtime=True)
    result = run_episode(env, PolicyAgent(make_policy("fcfs")), seed=0)
    assert result.summary["num_unfinished"] == 0
    np.testing.assert_array_equal(env.unwrapped.backend.tokens_received, workload.output_tokens)


def test_workload_too_long_for_the_engine_is_rejected(make_env):
    workload = burst(2).replace(prompt_tokens=np.array([500, 10]), output_tokens=np.array([100, 5]))
    env = make_env(workload=workload)
    with pytest.raises(ValueError, match="max_model_len"):
        env.reset(seed=0)


CLOSE_SCRIPT = """
import json, sys, threading
import psutil, torch
import gymnasium as gym
import andes_gym.envs
from andes_gym.agents import make_policy
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.evaluation import run_episode

threads_before = {t.ident for t in threading.enumerate()}
set_num_threads = torch.set_num_threads
workload = {"name": "close_check", "num_requests": 16,
            "arrivals": {"kind": "poisson", "rate_rps": 2000.0},
            "lengths": {"kind": "sharegpt", "scale": 0.1, "max_prompt_tokens": 200,
                        "max_output_tokens": 40},
            "targets": {"kind": "reading", "time_scale": 0.02}}
env = gym.make("andes_gym/VLLM-v0", engine=sys.argv[1], workload=workload, k_slots=16)
result = run_episode(env, PolicyAgent(make_policy("andes")), seed=0)
engine_started = env.unwrapped.backend._handle is not None
env.close()
env.close()
print("ANDES_GYM_CLOSE " + json.dumps({
    "engine_started": engine_started,
    "unfinished": result.summary["num_unfinished"],
    "threads_left": sorted(t.name for t in threading.enumerate() if t.ident not in threads_before),
    "children_left": [p.pid for p in psutil.Process().children(recursive=True)],
    "set_num_threads_restored": torch.set_num_threads is set_num_threads,
}))
"""


@pytest.mark.slow
def test_close_leaves_no_engine_thread_or_process(vllm_available, test_engine_config, tmp_path):
    """In a subprocess: the env creates its own engine there, and close() releases it."""
    engine_yaml = tmp_path / "engine.yaml"
    engine_yaml.write_text(yaml.safe_dump(test_engine_config))
    proc = subprocess.run(
        [sys.executable, "-c", CLOSE_SCRIPT, str(engine_yaml)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO_ROOT),
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ANDES_GYM_CLOSE ")][-1]
    report = json.loads(line.split(" ", 1)[1])
    assert report == {
        "engine_started": True,
        "unfinished": 0,
        "threads_left": [],
        "children_left": [],
        "set_num_threads_restored": True,
    }
