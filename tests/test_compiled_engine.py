"""The compiled engine (`simulator="compiled"`) against its specification
(`simulator="python"`, `SurrogateBackend`), side by side.

Both engines play the same episodes with the same actions; observations, episode ends,
engine times, the QoE record and the final metrics must be equal bit for bit, rewards to
rounding (the environment sums the reward potential in another order than the kernel),
over the engine features that change trajectories: both latency models, overhead terms,
swap preemption, several iterations per decision, every decision asked, the oracle
feature, each QoE variant, truncation, the token log of rgb_array rendering, and solver
policies deciding on candidates.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import yaml
from surrogate_support import TINY_LINEAR_PROFILE, contended

from andes_gym.agents.adapter import PolicyAgent
from andes_gym.agents.registry import make_policy
from andes_gym.config_files import packaged_config_dir
from andes_gym.core.features import SLOT_FEATURES, FeatureSpec
from andes_gym.envs.surrogate_env import SurrogateEnv
from andes_gym.surrogate import engine_profile_from_dict, load_engine_profile
from andes_gym.surrogate.compiled import CompiledSurrogateBackend

# Small K on purpose in some cases (the environment warns that waiting requests can hide).
pytestmark = pytest.mark.filterwarnings("ignore:k_slots=.* is below")


def profile_with(name: str, **sections) -> dict:
    data = yaml.safe_load((packaged_config_dir("engines") / f"{name}.yaml").read_text())
    for section, fields in sections.items():
        data.setdefault(section, {}).update(fields)
    return data


def tiny(**sections) -> dict:
    data = copy.deepcopy(TINY_LINEAR_PROFILE)
    data["limits"].update(max_model_len=256)  # the whole KV cache: 64 blocks of 4 tokens
    data["kv"].update(num_blocks=64)
    for section, fields in sections.items():
        data.setdefault(section, {}).update(fields)
    return data


SMALL_A100 = profile_with(
    "llama7b_a100", kv={"num_blocks": 60}, limits={"max_num_seqs": 24, "max_model_len": 960}
)

# (id, env kwargs); each runs with random slot scores and with fixed ones.
SCENARIOS = [
    ("cpu_tiny", {"engine": "cpu_tiny", "workload": contended()}),
    ("fitted_overheads", {"engine": "cpu_tiny_fitted", "workload": contended()}),
    (
        "per_candidate_overhead",
        {
            "engine": profile_with(
                "cpu_tiny", overhead={"per_candidate_s": 2e-5, "per_prefill_seq_s": 1e-4}
            ),
            "workload": contended(),
        },
    ),
    ("roofline", {"engine": SMALL_A100, "workload": contended(rate_rps=2000.0)}),
    (
        "swap",
        {
            "engine": tiny(
                kv={"num_blocks": 128, "kv_bytes_per_token": 1000},
                preemption={"mode": "swap", "swap_bw_gb_s": 0.001},
            ),
            "workload": contended(n=60, max_output=100),
        },
    ),
    (
        "iters_per_decision",
        {"engine": "cpu_tiny", "workload": contended(), "iters_per_decision": 3},
    ),
    ("every_decision", {"engine": "cpu_tiny", "workload": contended(), "skip_uncontested": False}),
    ("oracle", {"engine": "cpu_tiny", "workload": contended(), "oracle": True}),
    ("delay_fixed", {"engine": "cpu_tiny", "workload": contended(), "qoe_variant": "delay_fixed"}),
    ("area", {"engine": "cpu_tiny", "workload": contended(), "qoe_variant": "area"}),
    ("truncated", {"engine": "cpu_tiny", "workload": contended(), "time_limit_s": 0.4}),
    ("k_below_batch", {"engine": "cpu_tiny", "workload": contended(), "k_slots": 8}),
    ("rgb_array", {"engine": "cpu_tiny", "workload": contended(), "render_mode": "rgb_array"}),
]


def rollout(env, seed: int, actions: str, max_steps: int = 5000):
    rng = np.random.default_rng(seed)
    k = env.action_space.shape[0]
    obs, info = env.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    for _ in range(max_steps):
        if actions == "random":
            action = rng.uniform(-1, 1, k).astype(np.float32)
        else:
            action = np.linspace(1.0, -1.0, k).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
        if terminated or truncated:
            return np.array(observations), np.array(rewards), infos, (terminated, truncated)
    raise AssertionError("episode did not end")


def step_both_to_the_end(a, b, rng) -> None:
    """Steps two environments with the same random actions until the episode ends,
    asserting identical transitions."""
    k = a.action_space.shape[0]
    while True:
        action = rng.uniform(-1, 1, k).astype(np.float32)
        ta, tb = a.step(action), b.step(action)
        np.testing.assert_array_equal(ta[0], tb[0])
        assert ta[1:4] == tb[1:4]
        if ta[2] or ta[3]:
            return


def assert_same_episode(a, b) -> None:
    obs_a, rew_a, infos_a, end_a = a
    obs_b, rew_b, infos_b, end_b = b
    assert len(rew_a) == len(rew_b), "different numbers of decisions"
    assert end_a == end_b
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_allclose(rew_a, rew_b, rtol=0, atol=1e-12)
    for ia, ib in zip(infos_a, infos_b, strict=True):
        assert ia["num_candidates"] == ib["num_candidates"]
        assert ia["num_running"] == ib["num_running"]
        assert ia["now_s"] == ib["now_s"]
    last_a, last_b = infos_a[-1], infos_b[-1]
    assert last_a["qoe_summary"] == last_b["qoe_summary"]
    for name, value in last_a["request_metrics"].items():
        np.testing.assert_array_equal(value, last_b["request_metrics"][name], err_msg=name)


def assert_same_engine_state(a, b) -> None:
    """The two engines' QoE records (and token logs, where kept) are the same bits."""
    ta, tb = a.backend.tracker, b.backend.tracker
    np.testing.assert_array_equal(ta.floats, tb.floats, strict=True)
    np.testing.assert_array_equal(ta.num_tokens, tb.num_tokens, strict=True)
    if a.render_mode == "rgb_array":
        for i in range(len(ta)):
            np.testing.assert_array_equal(ta.token_times(i), tb.token_times(i), strict=True)


@pytest.mark.parametrize("actions", ["random", "fixed"])
@pytest.mark.parametrize("kwargs", [s[1] for s in SCENARIOS], ids=[s[0] for s in SCENARIOS])
def test_compiled_plays_the_same_episodes_as_the_specification(kwargs, actions):
    episodes, envs = [], []
    for simulator in ("compiled", "python"):
        env = SurrogateEnv(simulator=simulator, **kwargs)
        assert env.simulator == simulator
        episodes.append(rollout(env, seed=5, actions=actions))
        envs.append(env)
    assert_same_episode(*episodes)
    assert_same_engine_state(*envs)
    # The scenario is contested (or there would be nothing to compare).
    assert len(episodes[0][1]) > 5


def test_scenarios_exercise_preemption_and_truncation():
    preempted = {}
    for name, kwargs in SCENARIOS:
        env = SurrogateEnv(simulator="compiled", **kwargs)
        *_, infos, end = rollout(env, seed=5, actions="random")
        preempted[name] = int(np.sum(infos[-1]["request_metrics"]["num_preemptions"]))
        if name == "truncated":
            assert end == (False, True)
    assert preempted["swap"] > 0 and preempted["cpu_tiny"] > 0 and preempted["roofline"] > 0


@pytest.mark.parametrize("policy", ["andes", "lqf", "fcfs"])
def test_policies_deciding_on_candidates_agree(policy):
    """Solver and scoring baselines read `decision_context` and step with decisions."""
    results = []
    for simulator in ("compiled", "python"):
        env = SurrogateEnv(engine="cpu_tiny_fitted", workload=contended(), simulator=simulator)
        agent = PolicyAgent(make_policy(policy))
        obs, _ = env.reset(seed=2)
        agent.reset(2)
        rewards = []
        while True:
            obs, reward, terminated, truncated, info = agent.step(env, obs)
            rewards.append(reward)
            if terminated or truncated:
                break
        results.append((np.array(rewards), info))
    (rew_c, info_c), (rew_p, info_p) = results
    assert len(rew_c) == len(rew_p) > 5
    np.testing.assert_allclose(rew_c, rew_p, atol=1e-12)
    assert info_c["qoe_summary"] == info_p["qoe_summary"]


def test_reading_candidates_midway_changes_nothing():
    """Building the candidates of a decision point (an adapter looking) is side-effect free."""
    kwargs = {"engine": "cpu_tiny", "workload": contended()}
    plain, looked = SurrogateEnv(**kwargs), SurrogateEnv(**kwargs)
    assert plain.simulator == looked.simulator == "compiled"
    rng = np.random.default_rng(0)
    plain.reset(seed=1)
    looked.reset(seed=1)
    k = plain.action_space.shape[0]
    for _ in range(20):  # look at the candidates of the first 20 decisions
        cands, _, slot_idx = looked.decision_context
        assert len(cands) == looked._step_info()["num_candidates"]
        assert len(slot_idx) == min(len(cands), k)
        action = rng.uniform(-1, 1, k).astype(np.float32)
        a, b = plain.step(action), looked.step(action)
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:4] == b[1:4]
    step_both_to_the_end(plain, looked, rng)


def test_pickled_compiled_env_continues_identically():
    env = SurrogateEnv(engine="cpu_tiny", workload=contended())
    rng = np.random.default_rng(0)
    k = env.action_space.shape[0]
    env.reset(seed=3)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, k).astype(np.float32))
    clone = pickle.loads(pickle.dumps(env))
    assert clone.backend._gen.base is clone.backend.tracker._num_tokens
    step_both_to_the_end(env, clone, rng)
    assert (
        env.backend.tracker.state.sum_delay_s.sum() == clone.backend.tracker.state.sum_delay_s.sum()
    )


def test_backend_matches_the_specification_decision_by_decision():
    """`CompiledSurrogateBackend` through the EngineBackend contract, as a hook would use it."""
    from andes_gym.core.selection import select
    from andes_gym.surrogate import SurrogateBackend
    from andes_gym.workloads import make_workload, workload_config_from_dict

    wl = make_workload(workload_config_from_dict(contended()), 4)
    profile = load_engine_profile("cpu_tiny")
    backends = [CompiledSurrogateBackend(profile), SurrogateBackend(profile)]
    for b in backends:
        b.start(wl, 4)
    steps = 0
    while True:
        ctxs = [b.next_decision() for b in backends]
        if ctxs[0] is None or ctxs[1] is None:
            assert ctxs[0] is None and ctxs[1] is None
            break
        (cc, capc), (cp, capp) = ctxs
        np.testing.assert_array_equal(cc.request_id, cp.request_id)
        np.testing.assert_array_equal(cc.kv_blocks_needed, cp.kv_blocks_needed)
        np.testing.assert_allclose(cc.q_serve, cp.q_serve, atol=1e-12)
        np.testing.assert_array_equal(cc.q_serve, cp.q_serve)
        np.testing.assert_array_equal(capc.iter_latency_s, capp.iter_latency_s)
        decision = select(-cc.qoe_now, cc, capc)  # least QoE first: preempts often
        for b in backends:
            b.apply(decision)
        np.testing.assert_array_equal(backends[0].status, backends[1].status)
        np.testing.assert_array_equal(backends[0].generated_tokens, backends[1].generated_tokens)
        assert backends[0].kv_blocks_used == backends[1].kv_blocks_used
        steps += 1
    assert steps > 5
    assert backends[0].num_iterations == backends[1].num_iterations
    assert backends[0].num_preemptions.sum() == backends[1].num_preemptions.sum() > 0


def test_compiled_engine_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="simulator must be one of"):
        SurrogateEnv(simulator="numba")
    assert SurrogateEnv(render_mode="rgb_array").simulator == "compiled"  # it logs tokens too
    with pytest.raises(RuntimeError, match="pending decision point"):
        CompiledSurrogateBackend(engine_profile_from_dict(tiny())).apply(None)
    renamed = FeatureSpec(slot_features=("is_running_renamed", *SLOT_FEATURES[1:]))
    with pytest.raises(ValueError, match="feature set"):
        CompiledSurrogateBackend(engine_profile_from_dict(tiny()), feature_spec=renamed)
    with pytest.raises(ValueError, match="feature set"):
        CompiledSurrogateBackend(
            load_engine_profile("cpu_tiny"), feature_spec=FeatureSpec(version=2)
        )


@pytest.mark.vllm
def test_live_engine_starts_after_the_compiled_surrogate_ran(request, vllm_available):
    """vLLM's start-up scan of every loaded module trips over llvmlite (loaded by numba)
    unless the engine bridge shields it: a process that trains on the compiled surrogate
    and then serves (or compares on the live engine) must be able to start vLLM."""
    import sys

    env = SurrogateEnv(engine="cpu_tiny", workload=contended(), simulator="compiled")
    env.reset(seed=0)
    assert "llvmlite.binding.ffi" in sys.modules
    handle = request.getfixturevalue("vllm_engine")  # created now unless an earlier test did
    assert not handle.closed


def random_engine(rng) -> dict:
    """A small engine with random limits: chunked prefill, tight budgets, odd block sizes."""
    block_size = int(rng.choice([1, 3, 4, 16]))
    max_num_seqs = int(rng.integers(1, 12))
    return tiny(
        kv={
            "num_blocks": int(rng.integers(600 // block_size, 1200 // block_size)) + 2,
            "block_size": block_size,
        },
        limits={
            "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": int(rng.integers(max_num_seqs, 4 * max_num_seqs + 64)),
            "max_model_len": 600,
        },
        latency={
            "base_s": 0.002,
            "per_prefill_token_s": 5e-5,
            "per_decode_seq_s": 2e-4,
            "per_context_token_s": 1e-6,
        },
        overhead={
            "per_request_s": float(rng.choice([0.0, 1e-4])),
            "decision_s": float(rng.choice([0.0, 5e-4])),
        },
    )


@pytest.mark.parametrize("case", range(12))
def test_random_engines_play_the_same_episodes(case):
    rng = np.random.default_rng(100 + case)
    kwargs = {
        "engine": random_engine(rng),
        "workload": contended(
            n=int(rng.integers(20, 60)), rate_rps=float(rng.uniform(50, 800)), max_output=100
        ),
        "k_slots": int(rng.integers(1, 20)),
        "iters_per_decision": int(rng.integers(1, 4)),
        "skip_uncontested": bool(rng.integers(0, 2)),
        # Random scores can thrash forever (preempt every prefill before it completes).
        "time_limit_s": 20.0,
    }
    envs = [SurrogateEnv(simulator=s, **kwargs) for s in ("compiled", "python")]
    assert_same_episode(
        *(rollout(env, seed=case, actions="random", max_steps=50_000) for env in envs)
    )


def test_kernels_refuse_to_load_when_a_mirrored_constant_drifts(monkeypatch):
    from andes_gym import qoe
    from andes_gym.qoe import definition
    from andes_gym.surrogate.compiled import backend, kernels

    backend._check_mirrors()  # in sync now
    monkeypatch.setattr(definition, "_COUNT_SLACK", 1e-6)
    with pytest.raises(ImportError, match="QoE constants"):
        backend._check_mirrors()
    monkeypatch.undo()
    monkeypatch.setattr(qoe, "FLOAT_ROWS", ("ttft_s", "arrival_s", *qoe.FLOAT_ROWS[2:]))
    with pytest.raises(ImportError, match="tracker rows"):
        backend._check_mirrors()
    # The cost formulas the kernels compile from andes_gym/surrogate/costs.py.
    kernels.check_costs_digest()  # in sync now
    monkeypatch.setattr(kernels, "COSTS_DIGEST", "0" * 16)
    with pytest.raises(ImportError, match=f"COSTS_DIGEST = '{kernels.costs_digest()}'"):
        kernels.check_costs_digest()


def test_auto_falls_back_to_python_with_a_warning_without_numba(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "andes_gym.surrogate.compiled", None)  # import fails
    with pytest.warns(UserWarning, match="compiled surrogate is unavailable"):
        env = SurrogateEnv(engine="cpu_tiny", workload=contended())
    assert env.simulator == "python"
    with pytest.raises(ImportError, match="needs numba"):
        SurrogateEnv(engine="cpu_tiny", workload=contended(), simulator="compiled")
