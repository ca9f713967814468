"""`andes_gym/Surrogate-v0`: the Gymnasium contract, reward, episode end and rendering."""

from __future__ import annotations

import builtins
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import andes_gym.envs  # noqa: F401 (registers the ids)
from andes_gym.agents.adapter import PolicyAgent
from andes_gym.core.features import FeatureSpec
from andes_gym.envs.surrogate_env import SurrogateEnv
from andes_gym.qoe import predict_qoe

ENV_ID = "andes_gym/Surrogate-v0"


def cpu_workload(n=80, rate_rps=800.0, output_max=200, cv=3.0) -> dict:
    return {
        "name": "test",
        "num_requests": n,
        "arrivals": {"kind": "gamma", "rate_rps": rate_rps, "cv": cv},
        "lengths": {
            "kind": "sharegpt",
            "scale": 0.2,
            "max_prompt_tokens": 256,
            "max_output_tokens": output_max,
        },
        "targets": {"kind": "reading", "time_scale": 0.02},
    }


def make(**kw):
    kw.setdefault("workload", cpu_workload())
    kw.setdefault("engine", "cpu_tiny")
    kw.setdefault("k_slots", 16)
    return gym.make(ENV_ID, **kw)


def rollout(env, seed, action_seed=0, max_steps=10_000):
    """Seeded random actions; returns observations, rewards, infos and the end flags."""
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    for _ in range(max_steps):
        action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append({k: v for k, v in info.items() if k != "request_metrics"})
        if terminated or truncated:
            return observations, rewards, infos, terminated, truncated
    raise AssertionError("episode did not end")


def play(env, agent, seed):
    obs, _ = env.reset(seed=seed)
    agent.reset(seed)
    total, info = 0.0, {}
    done = False
    while not done:
        # No pending decision right after reset: nothing was contested, any action ends it.
        pending = env.unwrapped.decision_context is not None
        action = agent.act(obs, env) if pending else np.zeros(env.action_space.shape, np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    return total, info, terminated, truncated


def test_ids_are_registered():
    assert ENV_ID in gym.registry
    assert "andes_gym/VLLM-v0" in gym.registry
    assert gym.registry[ENV_ID].entry_point == "andes_gym.envs.surrogate_env:SurrogateEnv"


def test_importing_envs_imports_neither_vllm_nor_torch():
    code = (
        "import sys, andes_gym.envs, gymnasium as gym; "
        "gym.make('andes_gym/Surrogate-v0', engine='cpu_tiny'); "
        "print(sorted(m for m in ('vllm', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_passes_gymnasium_check_env():
    env = make()
    check_env(env.unwrapped, skip_render_check=True)
    spec = FeatureSpec(k_slots=16)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (16,)


def test_same_seed_same_trajectory_and_different_seeds_differ():
    a = rollout(make(), seed=7)
    b = rollout(make(), seed=7)
    assert len(a[0]) == len(b[0]) > 5
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    assert a[1] == b[1]
    assert a[2] == b[2]
    c = rollout(make(), seed=8)
    assert len(c[0]) != len(a[0]) or any(
        not np.array_equal(x, y) for x, y in zip(a[0], c[0], strict=False)
    )


def test_pickled_env_continues_identically():
    env = make().unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, 16).astype(np.float32))
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(200):
        action = rng.uniform(-1, 1, 16).astype(np.float32)
        o1, r1, te1, tr1, _ = env.step(action)
        o2, r2, te2, tr2, _ = clone.step(action)
        assert np.array_equal(o1, o2) and r1 == r2 and (te1, tr1) == (te2, tr2)
        if te1 or tr1:
            break
    else:
        raise AssertionError("episode did not end")


def test_runs_under_stable_baselines3_subproc_vec_env():
    from stable_baselines3.common.vec_env import SubprocVecEnv

    # fork: the children start in well under a second (forkserver re-imports everything).
    venv = SubprocVecEnv([lambda: make(workload=cpu_workload(n=40))] * 2, start_method="fork")
    try:
        venv.seed(0)
        obs = venv.reset()
        assert obs.shape == (2, FeatureSpec(k_slots=16).obs_dim)
        for _ in range(5):
            obs, rewards, dones, infos = venv.step(np.zeros((2, 16), dtype=np.float32))
        assert rewards.shape == (2,) and np.all(np.isfinite(rewards))
    finally:
        venv.close()


def test_render_modes():
    env = make(render_mode="ansi")
    env.reset(seed=0)
    env.step(np.zeros(16, dtype=np.float32))
    text = env.render()
    assert "KV blocks" in text and "running=" in text and "QoE so far" in text
    env = make(render_mode="rgb_array")
    env.reset(seed=0)
    for _ in range(10):
        env.step(np.zeros(16, dtype=np.float32))
    image = env.render()
    assert image.dtype == np.uint8 and image.shape == (480, 640, 3)
    assert image.min() < 128  # something was drawn on the white canvas


def test_episode_return_equals_mean_qoe():
    env = make()
    _, rewards, infos, terminated, truncated = rollout(env, seed=1)
    summary = infos[-1]["qoe_summary"]
    assert terminated and not truncated
    assert summary["num_unfinished"] == 0
    assert sum(rewards) == pytest.approx(summary["mean_qoe"], rel=1e-9)
    assert summary["mean_qoe"] < 0.99  # the workload is contended


def test_every_request_finishes_with_its_length():
    env = make()
    rollout(env, seed=2)
    backend, wl = env.unwrapped.backend, env.unwrapped.workload
    assert backend.finished.all()
    assert np.array_equal(backend.tracker.state.num_tokens, wl.output_tokens)


def test_light_load_gives_qoe_near_one_and_overload_lowers_it():
    from andes_gym.agents.registry import make_policy

    agent = PolicyAgent(make_policy("fcfs"))
    light = make(workload=cpu_workload(n=60, rate_rps=20.0, cv=1.0))
    ret_light, info_light, terminated, _ = play(light, agent, seed=0)
    assert terminated
    assert info_light["qoe_summary"]["mean_qoe"] > 0.97
    assert ret_light == pytest.approx(info_light["qoe_summary"]["mean_qoe"], rel=1e-9)
    heavy = make(workload=cpu_workload(n=150, rate_rps=2000.0, cv=1.0))
    ret_heavy, info_heavy, _, _ = play(heavy, agent, seed=0)
    assert info_heavy["qoe_summary"]["mean_qoe"] < info_light["qoe_summary"]["mean_qoe"] - 0.1


def test_uncontested_episode_ends_on_the_first_step():
    env = make(workload=cpu_workload(n=5, rate_rps=1.0, cv=1.0))
    obs, info = env.reset(seed=0)
    assert info["num_candidates"] == 0 and not obs.any()
    obs, reward, terminated, truncated, info = env.step(np.zeros(16, dtype=np.float32))
    assert terminated and not truncated
    assert reward == pytest.approx(info["qoe_summary"]["mean_qoe"], rel=1e-9)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(16, dtype=np.float32))


def test_truncation_scores_unfinished_requests_at_their_lower_bound():
    env = make(time_limit_s=0.05)
    _, rewards, infos, terminated, truncated = rollout(env, seed=1)
    assert truncated and not terminated
    unwrapped = env.unwrapped
    backend, wl = unwrapped.backend, unwrapped.workload
    now = backend.now_s
    assert now >= 0.05
    summary = infos[-1]["qoe_summary"]
    assert summary["num_unfinished"] > 0
    metrics = unwrapped.episode_results()["request_metrics"]
    arrived = np.flatnonzero(wl.arrival_s <= now)
    bound = predict_qoe(
        backend.tracker.state.take(arrived),
        now_s=now,
        horizon_s=now,
        rate_tok_s=0.0,
        total_tokens=wl.output_tokens[arrived],
        pending="all",
    )
    np.testing.assert_allclose(metrics.qoe, bound, rtol=1e-12)
    assert sum(rewards) == pytest.approx(
        summary["mean_qoe"] * summary["num_requests"] / len(wl), rel=1e-9
    )


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.full(16, np.nan, dtype=np.float32), "not finite"),
        (np.zeros(15, dtype=np.float32), "shape"),
        (np.zeros((2, 16), dtype=np.float32), "shape"),
    ],
)
def test_bad_actions_raise_value_error(action, message):
    env = make().unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_oracle_feature_is_hidden_unless_enabled():
    spec = FeatureSpec(k_slots=16)
    col = spec.slot_features.index("log_remaining_oracle")
    for oracle in (False, True):
        env = make(oracle=oracle)
        obs, _ = env.reset(seed=0)
        slots = obs[: 16 * spec.num_slot_features].reshape(16, -1)
        assert slots[:, col].any() == oracle


def test_fewer_decisions_with_more_iterations_per_decision():
    steps = {}
    for n in (1, 4):
        _, rewards, *_ = rollout(make(iters_per_decision=n), seed=0)
        steps[n] = len(rewards)
    assert steps[4] < steps[1]


def test_reset_reads_no_files(monkeypatch):
    env = make()

    def no_open(*args, **kwargs):
        raise AssertionError(f"reset opened a file: {args[:1]}")

    monkeypatch.setattr(builtins, "open", no_open)
    env.reset(seed=5)
    env.step(np.zeros(16, dtype=np.float32))


def test_default_arguments_build_the_documented_env():
    env = SurrogateEnv()
    assert env.engine_profile.name == "llama7b_a100"
    # Default K: every running request (max_num_seqs = 256) plus 64 waiting ones.
    assert env.action_space.shape == (256 + 64,)
    assert "## Observation Space" in SurrogateEnv.__doc__


def test_k_below_the_batch_limit_warns():
    with pytest.warns(UserWarning, match="below the engine's max_num_seqs"):
        SurrogateEnv(engine="cpu_tiny", k_slots=16)


def test_check_env_with_the_registered_defaults():
    # bursty_2x on llama7b_a100: at the preset's rate nothing is contested, so every reset
    # runs a whole episode and the first step ends it; the contract must still hold.
    env = gym.make(ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)


def test_policies_see_every_candidate_not_only_the_slots():
    # With fewer slots than candidates, a decision applied directly (as the vLLM hook
    # applies it) can differ from the same decision squeezed through the K slot scores.
    from andes_gym.agents import make_policy
    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.evaluation import run_episode

    kwargs = dict(workload=_contended_cpu_workload(), engine="cpu_tiny", lookahead_s=0.05)
    with pytest.warns(UserWarning, match="below the engine's max_num_seqs"):
        env = SurrogateEnv(k_slots=4, **kwargs)
    direct = run_episode(env, PolicyAgent(make_policy("lqf")), seed=3)
    squeezed = run_episode(env, PolicyAgent(make_policy("lqf"), via_slots=True), seed=3)
    assert direct.summary["num_unfinished"] == squeezed.summary["num_unfinished"] == 0
    assert not np.array_equal(direct.requests.qoe, squeezed.requests.qoe)


def test_step_decision_rejects_an_invalid_decision():
    from andes_gym.core.selection import Decision, InvalidDecision

    env = SurrogateEnv(workload=_contended_cpu_workload(), engine="cpu_tiny", k_slots=64)
    env.reset(seed=0)
    candidates, capacity, _ = env.decision_context
    everyone = np.arange(len(candidates))
    too_much = Decision(selected=np.ones(len(candidates), dtype=bool), order=everyone)
    with pytest.raises(InvalidDecision, match="KV blocks|max_num_seqs"):
        env.step_decision(too_much)


def _contended_cpu_workload() -> dict:
    return {
        "name": "contended_cpu",
        "num_requests": 300,
        "arrivals": {"kind": "poisson", "rate_rps": 600.0},
        "lengths": {
            "kind": "sharegpt",
            "scale": 0.1,
            "max_prompt_tokens": 384,
            "max_output_tokens": 128,
        },
        "targets": {"kind": "reading", "time_scale": 0.02},
    }


def test_a_workload_list_mixes_loads_one_per_episode():
    light = {**cpu_workload(n=30, rate_rps=20.0, cv=1.0), "name": "light"}
    heavy = {**cpu_workload(n=60, rate_rps=2000.0, cv=1.0), "name": "heavy"}
    env = make(workload=[light, heavy])
    names = {}
    for seed in range(12):
        env.reset(seed=seed)
        names[seed] = env.unwrapped.workload.name
    assert set(names.values()) == {"light", "heavy"}  # both components are played
    # Deterministic in the seed, and the draw matches the component played alone.
    env.reset(seed=3)
    again = env.unwrapped.workload
    alone = make(workload=light if names[3] == "light" else heavy)
    alone.reset(seed=3)
    assert again.name == names[3]
    np.testing.assert_array_equal(again.arrival_s, alone.unwrapped.workload.arrival_s)
    check_env(make(workload=[light, heavy]).unwrapped, skip_render_check=True)
    clone = pickle.loads(pickle.dumps(env.unwrapped))
    clone.reset(seed=5)
    assert clone.workload.name == names[5]


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        ([{"name": "only"}], r"workload\[0\]"),
        (["steady_poisson_cpu", 7], r"workload\[1\].*int"),
        (["steady_poisson_cpu"], "at least 2"),
    ],
)
def test_bad_workload_lists_name_the_entry(workload, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(workload=workload)
