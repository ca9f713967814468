"""RLlib PPO trainer (`python -m andes_gym.train_rllib`): module, config mapping, a short run.

Marked `ray`. Ray (with RLlib) is the `ray` extra: when it cannot be imported these tests
fail with that message; they are skipped only with `ANDES_GYM_SKIP_RAY=1`. The training
tests use the session's local Ray (2 CPUs, `ray_support.ray_local`); the surrogate run uses
one env runner and a couple hundred steps (about 30 s on 2 cores, most of it Ray starting
its actors); the live-engine run (also marked `vllm`) about 30 s more.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from ray_support import SKIP_RAY_VAR, ray_local  # noqa: F401 (the session fixture)

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def rllib():
    """Fails (or skips with ANDES_GYM_SKIP_RAY=1) when Ray's RLlib cannot be imported."""
    try:
        import ray.rllib  # noqa: F401
    except ImportError as exc:
        if os.environ.get(SKIP_RAY_VAR) == "1":
            pytest.skip(f"Ray/RLlib not importable and {SKIP_RAY_VAR}=1: {exc}")
        pytest.fail(
            f"Ray/RLlib is not importable ({exc}); install the `ray` extra "
            f"(pip install 'andes_gym[ray]'). Set {SKIP_RAY_VAR}=1 to skip these tests.",
            pytrace=False,
        )


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory) -> Path:
    """A seconds-long stable-baselines3 run of the smoke config (no final evaluation)."""
    from andes_gym.train import main as train_main

    root = tmp_path_factory.mktemp("sb3")
    args = ["--config", "smoke", "--set", f"run_root={root}", "--set", "eval.final=false"]
    assert train_main(args + ["--set", "total_timesteps=64"]) == 0
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return run


def _smoke_spec():
    from andes_gym.core.features import FeatureSpec

    return FeatureSpec(k_slots=16)


def _policy_config(**kwargs):
    from andes_gym.training.config import PolicyConfig

    return PolicyConfig(slot_hidden=[16], context_hidden=16, value_hidden=[16], **kwargs)


def test_module_is_the_sb3_slot_scorer(rllib):
    """Same network as `SlotScorerPolicy`: identical parameter names and shapes, and equal
    scores and values once the SB3 weights are loaded."""
    import torch
    from ray.rllib.core.columns import Columns

    from andes_gym.scale.rllib_module import SlotScorerRLModule, model_config_for
    from andes_gym.training.factory import spaces_of
    from andes_gym.training.policy_net import SlotScorerPolicy

    spec = _smoke_spec()
    obs_space, act_space = spaces_of(spec)
    pcfg = _policy_config()
    module = SlotScorerRLModule(
        observation_space=obs_space,
        action_space=act_space,
        model_config=model_config_for(pcfg, spec),
    )
    sb3 = SlotScorerPolicy(
        obs_space,
        act_space,
        lambda _: 0.0,
        k_slots=spec.k_slots,
        num_slot_features=spec.num_slot_features,
        num_global_features=len(spec.global_features),
        slot_hidden=pcfg.slot_hidden,
        context_hidden=pcfg.context_hidden,
        value_hidden=pcfg.value_hidden,
        log_std_init=pcfg.log_std_init,
    )
    sb3_net = sb3.mlp_extractor.state_dict()
    net = module.net.state_dict()
    assert {k: v.shape for k, v in net.items()} == {k: v.shape for k, v in sb3_net.items()}
    module.net.load_state_dict(sb3_net)
    module.value_head.load_state_dict(sb3.value_net.state_dict())
    assert float(module.log_std.detach()) == pytest.approx(pcfg.log_std_init)

    obs = torch.as_tensor(np.stack([obs_space.sample() for _ in range(4)]))
    obs[:, spec.k_slots * spec.num_slot_features : -len(spec.global_features)] = (
        torch.rand(4, spec.k_slots) > 0.5
    ).float()
    with torch.no_grad():
        out = module.forward_train({Columns.OBS: obs})
        mean, log_std = out[Columns.ACTION_DIST_INPUTS].chunk(2, dim=-1)
        assert torch.allclose(mean, sb3.slot_scores(obs), atol=1e-6)
        assert torch.allclose(log_std, torch.full_like(log_std, pcfg.log_std_init))
        values = module.compute_values({Columns.OBS: obs}, out[Columns.EMBEDDINGS])
        _, sb3_values, _ = sb3.forward(obs, deterministic=True)
        assert torch.allclose(values, sb3_values.squeeze(-1), atol=1e-5)


def test_module_rejects_mismatched_spaces(rllib):
    from andes_gym.scale.rllib_module import SlotScorerRLModule, model_config_for
    from andes_gym.training.factory import spaces_of

    spec = _smoke_spec()
    obs_space, _ = spaces_of(spec)
    _, wrong_act = spaces_of(type(spec)(k_slots=8))
    with pytest.raises(ValueError, match="action space"):
        SlotScorerRLModule(
            observation_space=obs_space,
            action_space=wrong_act,
            model_config=model_config_for(_policy_config(), spec),
        )


def test_init_from_an_sb3_run_copies_its_slot_scorer(rllib, sb3_run):
    import torch

    from andes_gym.scale.rllib_checkpoint import sb3_module_state
    from andes_gym.scale.rllib_module import SlotScorerRLModule, model_config_for
    from andes_gym.training.config import ConfigError
    from andes_gym.training.factory import load_predictor, spaces_of
    from andes_gym.training.run_dir import read_run

    cfg, spec = read_run(sb3_run)
    state = sb3_module_state(sb3_run, cfg, spec)
    obs_space, act_space = spaces_of(spec)
    module = SlotScorerRLModule(
        observation_space=obs_space,
        action_space=act_space,
        model_config=model_config_for(cfg.policy, spec),
    )
    module.set_state(state)
    sb3 = load_predictor(sb3_run).policy
    obs = torch.as_tensor(np.stack([obs_space.sample() for _ in range(3)]))
    with torch.no_grad():
        assert torch.allclose(module.slot_scores(obs), sb3.slot_scores(obs), atol=1e-6)
    assert float(module.log_std.detach()) == pytest.approx(float(sb3.log_std.detach()))

    other = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, slot_hidden=[8]))
    with pytest.raises(ConfigError, match="policy.slot_hidden"):
        sb3_module_state(sb3_run, other, spec)
    with pytest.raises(ConfigError, match="feature spec"):
        sb3_module_state(sb3_run, cfg, type(spec)(k_slots=8))


def test_config_mapping_follows_sb3_defaults():
    from andes_gym.scale.rllib_trainer import check_config, ppo_training_kwargs
    from andes_gym.training.config import load_config

    cfg = load_config("quickstart")
    kwargs = ppo_training_kwargs(cfg, num_envs=2)
    assert kwargs["lr"] == pytest.approx(2e-5)
    assert kwargs["train_batch_size_per_learner"] == 512 * 2
    assert (kwargs["minibatch_size"], kwargs["num_epochs"]) == (256, 4)
    assert (kwargs["gamma"], kwargs["lambda_"], kwargs["clip_param"]) == (0.999, 0.95, 0.1)
    assert kwargs["use_kl_loss"] is False
    # Fields left at None take stable-baselines3's defaults.
    assert (kwargs["vf_loss_coeff"], kwargs["grad_clip"]) == (0.5, 0.5)
    notes = check_config(cfg)
    assert any("target_kl" in n for n in notes) and any("bc.enabled" in n for n in notes)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("algo.name=A2C", "PPO only"),
        ("policy.kind=mlp", "slot scorer only"),
        ("env.norm_reward=true", "norm_reward"),
        ("eval.baselines=[nope]", "not a registered policy"),
    ],
)
def test_unsupported_configs_are_rejected(override, match):
    from andes_gym.scale.rllib_trainer import check_config
    from andes_gym.training.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=match):
        check_config(load_config("smoke", [override]))


def test_cli_reports_config_errors(rllib, capsys):
    from andes_gym.train_rllib import main

    assert main(["--config", "smoke", "--set", "algo.name=A2C"]) == 2
    assert "PPO only" in capsys.readouterr().err


CHECKPOINT_FILES = {"model.safetensors", "optimizer.safetensors", "andes_gym_meta.json"}


@contextmanager
def _no_unpickling(monkeypatch):
    """Makes every unpickling entry point (pickle, torch.load, RLlib's restore) raise."""
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    with monkeypatch.context() as patch:
        for owner, name in (
            (pickle, "load"),
            (pickle, "loads"),
            (torch, "load"),
            (Algorithm, "from_checkpoint"),
            (Algorithm, "restore_from_path"),
        ):
            patch.setattr(owner, name, refuse)
        yield


@contextmanager
def _no_rllib_restore(monkeypatch):
    """Makes RLlib's own (unpickling) restore and torch.load raise; Ray's messaging still
    needs pickle, so it stays."""
    import torch
    from ray.rllib.algorithms.algorithm import Algorithm

    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was restored through RLlib or torch.load")

    with monkeypatch.context() as patch:
        for owner, name in (
            (torch, "load"),
            (Algorithm, "from_checkpoint"),
            (Algorithm, "restore_from_path"),
        ):
            patch.setattr(owner, name, refuse)
        yield


@pytest.mark.usefixtures("rllib", "ray_local")
def test_short_run_exports_a_policy_that_loads_and_decides(tmp_path, sb3_run, monkeypatch):
    """A couple hundred env steps on one env runner, started from an SB3 run's weights;
    the export plays like the module."""
    import torch

    from andes_gym.agents.adapter import PolicyAgent
    from andes_gym.agents.learned import load_policy
    from andes_gym.evaluation import run_episode
    from andes_gym.scale import rllib_checkpoint as ckpt
    from andes_gym.train_rllib import main
    from andes_gym.training.factory import make_env
    from andes_gym.training.run_dir import read_run

    args = ["--config", "smoke", "--num-env-runners", "1", "--init-from", str(sb3_run)]
    for item in (
        f"run_root={tmp_path}",
        "total_timesteps=200",
        "algo.n_steps=100",
        "algo.batch_size=50",
        "eval.freq_timesteps=100",
        "eval.val_seeds=[2000001]",
    ):
        args += ["--set", item]
    assert main(args) == 0
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert run.name.startswith("andes_gym-Surrogate-v0__smoke-rllib__0__")
    for name in ("config.yaml", "feature_spec.json", "command.txt", "rllib.json", "eval.csv"):
        assert (run / name).is_file(), name
    assert "andes_gym.train_rllib" in (run / "command.txt").read_text()
    settings = json.loads((run / "rllib.json").read_text())
    assert settings["num_env_runners"] == 1 and settings["init_from"] == str(sb3_run)
    steps = sorted((run / "checkpoints").glob("step_*"))
    assert steps
    # Checkpoints hold safetensors and JSON only: no pickle files anywhere.
    for path in [*steps, run / "checkpoints" / ckpt.BEST_NAME]:
        assert {f.name for f in path.iterdir()} == CHECKPOINT_FILES, path
    assert not [
        f for f in (run / "checkpoints").rglob("*") if f.suffix in (".pkl", ".pickle", ".pt")
    ]
    meta = json.loads((steps[-1] / ckpt.META_FILE).read_text())
    assert meta["num_timesteps"] >= 200 and meta["optimizer"]  # the optimizer state is kept
    chosen = ckpt.policy_checkpoint(run)
    assert chosen.name == "best"
    assert "learned" in (run / "eval.txt").read_text()

    policy = load_policy(run / "policy.onnx")
    assert policy.metadata["andes_gym.algo"] == "RLlib-PPO"
    cfg, spec = read_run(run)
    assert policy.spec == spec

    # The ONNX graph computes the checkpoint's clipped slot scores; loading and exporting
    # unpickle nothing.
    with _no_unpickling(monkeypatch):
        module = ckpt.load_module(chosen, cfg, spec)
        ckpt.read_checkpoint(steps[-1])
        again = ckpt.export_checkpoint(run, tmp_path / "again.onnx", chosen)
    assert load_policy(again).metadata == policy.metadata
    env = make_env(cfg.env.id, cfg.env.kwargs)
    try:
        obs, _ = env.reset(seed=1_000_001)
        with torch.no_grad():
            expected = module.slot_scores(torch.as_tensor(obs[None])).clamp(-1, 1)[0].numpy()
        np.testing.assert_allclose(policy.slot_scores(obs), expected, atol=1e-5)
        assert env.unwrapped.decision_context is not None
        candidates, capacity, _ = env.unwrapped.decision_context
        decision = policy.decide(candidates, capacity)
        assert len(decision.order) <= len(candidates)
        result = run_episode(env, PolicyAgent(policy), seed=1_000_002)
    finally:
        env.close()
    assert 0.0 <= result.summary["mean_qoe"] <= 1.0

    # --resume rebuilds PPO from config.yaml and continues from the newest intact checkpoint
    # (counters too) up to a larger budget; a broken newer one is skipped with a warning.
    broken = run / "checkpoints" / "step_9999999999"
    shutil.copytree(steps[-1], broken)
    (broken / "model.safetensors").write_bytes(b"truncated")
    more = ["--resume", str(run), "--set", "total_timesteps=300", "--set", "eval.final=false"]
    with _no_rllib_restore(monkeypatch), pytest.warns(ckpt.CheckpointWarning, match=broken.name):
        assert main(more) == 0
    shutil.rmtree(broken)
    meta = json.loads((ckpt.latest_checkpoint(run) / ckpt.META_FILE).read_text())
    assert meta["num_timesteps"] >= 300 and meta["iterations"] == 3
    before = json.loads((steps[-1] / ckpt.META_FILE).read_text())
    assert meta["num_episodes"] >= before["num_episodes"] > 0  # continued, not restarted
    assert len((run / "command.txt").read_text().splitlines()) == 2
    with (run / "progress.csv").open() as fh:
        assert [row["iteration"] for row in csv.DictReader(fh)] == ["1", "2", "3"]


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.usefixtures("rllib", "ray_local", "vllm_available")
def test_live_engine_rollouts_on_one_env_runner(test_engine_config, tmp_path):
    """One env runner builds its own tiny vLLM engine (in the runner process) and samples
    `andes_gym/VLLM-v0`; this process builds none (the session's engine may be alive)."""
    from andes_gym.agents.learned import load_policy
    from andes_gym.scale.rllib_trainer import train
    from andes_gym.training.config import config_from_dict

    cfg = config_from_dict(
        {
            "exp_name": "live",
            "total_timesteps": 64,
            "run_root": str(tmp_path),
            "env": {
                "id": "andes_gym/VLLM-v0",
                "kwargs": {
                    "workload": {
                        "name": "live_smoke",
                        "num_requests": 24,
                        "arrivals": {
                            "kind": "bursty",
                            "rate_rps": 300.0,
                            "intensity": 2.0,
                            "duty": 0.35,
                            "period_s": 1.0,
                        },
                        "lengths": {
                            "kind": "sharegpt",
                            "scale": 0.1,
                            "max_prompt_tokens": 120,
                            "max_output_tokens": 48,
                        },
                        "targets": {"kind": "reading", "time_scale": 0.02},
                    },
                    "engine": dict(test_engine_config),
                    "k_slots": 16,
                },
            },
            "algo": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
            "policy": {"slot_hidden": [16], "context_hidden": 16, "value_hidden": [16]},
            "eval": {"final": False},
            "checkpoint": {"freq_timesteps": 0},
        }
    )
    run = train(cfg, num_env_runners=1, argv=[])
    assert run.num_timesteps >= 64 and run.onnx_path is not None
    policy = load_policy(run.onnx_path)
    assert policy.metadata["andes_gym.env_id"] == "andes_gym/VLLM-v0"
    assert int(policy.metadata["andes_gym.num_timesteps"]) == run.num_timesteps
