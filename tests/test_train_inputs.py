"""Bad training input: every mistake is a `ConfigError` naming the key, raised before anything is written.

Covers the config domains (declared once, next to each field), `--resume` (rejected
overrides change nothing; a corrupt newest checkpoint falls back to an intact one;
`progress.csv` keeps its rows) and a property test over random configs.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import shutil
import typing
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from andes_gym.export import main as export_main  # noqa: E402
from andes_gym.train import main  # noqa: E402
from andes_gym.training import checkpoint as ckpt  # noqa: E402
from andes_gym.training.config import (  # noqa: E402
    ConfigError,
    TrainConfig,
    config_from_dict,
    load_config,
)


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes), directories included as empty entries."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
    }


def _progress_rows(run: Path) -> list[dict]:
    with (run / "tb" / "progress.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished smoke run with checkpoints at 64 and 128 timesteps (do not modify: copy it)."""
    root = tmp_path_factory.mktemp("runs")
    args = ["--config", "smoke", "--set", f"run_root={root}", "--set", "eval.final=false"]
    for item in ("total_timesteps=128", "checkpoint.freq_timesteps=64"):
        args += ["--set", item]
    assert main(args) == 0
    return next(p for p in root.iterdir() if p.is_dir())


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A private copy of the trained run that a test may change."""
    return Path(shutil.copytree(trained_run, tmp_path / trained_run.name))


# --------------------------------------------------------------------------- 1. resume writes last


@pytest.mark.parametrize(
    ("override", "named"),
    [
        (
            "policy.slot_hidden=[8]",
            "policy.slot_hidden",
        ),  # a valid value the checkpoint cannot take
        ("policy.activation=relu", "policy.activation"),  # same shapes, another network
        ("algo.name=A2C", "algo.name"),
        ("total_timesteps=-5", "total_timesteps"),  # not a valid value at all
        ("env.kwargs.k_slots=8", "k_slots"),  # another observation layout
    ],
)
def test_rejected_resume_overrides_change_nothing_in_the_run(run_copy, capsys, override, named):
    before = _snapshot(run_copy)
    assert main(["--resume", str(run_copy), "--set", override]) == 2
    assert named in capsys.readouterr().err
    assert _snapshot(run_copy) == before
    # The run still exports (its config.yaml was not poisoned by the rejected override).
    assert export_main([str(run_copy), "--out", str(run_copy.parent / "p.onnx")]) == 0


# --------------------------------------------------------------------------- 2. corrupt checkpoints


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_resume_falls_back_past_a_corrupt_newest_checkpoint(run_copy, capsys):
    older, newest = ckpt.list_checkpoints(run_copy)
    _truncate(newest / "policy.safetensors")
    with pytest.warns(ckpt.CheckpointWarning, match=r"step_0000000128.*policy\.safetensors"):
        code = main(["--resume", str(run_copy), "--set", "total_timesteps=128"])
    assert code == 0
    assert f"resumed from {older}" in capsys.readouterr().out
    # The broken checkpoint was replaced by the resumed run's own save at 128.
    assert ckpt.read_meta(ckpt.latest_checkpoint(run_copy))["num_timesteps"] >= 128
    ckpt.verify_checkpoint(ckpt.latest_checkpoint(run_copy))


def test_resume_with_no_intact_checkpoint_is_an_error_naming_the_files(run_copy, capsys):
    for path in ckpt.list_checkpoints(run_copy):
        _truncate(path / "optimizer.safetensors")
    before = _snapshot(run_copy)
    with pytest.warns(ckpt.CheckpointWarning):
        assert main(["--resume", str(run_copy)]) == 2
    err = capsys.readouterr().err
    assert "no intact checkpoint" in err
    assert "step_0000000064/optimizer.safetensors" in err
    assert "step_0000000128/optimizer.safetensors" in err
    assert _snapshot(run_copy) == before


def test_newest_intact_checkpoint_skips_bad_meta_and_missing_files(run_copy):
    older, newest = ckpt.list_checkpoints(run_copy)
    assert ckpt.newest_intact_checkpoint(run_copy) == newest
    (newest / "meta.json").write_text("{not json")
    with pytest.warns(ckpt.CheckpointWarning, match="meta.json"):
        assert ckpt.newest_intact_checkpoint(run_copy) == older
    (older / "optimizer.safetensors").unlink()
    with (
        pytest.warns(ckpt.CheckpointWarning),
        pytest.raises(ckpt.CheckpointError, match="optimizer"),
    ):
        ckpt.newest_intact_checkpoint(run_copy)


def test_a_corrupt_best_checkpoint_falls_back_to_the_newest_intact_one(run_copy, capsys):
    older, newest = ckpt.list_checkpoints(run_copy)
    best = run_copy / ckpt.CHECKPOINT_DIR / ckpt.BEST_NAME
    shutil.copytree(older, best)
    assert ckpt.policy_checkpoint(run_copy) == best
    _truncate(best / "policy.safetensors")
    with pytest.warns(ckpt.CheckpointWarning, match=r"best.*policy\.safetensors"):
        assert ckpt.policy_checkpoint(run_copy) == newest
    with pytest.warns(ckpt.CheckpointWarning):
        assert export_main([str(run_copy), "--out", str(run_copy / "p.onnx")]) == 0


def test_resume_near_the_largest_seed_does_not_overflow(run_copy):
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0\n", f"seed: {2**32 - 1}\n", 1))
    assert load_config(config).seed == 2**32 - 1
    # Nothing is left to train (128 of 128): the session rebuilds the model, saves, exports.
    assert main(["--resume", str(run_copy)]) == 0


def test_resume_of_a_run_without_checkpoints_is_an_error(run_copy, capsys):
    shutil.rmtree(run_copy / ckpt.CHECKPOINT_DIR)
    before = _snapshot(run_copy)
    assert main(["--resume", str(run_copy)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert _snapshot(run_copy) == before


def test_resume_of_a_directory_that_is_not_a_run_is_an_error(tmp_path, capsys):
    assert main(["--resume", str(tmp_path)]) == 2
    assert "config.yaml" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "missing")]) == 2
    assert not any(tmp_path.iterdir())


def test_export_of_a_run_without_checkpoints_is_an_error(run_copy, capsys):
    shutil.rmtree(run_copy / ckpt.CHECKPOINT_DIR)
    assert export_main([str(run_copy), "--out", str(run_copy / "x.onnx")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------- 4. progress.csv


def test_resume_appends_to_progress_csv(run_copy):
    before = _progress_rows(run_copy)
    assert len(before) >= 2
    assert main(["--resume", str(run_copy), "--set", "total_timesteps=192"]) == 0
    after = _progress_rows(run_copy)
    assert len(after) > len(before)
    steps = [int(float(r["time/total_timesteps"])) for r in after]
    assert steps[: len(before)] == [int(float(r["time/total_timesteps"])) for r in before]
    assert steps == sorted(steps) and steps[-1] >= 192


# --------------------------------------------------------------------------- 3. value domains

BAD_VALUES = [
    ("total_timesteps=0", "total_timesteps"),
    ("total_timesteps=-5", "total_timesteps"),
    ("total_timesteps=1.5", "total_timesteps"),
    ("total_timesteps=true", "total_timesteps"),
    ("seed=-1", "seed"),
    ("algo.learning_rate=0", "algo.learning_rate"),
    ("algo.learning_rate=-1e-3", "algo.learning_rate"),
    ("algo.learning_rate=.nan", "algo.learning_rate"),
    ("algo.learning_rate=.inf", "algo.learning_rate"),
    ("algo.gamma=2", "algo.gamma"),
    ("algo.gamma=0", "algo.gamma"),
    ("algo.gae_lambda=1.5", "algo.gae_lambda"),
    ("algo.n_steps=0", "algo.n_steps"),
    ("algo.n_steps=1", "n_steps"),  # PPO: n_steps * n_envs must be > 1 (SB3's own check)
    ("algo.batch_size=-32", "algo.batch_size"),
    ("algo.clip_range=0", "algo.clip_range"),
    ("algo.ent_coef=-0.1", "algo.ent_coef"),
    ("algo.name=NotAnAlgo", "algo.name"),
    ("algo.extra={1: 2}", "algo.extra"),
    ("env.kwargs.k_slots=2.5", "env.kwargs.k_slots"),
    ("env.kwargs.k_slots=0", "env.kwargs.k_slots"),
    ("env.kwargs.k_slots=true", "env.kwargs.k_slots"),
    ("env.kwargs.iters_per_decision=0", "env.kwargs.iters_per_decision"),
    ("env.kwargs.lookahead_s=-1", "env.kwargs.lookahead_s"),
    ("env.kwargs.workload=no_such_workload", "env.kwargs"),
    ("env.kwargs.engine=no_such_engine", "env.kwargs"),
    ("env.kwargs.no_such_kwarg=1", "env.kwargs"),
    ("env.n_envs=0", "env.n_envs"),
    ("env.n_envs=true", "env.n_envs"),
    ("env.vec_env=threads", "env.vec_env"),
    ("env.clip_obs=0", "env.clip_obs"),
    ("env.id=''", "env.id"),
    ("policy.slot_hidden=[0]", "policy.slot_hidden"),
    ("policy.slot_hidden=[16, -1]", "policy.slot_hidden"),
    ("policy.context_hidden=-1", "policy.context_hidden"),
    ("policy.kind=transformer", "policy.kind"),
    ("policy.log_std_init=.nan", "policy.log_std_init"),
    ("bc.timesteps=0", "bc.timesteps"),
    ("bc.target_scale=1.5", "bc.target_scale"),
    ("bc.learning_rate=0", "bc.learning_rate"),
    ("bc.dagger_rounds=-1", "bc.dagger_rounds"),
    ("eval.seeds=[]", "eval.seeds"),
    ("eval.seeds=[-3]", "eval.seeds"),
    ("eval.seeds=[5, 5]", "eval.seeds"),
    ("eval.max_steps=0", "eval.max_steps"),
    ("eval.n_workers=0", "eval.n_workers"),
    ("eval.freq_timesteps=-1", "eval.freq_timesteps"),
    ("eval.val_seeds=[1000001]", "eval.val_seeds"),  # the test seed: validation would see it
    ("eval.baselines=[nope]", "eval.baselines"),
    ("checkpoint.keep_last=-1", "checkpoint.keep_last"),
    ("checkpoint.freq_timesteps=-64", "checkpoint.freq_timesteps"),
    ("verbose=3", "verbose"),
    ("device=gpu0", "device"),
    ("exp_name=a/b", "exp_name"),
    ("exp_name=''", "exp_name"),
    ("run_root=''", "run_root"),
    ("progress_bar=1", "progress_bar"),
]


@pytest.mark.parametrize(("override", "named"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_meaningless_values_are_errors_naming_the_key_and_nothing_is_written(
    tmp_path, capsys, override, named
):
    root = tmp_path / "runs"
    args = ["--config", "smoke", "--set", f"run_root={root}", "--set", "eval.final=false"]
    code = main([*args, "--set", override])
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err
    assert not root.exists()  # no run directory, empty or not


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("total_timesteps: 0\n", "total_timesteps"),
        ("algo:\n  gamma: 2\n", "algo.gamma"),
        ("env:\n  kwargs:\n    k_slots: 2.5\n", "env.kwargs.k_slots"),
        ("eval:\n  max_steps: 0\n", "eval.max_steps"),
        ("algo:\n  learning_rate: .nan\n", "algo.learning_rate"),
    ],
)
def test_a_bad_value_in_a_file_names_the_file_and_the_key(tmp_path, text, key):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"mine\.yaml") as info:
        load_config(path)
    assert info.value.key == key
    assert key in str(info.value)


def test_a_bad_override_names_the_override(tmp_path):
    with pytest.raises(ConfigError, match=r"--set algo\.gamma=2") as info:
        load_config("smoke", ["seed=3", "algo.gamma=2"])
    assert info.value.key == "algo.gamma"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_an_error(tmp_path, capsys, text):
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    root = tmp_path / "runs"
    assert main(["--config", str(path), "--set", f"run_root={root}"]) == 2
    assert "empty.yaml" in capsys.readouterr().err
    assert not root.exists()


def test_periodic_validation_needs_validation_seeds():
    with pytest.raises(ConfigError, match="eval.val_seeds") as info:
        load_config("smoke", ["eval.freq_timesteps=64", "eval.val_seeds=[]"])
    assert info.value.key == "eval.val_seeds"
    assert load_config("smoke", ["eval.val_seeds=[]"]).eval.val_seeds == []


def test_a_progress_bar_without_its_packages_is_an_error(tmp_path, capsys, monkeypatch):
    from andes_gym.training import factory

    monkeypatch.setattr(factory, "is_available", lambda module: module != "rich")
    root = tmp_path / "runs"
    assert (
        main(["--config", "smoke", "--set", f"run_root={root}", "--set", "progress_bar=true"]) == 2
    )
    assert "progress_bar" in capsys.readouterr().err
    assert not root.exists()


def test_no_config_file_means_the_defaults():
    assert load_config() == TrainConfig()
    assert load_config(None, ["seed=4"]).seed == 4


def test_integral_floats_and_numeric_strings_are_accepted():
    cfg = load_config("smoke", ["total_timesteps=1e3", "env.kwargs.k_slots=16.0", "seed=2.0"])
    assert (cfg.total_timesteps, cfg.env.kwargs["k_slots"], cfg.seed) == (1000, 16, 2)
    assert isinstance(cfg.env.kwargs["k_slots"], int)
    assert load_config("smoke", ["env.kwargs.k_slots=null"]).env.kwargs["k_slots"] is None


@pytest.mark.parametrize("item", ["total_timesteps", "=5", "algo..gamma=1", "algo.gamma"])
def test_malformed_overrides_are_errors(tmp_path, capsys, item):
    root = tmp_path / "runs"
    assert main(["--config", "smoke", "--set", f"run_root={root}", "--set", item]) == 2
    assert "override" in capsys.readouterr().err
    assert not root.exists()


def test_a_failure_after_the_checks_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    from andes_gym.training import factory

    def refuse(*args, **kwargs):
        raise ConfigError("refused", key="algo")

    monkeypatch.setattr(factory, "make_model", refuse)
    root = tmp_path / "runs"
    assert main(["--config", "smoke", "--set", f"run_root={root}"]) == 2
    assert "refused" in capsys.readouterr().err
    assert not root.exists()


def test_help_shows_each_keys_domain():
    from andes_gym.training.config import describe_keys

    lines = "\n".join(describe_keys())
    assert "algo.gamma = 0.999" in lines and "(0, 1]" in lines
    assert "total_timesteps = 50000" in lines


# --------------------------------------------------------------------------- 5. property test


def _leaf_keys(cls=TrainConfig, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _leaf_keys(hints[f.name], prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys


LEAF_KEYS = _leaf_keys()
ENV_KWARGS = ["k_slots", "lookahead_s", "iters_per_decision", "time_limit_s", "workload"]

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, 1, 2, -1, 64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, 1.5, -0.5, math.nan, math.inf, -math.inf]),
    st.text(max_size=8),
    st.sampled_from(["PPO", "A2C", "tanh", "mlp", "slot_scorer", "dummy", "cpu", "1e-4", "nan"]),
)
_values = st.one_of(
    _scalars,
    st.lists(_scalars, max_size=4),
    st.dictionaries(st.sampled_from(ENV_KWARGS + ["x"]), _scalars, max_size=3),
)


def _default(key: str):
    value = TrainConfig().to_dict()
    for part in key.split("."):
        value = value[part]
    return value


_entries = st.one_of(
    st.tuples(st.sampled_from(LEAF_KEYS), _values),
    st.sampled_from([(key, _default(key)) for key in LEAF_KEYS]),  # valid: the default
    st.tuples(st.sampled_from([f"env.kwargs.{k}" for k in ENV_KWARGS]), _scalars),
    st.tuples(st.sampled_from(["bogus", "algo.bogus", "env", "policy"]), _values),
)


def _nest(entries: list[tuple[str, object]]) -> dict:
    data: dict = {}
    for key, value in entries:
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_entries, max_size=6))
def test_any_config_either_loads_valid_or_is_a_config_error_naming_a_key(entries):
    data = _nest(entries)
    try:
        cfg = config_from_dict(data, source="<random>")
    except ConfigError as exc:
        assert exc.key, f"no key named: {exc}"
        assert exc.key.split(".")[0].split("[")[0] in {
            *(k.split(".")[0] for k in LEAF_KEYS),
            "bogus",
        }
        assert exc.key in str(exc)
        return
    # What loads is valid: it survives a round trip through plain data unchanged.
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.total_timesteps >= 1 and 0 < (cfg.algo.gamma or 1) <= 1
    assert cfg.eval.seeds and all(s >= 0 for s in cfg.eval.seeds)
    for value in (cfg.algo.learning_rate, cfg.bc.learning_rate, cfg.policy.log_std_init):
        assert value is None or math.isfinite(value)


def test_activation_names_match_the_network():
    from andes_gym.training.config import ACTIVATION_NAMES
    from andes_gym.training.policy_net import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
