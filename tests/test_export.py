"""Export to ONNX and `load_policy`: round trip, identical actions, metadata checks, bad files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from andes_gym.agents.adapter import ModelAgent, PolicyAgent  # noqa: E402
from andes_gym.agents.learned import LearnedPolicy, PolicyLoadError, load_policy  # noqa: E402
from andes_gym.agents.registry import make_policy  # noqa: E402
from andes_gym.core.features import FeatureSpec, scores_from_slots  # noqa: E402
from andes_gym.core.selection import select  # noqa: E402
from andes_gym.evaluation import run_episode  # noqa: E402
from andes_gym.export import main as export_main  # noqa: E402
from andes_gym.train import main as train_main  # noqa: E402
from andes_gym.training.config import load_config  # noqa: E402
from andes_gym.training.export_onnx import export_run  # noqa: E402
from andes_gym.training.factory import load_predictor, make_env  # noqa: E402


def _trained_run(root: Path, *overrides: str) -> Path:
    args = [
        "--config",
        "smoke",
        "--set",
        f"run_root={root}",
        "--set",
        "eval.final=false",
        "--set",
        "total_timesteps=128",
    ]
    for item in overrides:
        args += ["--set", item]
    assert train_main(args) == 0
    return sorted(p for p in root.iterdir() if p.is_dir())[-1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    # A larger initial noise makes the untrained scores differ between slots.
    return _trained_run(tmp_path_factory.mktemp("runs"), "policy.log_std_init=0.0")


@pytest.fixture(scope="module")
def normalized_run_dir(tmp_path_factory) -> Path:
    return _trained_run(
        tmp_path_factory.mktemp("runs_norm"),
        "env.norm_obs=true",
        "policy.kind=mlp",
        "policy.net_arch=[32]",
        "policy.log_std_init=0.0",
    )


def _decision_points(run: Path, seeds=(1000001, 1000002), limit=60):
    """(obs, candidates, capacity, slot_idx) along FCFS episodes of the run's env."""
    cfg = load_config(run / "config.yaml")
    env = make_env(cfg.env.id, cfg.env.kwargs)
    points = []
    fcfs = PolicyAgent(make_policy("fcfs"))
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        while env.unwrapped.decision_context is not None and len(points) < limit:
            points.append((obs.copy(), *env.unwrapped.decision_context))
            obs, *_ = env.step(fcfs.act(obs, env))
    env.close()
    assert points, "the smoke workload should have contested decision points"
    return points


@pytest.mark.parametrize("which", ["run_dir", "normalized_run_dir"])
def test_exported_policy_matches_the_trained_model(tmp_path, request, which):
    run = request.getfixturevalue(which)
    path = export_run(run, tmp_path / "policy.onnx")
    learned = load_policy(path)
    predictor = load_predictor(run)
    spreads = []
    for obs, candidates, capacity, slot_idx in _decision_points(run):
        model_action, _ = predictor.predict(obs, deterministic=True)
        onnx_action = learned.slot_scores(obs)
        np.testing.assert_allclose(onnx_action, model_action, rtol=1e-5, atol=1e-5)
        spreads.append(np.ptp(onnx_action[: len(slot_idx)]))
        model_scores = scores_from_slots(
            model_action, slot_idx, len(candidates), candidates.arrival_s
        )
        expected = select(model_scores, candidates, capacity)
        got = learned.decide(candidates, capacity)
        np.testing.assert_array_equal(got.selected, expected.selected)
        np.testing.assert_array_equal(got.order, expected.order)
    assert max(spreads) > 1e-4  # the scores really rank the slots


def test_same_episode_through_model_agent_and_policy_agent(run_dir, tmp_path):
    path = export_run(run_dir, tmp_path / "policy.onnx")
    cfg = load_config(run_dir / "config.yaml")
    env = make_env(cfg.env.id, cfg.env.kwargs)
    by_model = run_episode(env, ModelAgent(load_predictor(run_dir)), seed=1000003)
    by_onnx = run_episode(env, PolicyAgent(load_policy(path)), seed=1000003)
    env.close()
    np.testing.assert_allclose(by_model.requests.qoe, by_onnx.requests.qoe)
    assert by_model.summary["num_decisions"] == by_onnx.summary["num_decisions"]


def test_metadata(run_dir, tmp_path):
    path = export_run(run_dir, tmp_path / "policy.onnx")
    meta = load_policy(path).metadata
    cfg = load_config(run_dir / "config.yaml")
    spec = FeatureSpec.from_dict(json.loads(meta["andes_gym.feature_spec"]))
    assert spec == FeatureSpec(k_slots=16)
    assert meta["andes_gym.k_slots"] == "16"
    assert meta["andes_gym.env_id"] == "andes_gym/Surrogate-v0"
    assert meta["andes_gym.env_version"] == "v0"
    assert meta["andes_gym.config_hash"] == cfg.hash()
    assert json.loads(meta["andes_gym.obs_normalization"]) is None
    assert int(meta["andes_gym.num_timesteps"]) >= 128


def test_normalization_is_stored(normalized_run_dir, tmp_path):
    path = export_run(normalized_run_dir, tmp_path / "policy.onnx")
    norm = json.loads(load_policy(path).metadata["andes_gym.obs_normalization"])
    assert norm["baked_in"] is True
    assert len(norm["mean"]) == FeatureSpec(k_slots=16).obs_dim


def test_make_policy_loads_onnx_and_the_cli_writes_it(run_dir, tmp_path):
    from andes_gym.agents.registry import make_policy

    out = tmp_path / "cli" / "p.onnx"
    assert export_main([str(run_dir), "--out", str(out)]) == 0
    assert isinstance(make_policy(str(out)), LearnedPolicy)
    assert export_main([str(tmp_path / "missing_run"), "--out", str(out)]) == 2


def test_load_policy_imports_no_torch(run_dir, tmp_path):
    path = export_run(run_dir, tmp_path / "policy.onnx")
    code = (
        "import sys; from andes_gym.agents.learned import load_policy; "
        f"p = load_policy({str(path)!r}); "
        "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def _rewrite_metadata(src: Path, dst: Path, key: str, value: str | None) -> Path:
    model = onnx.load(str(src))
    for prop in list(model.metadata_props):
        if prop.key == key:
            model.metadata_props.remove(prop)
    if value is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(dst))
    return dst


def test_wrong_feature_version_is_rejected_naming_the_field(run_dir, tmp_path):
    path = export_run(run_dir, tmp_path / "policy.onnx")
    spec = json.loads(load_policy(path).metadata["andes_gym.feature_spec"])
    spec["version"] = spec["version"] + 1
    bad = _rewrite_metadata(path, tmp_path / "v2.onnx", "andes_gym.feature_spec", json.dumps(spec))
    with pytest.raises(PolicyLoadError, match=r"v2\.onnx.*'version'"):
        load_policy(bad)
    renamed = dict(
        spec, version=spec["version"] - 1, slot_features=["x"] + spec["slot_features"][1:]
    )
    bad = _rewrite_metadata(
        path, tmp_path / "feat.onnx", "andes_gym.feature_spec", json.dumps(renamed)
    )
    with pytest.raises(PolicyLoadError, match="slot_features"):
        load_policy(bad)


def test_k_mismatch_with_the_callers_spec(run_dir, tmp_path):
    path = export_run(run_dir, tmp_path / "policy.onnx")
    with pytest.raises(PolicyLoadError, match="k_slots"):
        load_policy(path, feature_spec=FeatureSpec(k_slots=64))


def test_corrupt_or_foreign_files_are_rejected_naming_the_file(run_dir, tmp_path):
    path = export_run(run_dir, tmp_path / "policy.onnx")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(PolicyLoadError, match="truncated.onnx"):
        load_policy(truncated)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not an onnx model at all" * 10)
    with pytest.raises(PolicyLoadError, match="garbage.onnx"):
        load_policy(garbage)
    foreign = _rewrite_metadata(path, tmp_path / "foreign.onnx", "andes_gym.format", None)
    with pytest.raises(PolicyLoadError, match="not an andes_gym policy"):
        load_policy(foreign)
    with pytest.raises(PolicyLoadError, match="no such file"):
        load_policy(tmp_path / "missing.onnx")
