"""Training sweeps: a grid of config overrides x seeds, one training run per trial.

    python -m andes_gym.sweep --config quickstart --grid algo.learning_rate=[1e-4,3e-4] \\
        --seeds 0 1 2 --ray

Every trial is `andes_gym.training.run.run_training` on the config with the trial's
overrides (in the trial's process), the run `python -m andes_gym.train --config CONFIG
--set KEY=VALUE ...` makes (its `command.txt` records that command line): resolved config,
TensorBoard logs, checkpoints, `policy.onnx` and the final evaluation `eval.csv`. With `--ray` the trials are Ray Tune
trials (a grid search over the trial list, `cpus_per_trial` CPUs each); without it they
run one after another in this process.

The sweep reads each run's `eval.csv` (the learned policy's and `andes`'s mean rows over
the held-out seeds) and ranks the trials by learned mean QoE relative to `andes`
(`andes` is added to `eval.baselines` when the config lacks it).

Outputs in `--out` (default `runs/sweeps/<exp_name>__<time>`):
    trials/<trial>/<env>__<exp>__<seed>__<time>/   each trial's run directory
    trials.json, trials.csv   one row per trial (overrides, seed, status, QoE, run dir)
    sweep.md                  the ranked table of trials and the mean over seeds per grid point
    tune/                     Ray Tune's experiment state and per-trial results (--ray only)

The grid and its trials are `andes_gym.scale.sweep_trials`; the ranking and `sweep.md`,
`andes_gym.scale.sweep_table`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from andes_gym.config_files import resolve_config
from andes_gym.extras import MissingExtraError
from andes_gym.scale.cluster import RayConnection, require_ray
from andes_gym.scale.sweep_table import TRIAL_FIELDS, rank, sweep_markdown
from andes_gym.scale.sweep_trials import (
    Trial,
    format_value,
    make_trials,
    trial_argv,
    trial_overrides,
)
from andes_gym.scale.sweep_trials import parse_grid_item as parse_grid_item  # re-exported
from andes_gym.training.config import ConfigError, load_config
from andes_gym.training.run import run_training
from andes_gym.training.run_dir import CheckpointError

REFERENCE = "andes"
LEARNED = "learned"
# Starts the message of a Tune trial that failed, so the table shows the trial's own error.
_FAILED_MARK = "andes_gym sweep trial failed: "


@dataclass
class SweepSpec:
    """What to sweep and where.

    Attributes:
        config: Training config: a name in `configs/train/` or a YAML path.
        grid: Key -> values; the sweep runs their cartesian product.
        seeds: Training seeds; every grid point runs with each.
        overrides: Fixed `KEY=VALUE` overrides applied to every trial before the grid's.
        out: Output directory (default `runs/sweeps/<exp_name>__<time>`).
        ray: None runs the trials here one after another; "local" starts Ray here,
            "auto" or HOST:PORT joins a cluster.
        cpus_per_trial: CPUs Ray reserves per trial (None: the config's `env.n_envs`).
        num_cpus: CPUs of a Ray started here (None: every CPU).
    """

    config: str
    grid: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    overrides: list[str] = field(default_factory=list)
    out: str | None = None
    ray: str | None = None
    cpus_per_trial: int | None = None
    num_cpus: int | None = None


@dataclass
class SweepResult:
    """What a sweep produced."""

    out_dir: Path
    rows: list[dict]
    markdown: str
    num_failed: int


# ---------------------------------------------------------------------------- one trial
class _StderrTail(io.TextIOBase):
    """Passes writes on to a stream and keeps the last lines (a failed run's reason)."""

    def __init__(self, stream, max_chars: int = 2000) -> None:
        self.stream = stream
        self.max_chars = max_chars
        self.text = ""

    def write(self, s: str) -> int:
        self.stream.write(s)
        self.text = (self.text + s)[-self.max_chars :]
        return len(s)

    def flush(self) -> None:
        self.stream.flush()

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def _train_main(config_path: str, sets: list[str]) -> int:
    """Trains one trial in this process with `run_training` (tests replace it).

    Returns:
        The exit status `python -m andes_gym.train` has for the same run: 0, 2 for a
        missing extra, a config or a checkpoint error (printed to stderr as that command
        prints it), 130 when interrupted.
    """
    try:
        cfg = load_config(config_path, sets)
        return run_training(cfg, command=trial_argv(config_path, sets)).exit_status
    except (MissingExtraError, ConfigError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(config_path: str, sets: list[str]) -> int:
    """Trains one trial in this process (`_train_main`), keeping the tail of its stderr.

    The caller finds the run directory under the trial's private `run_root` (also when
    the run failed part-way).

    Raises:
        RuntimeError: When the run ends with a non-zero status (with its last line on
            stderr), in the words of the training command.
    """
    tail = _StderrTail(sys.stderr)
    with contextlib.redirect_stderr(tail):
        code = _train_main(config_path, sets)
    if code != 0:
        reason = tail.last_line()
        raise RuntimeError(
            f"andes_gym.train exited with status {code}" + (f": {reason}" if reason else "")
        )
    return code


def read_eval(run_dir: Path) -> dict:
    """The learned policy against `andes` from a run's `eval.csv` (its per-seed and mean rows).

    Returns:
        `learned_mean_qoe`, `andes_mean_qoe`, `qoe_vs_andes` (their ratio), `seeds_won`
        (held-out seeds where learned beats andes) and `num_seeds`.

    Raises:
        ValueError: When the file lacks the learned or the andes rows.
    """
    path = run_dir / "eval.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    means = {r["policy"]: float(r["mean_qoe"]) for r in rows if r["seed"] == "mean"}
    for name in (LEARNED, REFERENCE):
        if name not in means:
            raise ValueError(f"{path} has no mean row for {name!r} (policies: {sorted(means)})")
    per_seed: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["seed"] != "mean":
            per_seed.setdefault(r["seed"], {})[r["policy"]] = float(r["mean_qoe"])
    paired = [s for s in per_seed.values() if LEARNED in s and REFERENCE in s]
    return {
        "learned_mean_qoe": means[LEARNED],
        "andes_mean_qoe": means[REFERENCE],
        "qoe_vs_andes": means[LEARNED] / means[REFERENCE] if means[REFERENCE] else math.nan,
        "seeds_won": sum(s[LEARNED] > s[REFERENCE] for s in paired),
        "num_seeds": len(paired),
    }


def run_trial(
    trial: Trial, config_path: str, overrides: Sequence[str], out_dir: str, cwd: str
) -> dict:
    """Trains one trial and reads its final evaluation; never raises for a failed run.

    Args:
        trial: The trial.
        config_path: Absolute path of the training config.
        overrides: Fixed overrides (before the trial's grid point and seed).
        out_dir: Absolute sweep output directory (the run lands in `trials/<name>/`).
        cwd: The sweep's working directory (relative paths in the config resolve there, as
            with `python -m andes_gym.train`; Ray Tune starts trials elsewhere).

    Returns:
        A row: the trial, `status` ("ok" | "failed"), `run_dir`, `wall_s`, `error`, and the
        `read_eval` fields when the run finished.
    """
    if Path(cwd).is_dir():
        os.chdir(cwd)
    run_root = Path(out_dir) / "trials" / trial.name
    row = {"trial": trial.name, "grid": " ".join(trial.grid), "seed": trial.seed}
    start = time.monotonic()
    try:
        _train(config_path, trial_overrides(overrides, trial, run_root))
        runs = sorted(p for p in run_root.iterdir() if p.is_dir()) if run_root.is_dir() else []
        if not runs:
            raise RuntimeError(f"andes_gym.train made no run directory in {run_root}")
        row.update(read_eval(runs[-1]), run_dir=str(runs[-1]), status="ok", error="")
    except Exception as exc:  # noqa: BLE001 (a failed trial is a row, not the end of the sweep)
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        runs = sorted(run_root.iterdir()) if run_root.is_dir() else []
        row.setdefault("run_dir", str(runs[-1]) if runs else "")
    row["wall_s"] = time.monotonic() - start
    return row


# -------------------------------------------------------------------------------- sweeps
def _prepare(spec: SweepSpec, trials: list[Trial]) -> tuple[str, list[str], int, str]:
    """Validates every trial's config; returns the config path, overrides, CPUs per trial,
    and the default output name.

    Raises:
        ConfigError: For a config or override the training command would refuse.
        ValueError: When the config has no final evaluation.
    """
    try:
        config_path = str(Path(resolve_config("train", spec.config)).resolve())
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    overrides = ["progress_bar=false", *spec.overrides]
    cfg = load_config(config_path, overrides)
    if not cfg.eval.final:
        raise ValueError("the sweep ranks trials by the final evaluation; set eval.final=true")
    if REFERENCE not in cfg.eval.baselines:
        baselines = [*cfg.eval.baselines, REFERENCE]
        overrides.append(f"eval.baselines={format_value(baselines)}")
    for trial in trials:
        load_config(config_path, [*overrides, *trial.grid, f"seed={trial.seed}"])
    cpus = spec.cpus_per_trial or max(1, cfg.env.n_envs)
    return config_path, overrides, cpus, f"{cfg.exp_name}__{time.strftime('%Y%m%d-%H%M%S')}"


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Runs every trial (on Ray Tune with `spec.ray`), ranks them and writes the outputs.

    Raises:
        ConfigError: For a bad config or override (before anything runs).
        RayUnavailableError: With `spec.ray` when Ray is not installed.
    """
    if spec.ray is not None:
        require_ray("--ray")
    trials = make_trials(spec.grid, spec.seeds)
    config_path, overrides, cpus, default_name = _prepare(spec, trials)
    out = Path(spec.out or Path("runs") / "sweeps" / default_name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args = (config_path, overrides, str(out), os.getcwd())
    if spec.ray is None:
        rows = [run_trial(t, *args) for t in trials]
    else:
        rows = _run_tune(trials, args, cpus, RayConnection(spec.ray, spec.num_cpus), out)
    rows = rank(rows)
    markdown = sweep_markdown(rows, spec, config_path, overrides)
    (out / "trials.json").write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    with (out / "trials.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=TRIAL_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    (out / "sweep.md").write_text(markdown)
    return SweepResult(out, rows, markdown, sum(r["status"] != "ok" for r in rows))


def andes_gym_train(config: dict, trials: list[Trial], args: tuple) -> None:
    """The Tune trainable: one trial, reported once (a failed run fails the Tune trial)."""
    from ray import tune

    row = run_trial(trials[config["trial"]], *args)
    if row["status"] != "ok":
        raise RuntimeError(f"{_FAILED_MARK}{row['error']}")
    tune.report(row)


def _run_tune(
    trials: list[Trial], args: tuple, cpus: int, connection: RayConnection, out: Path
) -> list[dict]:
    """Runs the trials as Tune trials (a grid search over their indices)."""
    connection.ensure()
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(andes_gym_train, trials=trials, args=args), {"cpu": cpus}
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.index for t in trials])},
        run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=1),
    )
    try:
        return _tune_rows(tuner.fit(), trials, out)
    finally:
        connection.close()  # a Ray started for this sweep; one the caller had stays up


def _tune_rows(grid, trials: list[Trial], out: Path) -> list[dict]:
    """One row per trial from Tune's results (its reported row, or the error)."""
    rows: dict[int, dict] = {}
    for result in grid:
        index = result.config["trial"]
        trial = trials[index]
        if result.error is None and result.metrics and "status" in result.metrics:
            rows[index] = {
                k: result.metrics[k] for k in (*TRIAL_FIELDS, "trial") if k in result.metrics
            }
        else:
            run_root = out / "trials" / trial.name
            runs = sorted(run_root.iterdir()) if run_root.is_dir() else []
            rows[index] = {
                "trial": trial.name,
                "grid": " ".join(trial.grid),
                "seed": trial.seed,
                "status": "failed",
                "error": _first_line(result.error),
                "run_dir": str(runs[-1]) if runs else "",
            }
        rows[index]["tune_dir"] = str(result.path)
    return [rows[t.index] for t in trials if t.index in rows]


def _first_line(exc: BaseException | None) -> str:
    """The trial's own error inside Tune's (which wraps it in the remote traceback)."""
    text = str(exc or "no result reported").strip()
    for line in text.splitlines():
        if _FAILED_MARK in line:
            return line.split(_FAILED_MARK, 1)[1].strip()
    lines = text.splitlines()
    return lines[-1] if lines else type(exc).__name__
