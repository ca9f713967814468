"""One leaderboard run: a suite's cells and capacity searches, and every output they make.

`run_board(BoardOptions(...))` is what `python -m andes_gym.leaderboard` runs. Every
(policy, workload, seed) cell is one episode; every policy sees the same requests for a
workload and seed (the environment draws the workload from the seed). Registered policies
and exported checkpoints (`.onnx`) act through the same `PolicyAgent`; oracle policies run
with `oracle=True` and are marked on the board.

Outputs in the output directory:
    cells/<workload>__<policy>__<seed>.json   one record per cell (the resume cache)
    results.json      one row per cell: summary metrics, status, error
    episodes.csv      the same rows as CSV
    requests.csv      per-request metrics of every cell
    capacity.json     capacity per (search, policy), with every bisection evaluation
    capacity_points.csv   every evaluated capacity cell
    board.md          ranking tables, capacity table, failed cells, provenance
    plots/*.png       QoE CDFs, QoE against load, token timelines
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from andes_gym.agents.learned import read_metadata
from andes_gym.board.capacity import CapacityOutcome, run_capacity
from andes_gym.board.cells import ENV_IDS, Cell, code_digest, engine_config_files
from andes_gym.board.plan import PolicyEntry, board_cells, choose_policies, policy_entries
from andes_gym.board.plots import write_plots
from andes_gym.board.publish import provenance, publish
from andes_gym.board.report import (
    POINT_FIELDS,
    ROW_FIELDS,
    capacity_markdown,
    capacity_rows,
    failures_markdown,
    lock_out_dir,
    ranking_markdown,
    result_rows,
    write_csv,
    write_json,
    write_requests_csv,
    write_text,
)
from andes_gym.board.runner import CellRunner
from andes_gym.board.suite import (
    ResolvedWorkload,
    Suite,
    load_suite,
    resolve_workloads,
    trace_workload,
)
from andes_gym.scale.ray_boards import ray_backend


@dataclass
class BoardOptions:
    """What to run; the command line fills it (the defaults live here)."""

    suite: str = "smoke"
    """suite name (configs/suites/NAME.yaml) or YAML path"""
    policies: list[str] | None = None
    """policies (registered names, .onnx checkpoints, module:Class); default: the suite's"""
    env: str | None = None
    """environment kind, surrogate or vllm; default: the suite's"""
    trace: list[str] = field(default_factory=list)
    """project-format CSV traces, each run as one more workload"""
    seeds: list[int] | None = None
    """seeds; default: the suite's"""
    workers: int = 1
    """worker processes (surrogate only; the live engine runs cells in this process)"""
    out: str | None = None
    """output directory; default runs/leaderboard/<suite>"""
    force: bool = False
    """re-run cells already done in --out"""
    capacity: bool = True
    """run the suite's capacity searches"""
    plots: bool = True
    """write PNG plots"""
    progress: bool = True
    """show progress bars"""
    publish: str | None = None
    """board file (LEADERBOARD.md) whose section for this suite is replaced"""
    timelines: int = 4
    """sample requests per cell whose token timelines are kept"""
    mp_start: str = "spawn"
    """multiprocessing start method of the workers (spawn or fork)"""
    ray: str | None = None
    """run cells as Ray tasks: "local" starts Ray here, "auto" or HOST:PORT joins a cluster"""
    ray_cpus: int | None = None
    """CPUs of a Ray started here (None: every CPU; the command line passes --workers)"""


@dataclass
class BoardResult:
    """What a run produced (paths and in-memory tables)."""

    out_dir: Path
    rows: list[dict]
    records: list[dict]
    capacity: list[CapacityOutcome]
    capacity_points: list[dict]
    markdown: str
    plots: list[Path]
    num_failed: int
    ran: int
    skipped: int


def _load_groups(
    workloads: list[ResolvedWorkload],
    rows: list[dict],
    capacity_points: list[dict],
    policies: list[PolicyEntry],
) -> dict[str, tuple[str, list[dict]]]:
    """Points of the QoE-against-load plots: sweeps of the ranking tables, capacity searches."""
    oracle = {p.label: p.oracle for p in policies}
    by_name = {w.name: w for w in workloads}
    groups: dict[str, tuple[str, list[dict]]] = {}
    for row in rows:
        w = by_name.get(row["workload"])
        if w is None or w.group is None or row["status"] != "ok":
            continue
        point = {
            "policy": row["policy"],
            "load": w.value,
            "mean_qoe": row["mean_qoe"],
            "oracle": row["oracle"],
        }
        groups.setdefault(w.group, (w.parameter, []))[1].append(point)
    for p in capacity_points:
        if p["status"] != "ok":
            continue
        point = {**p, "oracle": oracle.get(p["policy"], False)}
        groups.setdefault(f"capacity_{p['search']}", (p["parameter"], []))[1].append(point)
    return groups


def _checkpoint_lines(policies: list[PolicyEntry]) -> str:
    """One line per exported checkpoint: file, hash, and what it declares about itself."""
    lines = []
    for p in policies:
        if not p.spec.endswith(".onnx"):
            continue
        try:
            meta = read_metadata(p.spec)
        except Exception as exc:  # noqa: BLE001 (the cells report the load error too)
            lines.append(f"- `{p.label}`: `{p.spec}` could not be read ({exc})")
            continue
        try:
            fs = json.loads(meta.get("andes_gym.feature_spec", "{}"))
            spec = f"{fs.get('name')} v{fs.get('version')}, K={fs.get('k_slots')}"
        except (ValueError, AttributeError):
            spec = "unreadable"
        lines.append(
            f"- `{p.label}`: `{Path(p.spec).name}` (sha256 {p.digest}), trained on "
            f"`{meta.get('andes_gym.env_id', '?')}` ({meta.get('andes_gym.env_version', '?')}), "
            f"{meta.get('andes_gym.algo', '?')}, {meta.get('andes_gym.num_timesteps', '?')} steps, "
            f"oracle features: {'yes' if p.oracle else 'no'}, feature spec {spec}"
        )
    return "\n".join(lines) + "\n" if lines else ""


def board_markdown(
    suite: Suite,
    env_kind: str,
    env_kwargs: dict,
    policies: list[PolicyEntry],
    seeds: list[int],
    rows: list[dict],
    workload_order: list[str],
    capacity: list[CapacityOutcome],
    capacity_points: list[dict],
    prov: dict[str, str],
    plots: list[Path],
    heading: str = "##",
) -> str:
    """The board of one run: provenance, ranking tables, capacity, failures, plots."""
    sub = heading + "#"
    parts = [f"{heading} Suite `{suite.name}`\n"]
    if suite.description:
        parts.append(suite.description + "\n")
    kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(env_kwargs.items())) or "defaults"
    parts.append(
        "\n".join(
            [
                f"- generated: {prov['date']}",
                f"- machine: {prov['machine']}",
                f"- commit: `{prov['commit']}`",
                f"- command: `{prov['command']}`",
                *([f"- **warning: {prov['warning']}**"] if "warning" in prov else []),
                f"- environment: `{ENV_IDS[env_kind]}` ({kwargs})",
                f"- policies: {', '.join(p.label for p in policies)}; seeds: "
                f"{', '.join(map(str, seeds))}",
            ]
        )
        + "\n"
    )
    checkpoints = _checkpoint_lines(policies)
    if checkpoints:
        parts.append("Learned entries (from their checkpoints' metadata):\n\n" + checkpoints)
    parts.append(f"{sub} Ranking per workload\n")
    parts.append(ranking_markdown(rows, workload_order).replace("### ", sub + "# "))
    if capacity:
        parts.append(f"{sub} Capacity\n")
        parts.append(
            "Highest load at which the policy keeps the mean QoE (mean over seeds) at or "
            "above the threshold, found by bisection.\n"
        )
        parts.append(capacity_markdown(capacity))
    failures = failures_markdown(rows, capacity_points)
    if failures:
        parts.append(failures.replace("### ", sub + " "))
    if plots:
        parts.append(
            f"Plots ({len(plots)} PNG files) are in the run's `plots/` directory: "
            "`qoe_cdf__*`, `qoe_vs_load__*`, `timeline__*`.\n"
        )
    return "\n".join(parts)


def _cells_for(
    suite: Suite, opts: BoardOptions, env_kind: str, env_kwargs: dict, code: str
) -> tuple[list[ResolvedWorkload], list[PolicyEntry], list[int], list[Cell]]:
    workloads = resolve_workloads(suite) + [trace_workload(suite, t) for t in opts.trace]
    names = [w.name for w in workloads]
    if len(set(names)) != len(names):
        raise ValueError(f"workload names must be unique, got {names}")
    policies = policy_entries(choose_policies(opts.policies, suite.policies))
    seeds = list(opts.seeds if opts.seeds is not None else suite.seeds)
    cells = board_cells(workloads, policies, seeds, env_kind, env_kwargs, opts.timelines, code)
    return workloads, policies, seeds, cells


def run_board(opts: BoardOptions, argv: list[str] | None = None, engine_handle=None) -> BoardResult:
    """Runs a suite and writes every output, holding a lock on the output directory.

    Arguments and result as `_run_board`.

    Raises:
        BoardLockedError: Another board is writing into the same output directory.
    """
    out = Path(opts.out or Path("runs") / "leaderboard" / load_suite(opts.suite).name)
    out.mkdir(parents=True, exist_ok=True)
    with lock_out_dir(out):
        return _run_board(opts, argv, engine_handle)


def _run_board(
    opts: BoardOptions, argv: list[str] | None = None, engine_handle=None
) -> BoardResult:
    """Runs a suite and writes every output (listed in the module docstring).

    Args:
        opts: What to run.
        argv: The command line (for the provenance); default `sys.argv[1:]`.
        engine_handle: A live engine to share with `--env vllm` (its config then wins
            over the suite's `engine`); None starts one.

    Returns:
        The result.
    """
    suite = load_suite(opts.suite)
    env_kind = opts.env or suite.env.kind
    env_kwargs = suite.env.kwargs_for(env_kind)
    workers = opts.workers
    if env_kind == "vllm" and workers > 1:
        print(
            f"--env vllm runs every cell in this process on one engine; ignoring --workers "
            f"{workers}",
            file=sys.stderr,
        )
        workers = 1
    out = Path(opts.out or Path("runs") / "leaderboard" / suite.name)
    out.mkdir(parents=True, exist_ok=True)
    engine_files = engine_config_files(env_kind, env_kwargs)
    code = code_digest(engine_files)
    workloads, policies, seeds, cells = _cells_for(suite, opts, env_kind, env_kwargs, code)
    backend = None
    if opts.ray is not None:
        backend = ray_backend(opts.ray, opts.ray_cpus, env_kind)
    runner = CellRunner(
        out / "cells", workers, opts.force, opts.progress, opts.mp_start, engine_handle, backend
    )
    records = runner.run(cells, desc=f"{suite.name} cells")
    rows = result_rows(records)

    outcomes: list[CapacityOutcome] = []
    points: list[dict] = []
    if opts.capacity and suite.capacity:
        outcomes, points = run_capacity(
            suite,
            suite.capacity,
            policies,
            lambda c, d: runner.run(c, desc=d),
            env_kind,
            env_kwargs,
            seeds=opts.seeds,
            restrict_policies=opts.policies is not None,
            code=code,
        )

    write_json(out / "results.json", rows)
    write_csv(out / "episodes.csv", rows, ROW_FIELDS)
    write_requests_csv(out / "requests.csv", records)
    write_json(out / "capacity.json", capacity_rows(outcomes))
    write_csv(out / "capacity_points.csv", points, POINT_FIELDS)

    order = [w.name for w in workloads]
    plots = []
    if opts.plots:
        groups = _load_groups(workloads, rows, points, policies)
        plots = write_plots(out / "plots", records, order, groups)
    prov = provenance(argv)
    if code_digest(engine_files) != code:
        # Cells of one run must come from one version of the environments and policies.
        prov["warning"] = (
            "the andes_gym code changed while this board ran: its cells mix code versions; "
            "re-run to get a consistent board"
        )
        print(f"warning: {prov['warning']}", file=sys.stderr)
    markdown = board_markdown(
        suite, env_kind, env_kwargs, policies, seeds, rows, order, outcomes, points, prov, plots
    )
    write_text(out / "board.md", f"# Leaderboard\n\n{markdown}")
    if opts.publish:
        publish(Path(opts.publish), suite.name, markdown)
    num_failed = sum(r["status"] != "ok" for r in rows) + sum(
        o.censored == "failed" for o in outcomes
    )
    return BoardResult(
        out,
        rows,
        records,
        outcomes,
        points,
        markdown,
        plots,
        num_failed,
        runner.stats.ran,
        runner.stats.skipped,
    )
