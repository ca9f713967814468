"""Training sweeps: a grid of config overrides x seeds, one `andes_gym.train` run per trial.

    python -m andes_gym.sweep --config quickstart --grid algo.learning_rate=[1e-4,3e-4] \\
        --seeds 0 1 2 --ray

Every trial is exactly `python -m andes_gym.train --config CONFIG --set KEY=VALUE ...` (the
training package's own entry point, in the trial's process), so its run directory is the
one that command makes: resolved config, command line, TensorBoard logs, checkpoints,
`policy.onnx` and the final evaluation `eval.csv`. With `--ray` the trials are Ray Tune
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
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from andes_gym.scale.cluster import RayConnection, require_ray

REFERENCE = "andes"
LEARNED = "learned"
# Starts the message of a Tune trial that failed, so the table shows the trial's own error.
_FAILED_MARK = "andes_gym sweep trial failed: "
TRIAL_FIELDS = (
    "rank",
    "trial",
    "grid",
    "seed",
    "status",
    "learned_mean_qoe",
    "andes_mean_qoe",
    "qoe_vs_andes",
    "seeds_won",
    "num_seeds",
    "wall_s",
    "run_dir",
    "error",
)


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep.

    Attributes:
        index: Position in the sweep (grid order, then seeds).
        name: Directory-safe name (`t003__learning_rate=0.0001__seed1`).
        grid: The grid point: `KEY=VALUE` overrides, in the grid's key order.
        seed: The training seed (`--set seed=...`).
    """

    index: int
    name: str
    grid: tuple[str, ...]
    seed: int


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


# ------------------------------------------------------------------------------ the grid
def parse_grid_item(item: str) -> tuple[str, list]:
    """`KEY=[v1,v2]` (YAML list) or `KEY=v` into the key and its values.

    Raises:
        ValueError: When the item has no `=`, an empty key, or an empty list.
    """
    if "=" not in item:
        raise ValueError(f"--grid {item!r} must look like key=[v1,v2] (values as YAML)")
    key, raw = (part.strip() for part in item.split("=", 1))
    if not key:
        raise ValueError(f"--grid {item!r} has an empty key")
    try:
        values = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"--grid {item!r}: values are not valid YAML ({exc})") from exc
    values = [_number(v) for v in (values if isinstance(values, list) else [values])]
    if not values:
        raise ValueError(f"--grid {item!r} lists no values")
    return key, values


def _number(value):
    """YAML 1.1 reads `1e-4` (no dot) as a string; a sweep means the number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _format_value(value) -> str:
    """A value as `--set` reads it back (YAML flow style, one line)."""
    if isinstance(value, str):
        return value
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")
    )


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def make_trials(grid: dict[str, list], seeds: Sequence[int]) -> list[Trial]:
    """The cartesian product of the grid (keys in order) times the seeds."""
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = tuple(f"{k}={_format_value(v)}" for k, v in zip(keys, values, strict=True))
        label = "_".join(
            f"{k.rsplit('.', 1)[-1]}={_format_value(v)}" for k, v in zip(keys, values, strict=True)
        )
        for seed in seeds:
            index = len(trials)
            parts = [f"t{index:03d}", *([_safe(label)] if label else []), f"seed{seed}"]
            trials.append(Trial(index, "__".join(parts), point, int(seed)))
    return trials


# ---------------------------------------------------------------------------- one trial
def trial_argv(
    config_path: str, overrides: Sequence[str], trial: Trial, run_root: Path
) -> list[str]:
    """The `python -m andes_gym.train` arguments of a trial."""
    sets = [*overrides, *trial.grid, f"seed={trial.seed}", f"run_root={run_root}"]
    return ["--config", config_path, *(arg for s in sets for arg in ("--set", s))]


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


def _train_main(argv: list[str]) -> int:
    """`andes_gym.train.main`: the training command's entry point (tests replace it)."""
    from andes_gym.train import main

    return main(argv)


def _train(argv: list[str]) -> int:
    """Runs `python -m andes_gym.train ARGV` in this process; returns its exit status.

    The training package has no function that takes a config and returns the run
    directory, so the trial calls the command's own entry point and finds the run
    directory under its private `run_root`.

    Raises:
        RuntimeError: When the command exits non-zero (with its last line on stderr).
    """
    tail = _StderrTail(sys.stderr)
    with contextlib.redirect_stderr(tail):
        code = _train_main(argv)
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
        _train(trial_argv(config_path, overrides, trial, run_root))
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
    from andes_gym.config_files import resolve_config
    from andes_gym.training.config import ConfigError, load_config

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
        overrides.append(f"eval.baselines={_format_value(baselines)}")
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


# ------------------------------------------------------------------------------ the table
def rank(rows: list[dict]) -> list[dict]:
    """Rows ordered by learned mean QoE relative to andes (best first), failed trials last."""

    def key(row: dict) -> tuple:
        ratio = row.get("qoe_vs_andes")
        ok = row["status"] == "ok" and ratio is not None and not math.isnan(ratio)
        return (not ok, -(ratio if ok else 0.0), row["trial"])

    ranked = sorted(rows, key=key)
    for i, row in enumerate(ranked, start=1):
        row["rank"] = i if row["status"] == "ok" else ""
    return ranked


def _fmt(value, spec: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def grid_means(rows: list[dict]) -> list[dict]:
    """Mean over seeds per grid point (successful trials), best learned/andes first."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(row["grid"], []).append(row)
    out = []
    for grid, group in groups.items():
        n = len(group)
        out.append(
            {
                "grid": grid,
                "num_trials": n,
                "learned_mean_qoe": sum(r["learned_mean_qoe"] for r in group) / n,
                "andes_mean_qoe": sum(r["andes_mean_qoe"] for r in group) / n,
                "qoe_vs_andes": sum(r["qoe_vs_andes"] for r in group) / n,
                "seeds_won": sum(r["seeds_won"] for r in group),
                "num_seeds": sum(r["num_seeds"] for r in group),
            }
        )
    return sorted(out, key=lambda r: -r["qoe_vs_andes"])


def sweep_markdown(
    rows: list[dict], spec: SweepSpec, config_path: str, overrides: list[str]
) -> str:
    """The ranked trials table and the per-grid-point means, as Markdown."""
    where = "this process" if spec.ray is None else f"Ray Tune (`--ray {spec.ray}`)"
    lines = [
        "# Sweep\n",
        f"- config: `{config_path}`",
        f"- fixed overrides: {', '.join(f'`{o}`' for o in overrides) or 'none'}",
        f"- grid: {', '.join(f'`{k}` in {v}' for k, v in spec.grid.items()) or 'none'}; "
        f"seeds: {', '.join(map(str, spec.seeds))}",
        f"- trials: {len(rows)}, run in {where}",
        "",
        "## Trials ranked by held-out mean QoE against andes\n",
        "learned/andes: the learned policy's mean QoE over the config's held-out "
        "`eval.seeds` divided by andes's on the same seeds; seeds won: held-out seeds where "
        "the learned policy's mean QoE is higher.\n",
        "| rank | trial | grid point | seed | learned QoE | andes QoE | learned/andes "
        "| seeds won | wall s | run dir |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["status"] != "ok":
            continue
        lines.append(
            f"| {r['rank']} | {r['trial']} | {r['grid'] or '-'} | {r['seed']} "
            f"| {_fmt(r['learned_mean_qoe'], '.4f')} | {_fmt(r['andes_mean_qoe'], '.4f')} "
            f"| {_fmt(r['qoe_vs_andes'], '.4f')} | {r['seeds_won']}/{r['num_seeds']} "
            f"| {_fmt(r.get('wall_s'), '.0f')} | `{r['run_dir']}` |"
        )
    means = grid_means(rows)
    if means and len(means) < sum(r["status"] == "ok" for r in rows):
        lines += [
            "",
            "## Grid points (mean over seeds)\n",
            "| grid point | trials | learned QoE | andes QoE | learned/andes | seeds won |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m in means:
            lines.append(
                f"| {m['grid'] or '-'} | {m['num_trials']} | {m['learned_mean_qoe']:.4f} "
                f"| {m['andes_mean_qoe']:.4f} | {m['qoe_vs_andes']:.4f} "
                f"| {m['seeds_won']}/{m['num_seeds']} |"
            )
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["", "## Failed trials\n", "| trial | grid point | seed | error | run dir |"]
        lines.append("|---|---|---:|---|---|")
        for r in failed:
            error = str(r.get("error", "")).replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {r['trial']} | {r['grid'] or '-'} | {r['seed']} | {error} "
                f"| `{r.get('run_dir') or '-'}` |"
            )
    return "\n".join(lines) + "\n"
