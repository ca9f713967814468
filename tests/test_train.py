"""`python -m andes_gym.train`: run files, resume, interruption, config errors (tiny budgets)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

from andes_gym.train import main  # noqa: E402
from andes_gym.training import checkpoint as ckpt  # noqa: E402
from andes_gym.training.config import ConfigError, load_config  # noqa: E402
from andes_gym.training.run import EXIT_INTERRUPTED  # noqa: E402


def _train(
    tmp_path: Path, *overrides: str, callbacks=None, no_eval: bool = True
) -> tuple[int, Path]:
    args = ["--config", "smoke", "--set", f"run_root={tmp_path}"]
    if no_eval:
        args += ["--set", "eval.final=false"]
    for item in overrides:
        args += ["--set", item]
    code = main(args, callbacks=callbacks)
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    return code, runs[-1] if runs else tmp_path


def _progress_columns(run_dir: Path) -> set[str]:
    with (run_dir / "tb" / "progress.csv").open() as fh:
        return set(next(csv.reader(fh)))


@pytest.mark.slow
def test_train_writes_run_files_and_final_table(tmp_path, capsys):
    code, run = _train(tmp_path, no_eval=False)
    assert code == 0
    assert run.name.startswith("andes_gym-Surrogate-v0__smoke__0__")
    for name in ("config.yaml", "command.txt", "feature_spec.json", "policy.onnx", "eval.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert "--config smoke" in (run / "command.txt").read_text()
    assert load_config(run / "config.yaml").total_timesteps == 256
    metas = [ckpt.read_meta(p) for p in ckpt.list_checkpoints(run)]
    assert [m["num_timesteps"] for m in metas][-1] >= 256
    assert {
        "qoe/mean",
        "qoe/p10",
        "qoe/ttft_p50_s",
        "qoe/preemptions_per_request",
    } <= _progress_columns(run)
    with (run / "eval.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    policies = {(r["policy"], r["seed"]) for r in rows}
    assert {
        ("learned", "1000001"),
        ("fcfs", "1000001"),
        ("learned", "mean"),
        ("fcfs", "mean"),
    } <= policies
    out = capsys.readouterr().out
    assert "mean QoE" in out and "learned" in out and "fcfs" in out


def test_resume_continues_the_timestep_count(tmp_path):
    code, run = _train(tmp_path, "total_timesteps=128")
    assert code == 0
    first = ckpt.read_meta(ckpt.latest_checkpoint(run))["num_timesteps"]
    assert 128 <= first < 256
    code = main(["--resume", str(run), "--set", "total_timesteps=256"])
    assert code == 0
    steps = [ckpt.read_meta(p)["num_timesteps"] for p in ckpt.list_checkpoints(run)]
    assert steps[-1] >= 256
    assert first in steps  # the first session's checkpoint is kept
    assert load_config(run / "config.yaml").total_timesteps == 256
    assert len((run / "command.txt").read_text().splitlines()) == 2


def test_interrupt_saves_a_checkpoint_and_resume_finishes(tmp_path):
    from stable_baselines3.common.callbacks import BaseCallback

    class CtrlC(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps >= 40:
                raise KeyboardInterrupt
            return True

    code, run = _train(tmp_path, "checkpoint.freq_timesteps=0", callbacks=[CtrlC()])
    assert code == EXIT_INTERRUPTED
    saved = ckpt.list_checkpoints(run)
    assert len(saved) == 1
    assert ckpt.read_meta(saved[0])["num_timesteps"] == 40
    assert main(["--resume", str(run)]) == 0
    assert ckpt.read_meta(ckpt.latest_checkpoint(run))["num_timesteps"] >= 256


def test_overrides_reach_the_model(tmp_path):
    code, run = _train(tmp_path, "total_timesteps=64", "algo.learning_rate=1e-5", "seed=3")
    assert code == 0
    assert "__smoke__3__" in run.name
    meta = ckpt.read_meta(ckpt.latest_checkpoint(run))
    assert meta["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-5)


def test_a2c_by_name(tmp_path):
    code, run = _train(
        tmp_path,
        "total_timesteps=32",
        "algo.name=A2C",
        "algo.n_steps=8",
        "algo.batch_size=null",
        "algo.n_epochs=null",
    )
    assert code == 0
    assert ckpt.read_meta(ckpt.latest_checkpoint(run))["algo"] == "A2C"


def test_behaviour_cloning_warm_start_is_logged(tmp_path, capsys):
    code, run = _train(tmp_path, "total_timesteps=64", "bc.enabled=true")
    assert code == 0
    assert {"bc/action_mse", "bc/pair_accuracy", "bc/num_samples"} <= _progress_columns(run)
    assert "behaviour-cloning warm start" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("algo.lr=1e-4", "algo.lr"),
        ("bogus=1", "bogus"),
        ("env.typo.x=1", "env.typo"),
        ("algo.extra.not_a_param=1", "not_a_param"),
        ("seed=abc", "seed"),
        ("bc.fit_threads=0", "bc.fit_threads"),
        ("torch_threads=-1", "torch_threads"),
    ],
)
def test_unknown_or_bad_keys_are_errors_naming_the_key(tmp_path, capsys, override, named):
    code = main(["--config", "smoke", "--set", f"run_root={tmp_path}", "--set", override])
    assert code == 2
    assert named in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing is created for a bad config


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("total_timesteps: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("algo:\n  name: PPO\n  learning_rat: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml.*algo\.learning_rat"):
        load_config(unknown)


def test_override_parsing_and_types():
    cfg = load_config(
        "smoke",
        ["algo.learning_rate=1e-4", "eval.seeds=[7, 8]", "env.kwargs.k_slots=8", "bc.enabled=true"],
    )
    assert cfg.algo.learning_rate == pytest.approx(1e-4)
    assert cfg.eval.seeds == [7, 8]
    assert cfg.env.kwargs["k_slots"] == 8
    assert cfg.bc.enabled is True
    assert cfg.hash() != load_config("smoke").hash()
    with pytest.raises(ConfigError, match="key=value"):
        load_config("smoke", ["algo.learning_rate"])


def test_corrupt_checkpoints_name_the_file(tmp_path):
    code, run = _train(tmp_path, "total_timesteps=32")
    assert code == 0
    latest = ckpt.latest_checkpoint(run)
    (latest / "policy.safetensors").write_bytes(b"\x00garbage")
    with (
        pytest.warns(ckpt.CheckpointWarning),
        pytest.raises(ckpt.CheckpointError, match="policy.safetensors"),
    ):
        _load_latest(run)
    (latest / "meta.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="meta.json"):
        ckpt.read_meta(latest)
    (latest / "meta.json").write_text(
        json.dumps({"format_version": 99, "num_timesteps": 1, "optimizer": {}})
    )
    with pytest.raises(ckpt.CheckpointError, match="format 99"):
        ckpt.read_meta(latest)


def _load_latest(run: Path):
    """Loads the newest checkpoint's weights into a network rebuilt from the run's config."""
    from andes_gym.training.factory import load_predictor

    load_predictor(run)


def test_held_out_seeds_never_train():
    import gymnasium as gym

    from andes_gym.training.factory import HeldOutSeeds

    class Recorder(gym.Env):
        observation_space = gym.spaces.Box(0, 1, (1,))
        action_space = gym.spaces.Box(0, 1, (1,))

        def __init__(self):
            self.seeds = []

        def reset(self, *, seed=None, options=None):
            self.seeds.append(seed)
            return self.observation_space.sample(), {}

    inner = Recorder()
    env = HeldOutSeeds(inner, held_out=[])
    env.reset(seed=5)
    for _ in range(50):
        env.reset()
    banned = inner.seeds[1:11]
    inner2 = Recorder()
    env2 = HeldOutSeeds(inner2, held_out=banned)
    env2.reset(seed=5)
    for _ in range(50):
        env2.reset()
    assert not set(banned) & set(inner2.seeds)
    assert len(set(inner2.seeds)) == 51


@pytest.mark.slow
def test_subprocess_envs_and_normalization(tmp_path):
    code, run = _train(
        tmp_path,
        "total_timesteps=128",
        "env.n_envs=2",
        "env.vec_env=subproc",
        "env.norm_obs=true",
        "env.norm_reward=true",
        "policy.kind=mlp",
    )
    assert code == 0
    latest = ckpt.latest_checkpoint(run)
    norm = ckpt.normalizer_arrays(latest)
    assert norm is not None and norm["mean"].shape == (16 * 16 + 7,)
    assert ckpt.read_meta(latest)["normalizer"]["obs_count"] > 100


def test_slot_scorer_refuses_observation_normalization(tmp_path, capsys):
    code = main(
        ["--config", "smoke", "--set", f"run_root={tmp_path}", "--set", "env.norm_obs=true"]
    )
    assert code == 2
    assert "norm_obs" in capsys.readouterr().err


def test_periodic_validation_keeps_the_best_checkpoint(tmp_path, capsys):
    code, run = _train(
        tmp_path,
        "total_timesteps=128",
        "eval.freq_timesteps=64",
        "eval.val_seeds=[2000001]",
        no_eval=False,
    )
    assert code == 0
    best = ckpt.best_checkpoint(run)
    assert best is not None
    meta = ckpt.read_meta(best)
    assert 0.0 <= meta["val_mean_qoe"] <= 1.0 and meta["val_seeds"] == [2000001]
    assert ckpt.policy_checkpoint(run) == best
    assert {"eval/mean_qoe", "eval/best_mean_qoe"} <= _progress_columns(run)
    assert "best validation checkpoint" in capsys.readouterr().out
    assert best not in ckpt.list_checkpoints(run)  # resume still takes the newest step


def test_validation_and_test_seeds_are_held_out_of_training():
    from andes_gym.training.factory import held_out_seeds

    cfg = load_config("smoke", ["eval.seeds=[5, 6]", "eval.val_seeds=[7]"])
    assert held_out_seeds(cfg) == [5, 6, 7]


def test_interrupt_during_imitation_is_redone_on_resume(tmp_path, capsys, monkeypatch):
    import andes_gym.training.imitation as imitation

    real_fit = imitation.fit

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imitation, "fit", interrupted_fit)
    code, run = _train(tmp_path, "total_timesteps=64", "bc.enabled=true")
    assert code == EXIT_INTERRUPTED
    assert ckpt.read_meta(ckpt.latest_checkpoint(run))["phase"] == "bc"
    monkeypatch.setattr(imitation, "fit", real_fit)
    capsys.readouterr()
    assert main(["--resume", str(run)]) == 0
    assert "behaviour-cloning warm start" in capsys.readouterr().out
    assert ckpt.read_meta(ckpt.latest_checkpoint(run))["phase"] == "rl"


@pytest.mark.parametrize(
    "path",
    sorted((Path(__file__).parents[1] / "andes_gym" / "configs" / "train").glob("*.yaml")),
    ids=str,
)
def test_shipped_train_configs_validate_and_build_their_env(path):
    from andes_gym.training import factory

    cfg = load_config(path)
    factory.validate(cfg)
    spec, _, _ = factory.probe_env(cfg)  # builds the env once: workloads, engine, K
    assert spec.k_slots == cfg.env.kwargs.get("k_slots", spec.k_slots)
