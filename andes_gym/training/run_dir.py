"""Run directories: `{run_root}/{env}__{exp}__{seed}__{time}` with the resolved config and command.

Contents:
    config.yaml        the resolved config (every key, defaults included)
    command.txt        every command line that ran in this directory (one per line)
    feature_spec.json  the env's observation layout (for exports and checks)
    tb/                TensorBoard event files and progress.csv (appended to on resume)
    checkpoints/       see `andes_gym.training.checkpoint`
    eval.csv           final evaluation (per seed and mean per policy)
    policy.onnx        the exported scoring network (written at the end of training)
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from andes_gym.core.features import FeatureSpec
from andes_gym.training.config import (
    ConfigError,
    TrainConfig,
    dump_yaml,
    load_config,
    parse_override,
)

CONFIG_FILE = "config.yaml"
COMMAND_FILE = "command.txt"
SPEC_FILE = "feature_spec.json"

# Keys a run keeps for life: its checkpoints hold a network (and normalization statistics)
# built for these values, so `--resume --set` may not change them.
FIXED_KEYS = ("env.id", "env.norm_obs", "env.norm_reward", "algo.name", "policy")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem.

    Raised by `andes_gym.training.checkpoint`; defined here, where importing it imports
    no torch.
    """


def run_name(cfg: TrainConfig, now: float | None = None) -> str:
    """`{env}__{exp}__{seed}__{time}` with the env id's slashes replaced."""
    env = cfg.env.id.replace("/", "-").replace(":", "-")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{env}__{cfg.exp_name}__{cfg.seed}__{stamp}"


def create_run_dir(cfg: TrainConfig, spec: FeatureSpec) -> Path:
    """Creates a fresh run directory and writes the config and feature spec into it."""
    root = Path(cfg.run_root)
    base = run_name(cfg)
    path = root / base
    n = 1
    while path.exists():  # two runs started in the same second
        n += 1
        path = root / f"{base}-{n}"
    path.mkdir(parents=True)
    (path / CONFIG_FILE).write_text(dump_yaml(cfg))
    (path / SPEC_FILE).write_text(spec.to_json() + "\n")
    return path


def record_command(run_dir: Path, argv: list[str] | None = None) -> None:
    """Appends the exact command line to `command.txt`."""
    argv = sys.argv if argv is None else argv
    line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "andes_gym.train", *argv[1:]])
    with (Path(run_dir) / COMMAND_FILE).open("a") as fh:
        fh.write(line + "\n")


def read_run(
    run_dir: str | Path, overrides: list[str] | None = None
) -> tuple[TrainConfig, FeatureSpec]:
    """The saved config (with overrides applied) and feature spec of a run directory.

    Reads only: a rejected override leaves the run as it was.

    Raises:
        ConfigError: Naming the missing or malformed file, a bad override, or an override
            of a key a run keeps for life (`FIXED_KEYS`).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory not found: {run_dir}")
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.is_file():
        raise ConfigError(f"{cfg_path}: missing (not a run directory?)")
    cfg = load_config(cfg_path, overrides)
    if overrides:
        _check_resume_overrides(load_config(cfg_path), cfg, overrides)
    spec_path = run_dir / SPEC_FILE
    try:
        spec = FeatureSpec.from_dict(json.loads(spec_path.read_text()))
    except FileNotFoundError as exc:
        raise ConfigError(f"{spec_path}: missing") from exc
    except (json.JSONDecodeError, ValueError, TypeError) as exc:
        raise ConfigError(f"{spec_path}: malformed feature spec ({exc})") from exc
    return cfg, spec


def _check_resume_overrides(saved: TrainConfig, cfg: TrainConfig, overrides: list[str]) -> None:
    """Rejects overrides that change a key in `FIXED_KEYS`, naming the key and the override."""
    old, new = saved.to_dict(), cfg.to_dict()
    for fixed in FIXED_KEYS:
        section, _, name = fixed.rpartition(".")
        before = old[section][name] if section else old[fixed]
        after = new[section][name] if section else new[fixed]
        if before == after:
            continue
        changed = fixed
        if isinstance(before, dict):  # a whole section: name its first changed key
            changed = fixed + "." + next(k for k in before if before[k] != after[k])
            before, after = before[changed.rpartition(".")[2]], after[changed.rpartition(".")[2]]
        item = next(
            (i for i in overrides if parse_override(i)[0].startswith(fixed)), " ".join(overrides)
        )
        raise ConfigError(
            f"{changed} cannot change on --resume (the run's checkpoints were trained with "
            f"{before!r}, the override asks for {after!r}); start a new run instead",
            source=f"--set {item}",
            key=changed,
        )
