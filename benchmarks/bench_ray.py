"""Boards and sweeps on Ray against the local process pool, and a cluster model on paper.

    nice python benchmarks/bench_ray.py            # full run (about 10-20 minutes on 2 cores)
    python benchmarks/bench_ray.py --quick         # a small check of the script

Writes benchmarks/results/ray.md (and prints it).

Parts, each measured side by side in one run on this machine (2 workers each way):
1. Ray start-up (`ray.init` of a local 2-CPU instance).
2. Overhead per cell: a board of trivially short cells (8-request episodes) in this process,
   on the local pool (2 spawned workers) and on Ray (2 CPUs; first with fresh workers,
   then again with warm ones, `force`).
3. A named subset of the paper suite (`paper`, seed 0, no capacity searches: 54 cells of
   800 requests; `--quick`: fcfs only, 9 cells): local pool vs Ray, wall time and the
   cells' own time.
4. A training sweep's cost: the overhead of a Tune trial (a 2-trial smoke sweep, in
   process vs on Tune) and the quickstart trial time, from a training run at a tenth of the
   quickstart's steps, scaled up.
5. The model: the paper suite (board cells and capacity rounds) and a 30-trial quickstart
   sweep on 8 and 64 nodes of 16 CPUs, from the measured per-cell and per-trial costs.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _report import header, write_section

from andes_gym.board.bisection import Bisection
from andes_gym.board.leaderboard import BoardOptions, run_board
from andes_gym.board.plan import board_cells, policy_entries
from andes_gym.board.suite import load_suite, resolve_workloads

CPUS = 2
NODES = (8, 64)
CPUS_PER_NODE = 16
SWEEP_TRIALS = 30
TINY_CELLS = 40
# The quickstart's step counts (configs/train/quickstart.yaml) and the tenth-scale run.
QUICKSTART = {"total_timesteps": 40000, "bc.timesteps": 12000, "bc.dagger_timesteps": 6000}
SCALE = 10


def _load() -> float:
    return os.getloadavg()[0]


def _timed_board(opts: BoardOptions) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    result = run_board(opts)
    wall = time.perf_counter() - start
    failed = [r for r in result.rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"benchmark cells failed: {failed[0]['error']}")
    return wall, result.records


def _cell_times(records: list[dict]) -> list[float]:
    return [r["summary"]["wall_s"] for r in records]


def _tiny_suite(path: Path, num_cells: int) -> Path:
    suite = {
        "name": "tiny_cells",
        "env": {
            "kind": "surrogate",
            "kwargs": {"k_slots": 64},
            "surrogate": {"engine": "cpu_tiny"},
        },
        "policies": ["fcfs"],
        "seeds": list(range(num_cells)),
        "workloads": [
            {"preset": "steady_poisson_cpu", "name": "tiny", "overrides": {"num_requests": 8}}
        ],
    }
    path.write_text(yaml.safe_dump(suite))
    return path


def _opts(suite: str, out: Path, **kw) -> BoardOptions:
    base = {"suite": suite, "out": str(out), "progress": False, "plots": False, "capacity": False}
    base.update(kw)
    return BoardOptions(**base)


def bench_overhead(tmp: Path, num_cells: int) -> dict:
    """Part 2: per-cell wall on trivially short cells, in process, local pool, Ray."""
    suite = str(_tiny_suite(tmp / "tiny.yaml", num_cells))
    serial, recs = _timed_board(_opts(suite, tmp / "tiny_serial", workers=1))
    pool, _ = _timed_board(_opts(suite, tmp / "tiny_pool", workers=CPUS))
    ray_cold, _ = _timed_board(_opts(suite, tmp / "tiny_ray", ray="local"))
    ray_warm, _ = _timed_board(_opts(suite, tmp / "tiny_ray", ray="local", force=True))
    return {
        "dispatch": _dispatch_latency(suite),
        "cells": num_cells,
        "cell_s": sum(_cell_times(recs)) / num_cells,
        "serial": serial,
        "pool": pool,
        "ray_cold": ray_cold,
        "ray_warm": ray_warm,
    }


def _dispatch_latency(suite: str, repeats: int = 5) -> float:
    """Median wall of a one-cell batch on warm Ray workers, minus the cell's own time."""
    from andes_gym.board.plan import make_cell
    from andes_gym.scale.ray_boards import RayCellBackend

    loaded = load_suite(suite)
    (policy,) = policy_entries(["fcfs"])
    cell = make_cell(
        resolve_workloads(loaded)[0], policy, 0, "surrogate", loaded.env.kwargs_for("surrogate")
    )
    backend = RayCellBackend()
    latencies = []
    for _ in range(repeats):
        got: list[dict] = []
        start = time.perf_counter()
        backend.run([cell], lambda _cell, record, got=got: got.append(record))
        latencies.append(time.perf_counter() - start - got[0]["summary"]["wall_s"])
    return sorted(latencies)[repeats // 2]


def bench_paper_subset(tmp: Path, quick: bool) -> dict:
    """Part 3: a subset of the paper suite on the local pool and on Ray."""
    kw = {"seeds": [0]}
    if quick:
        kw["policies"] = ["fcfs"]
    pool, pool_recs = _timed_board(_opts("paper", tmp / "paper_pool", workers=CPUS, **kw))
    ray, ray_recs = _timed_board(_opts("paper", tmp / "paper_ray", ray="local", **kw))
    times = _cell_times(pool_recs) + _cell_times(ray_recs)
    return {
        "subset": "paper, seed 0, " + ("policy fcfs, " if quick else "") + "no capacity searches",
        "cells": len(pool_recs),
        "pool": pool,
        "ray": ray,
        "cell_mean": sum(times) / len(times),
        "cell_max": max(times),
        "pool_cell_sum": sum(_cell_times(pool_recs)),
        "ray_cell_sum": sum(_cell_times(ray_recs)),
    }


def bench_tune_overhead(tmp: Path) -> dict:
    """Part 4a: a 2-trial smoke sweep in process and on Tune (both trials at once)."""
    from andes_gym.scale.sweep import SweepSpec, run_sweep

    def sweep(name: str, ray: str | None) -> tuple[float, list[dict]]:
        spec = SweepSpec(
            config="smoke",
            seeds=[0, 1],
            overrides=["total_timesteps=128"],
            out=str(tmp / name),
            ray=ray,
            cpus_per_trial=1,
        )
        start = time.perf_counter()
        result = run_sweep(spec)
        return time.perf_counter() - start, result.rows

    local_wall, local_rows = sweep("sweep_local", None)
    tune_wall, tune_rows = sweep("sweep_tune", "local")
    trial_max = max(r["wall_s"] for r in tune_rows)
    return {
        "local": local_wall,
        "local_trials": [r["wall_s"] for r in local_rows],
        "tune": tune_wall,
        "tune_trials": [r["wall_s"] for r in tune_rows],
        "overhead": tune_wall - trial_max,
    }


def bench_trial(tmp: Path, scale: int) -> dict:
    """Part 4b: the quickstart at 1/scale of its steps, in a subprocess with 2 CPUs."""
    sets = {k: v // scale for k, v in QUICKSTART.items()}
    argv = [sys.executable, "-m", "andes_gym.train", "--config", "quickstart"]
    for key, value in {**sets, "run_root": str(tmp / "trial"), "progress_bar": "false"}.items():
        argv += ["--set", f"{key}={value}"]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"training failed:\n{proc.stderr[-2000:]}")
    evaluation = _seconds(r"evaluation took (\d+) s", proc.stdout)
    training = _seconds(r"training finished in (\d+) s", proc.stdout)
    found = evaluation is not None and training is not None
    if found:
        # Imitation and RL scale with the steps; start-up, export and evaluation do not.
        fixed = wall - training - evaluation
        scaled = fixed + training * scale + evaluation
    else:
        fixed, training, evaluation, scaled = 0.0, wall, 0.0, wall * scale
    return {
        "steps": sets,
        "wall": wall,
        "train": training,
        "eval": evaluation,
        "fixed": fixed,
        "phases_found": found,
        "scale": scale,
        "scaled": scaled,
    }


def _seconds(pattern: str, text: str) -> float | None:
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None


def paper_phases() -> list[int]:
    """Cells per batch of the full paper suite: the board, then each capacity round."""
    suite = load_suite("paper")
    policies = policy_entries(suite.policies)
    board = board_cells(
        resolve_workloads(suite), policies, list(suite.seeds), "surrogate", {}, 0, ""
    )
    phases = [len(board)]
    searches = []
    for spec in suite.capacity:
        seeds = spec.seeds or suite.seeds
        searches.append((Bisection(spec.low, spec.high, spec.tolerance), len(seeds)))
    # Upper bound: every search runs to its tolerance (a censored one stops after round 1).
    while any(not b.done for b, _ in searches):
        cells = 0
        for b, num_seeds in searches:
            if b.done:
                continue
            pending = b.pending()
            cells += len(pending) * num_seeds * len(policies)
            # Walk the bracket down the middle: the number of rounds is the same either way.
            b.update({x: 1.0 if x == pending[0] else 0.0 for x in pending})
        phases.append(cells)
    return phases


def model_board(phases: list[int], slots: int, cell_s: float, cell_max: float, o: float, d: float):
    """Wall time of batches run one after another on `slots` CPUs.

    Each batch: ceil(cells / slots) waves of (mean cell + per-cell overhead), at least its
    longest cell, plus a per-batch dispatch latency `d`.
    """
    total = 0.0
    for n in phases:
        total += max(cell_max, math.ceil(n / slots) * (cell_s + o)) + d
    return total


def model_simple(phases: list[int], slots: int, cell_s: float, o: float) -> float:
    return sum(phases) / slots * (cell_s + o)


def _fmt_s(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small check of the script")
    args = parser.parse_args()
    from andes_gym.scale.cluster import RayUnavailableError, require_ray

    try:
        require_ray("benchmarks/bench_ray.py")
    except RayUnavailableError as exc:
        sys.exit(f"error: {exc}")
    import ray

    loads = [_load()]
    with tempfile.TemporaryDirectory(prefix="bench_ray_") as name:
        tmp = Path(name)
        start = time.perf_counter()
        ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        try:
            over = bench_overhead(tmp, 10 if args.quick else TINY_CELLS)
            loads.append(_load())
            paper = bench_paper_subset(tmp, args.quick)
            loads.append(_load())
            tune_cost = bench_tune_overhead(tmp)
            loads.append(_load())
        finally:
            ray.shutdown()
        trial = bench_trial(tmp, 40 if args.quick else SCALE)
        loads.append(_load())

    n = over["cells"]
    ray_per_cell = (over["ray_warm"] - over["pool"]) / n
    ideal = over["serial"] / CPUS
    o = max(0.0, (over["ray_warm"] - ideal) / n * CPUS)  # CPU-seconds per cell spent on Ray
    d = over["dispatch"]
    phases = paper_phases()
    total_cells = sum(phases)
    lines = header("Boards and sweeps on Ray vs the local process pool")
    cores = os.cpu_count() or 1
    # The benchmark itself keeps CPUS cores busy; more than that is other jobs.
    loaded = loads[0] > 0.5 or max(loads) > max(cores, CPUS) + 0.5
    load_note = ", ".join(f"{x:.1f}" for x in loads[1:])
    lines += [
        f"Load average (1 min) before the benchmark: {loads[0]:.1f}; after each part: "
        f"{load_note} (the benchmark itself keeps {CPUS} cores busy)."
        + (
            f" **The machine was loaded by other jobs** (up to {max(loads):.1f} on {cores} "
            "cores): absolute times are inflated; the side-by-side ratios are the figures to "
            "read."
            if loaded
            else " The machine was otherwise quiet."
        ),
        "",
        "### 1. Ray start-up",
        "",
        f"`ray.init(num_cpus={CPUS})` of a local instance: {ray_start:.1f} s (once per command).",
        "",
        f"### 2. Overhead per cell ({n} trivially short cells: 8-request episodes, fcfs)",
        "",
        "| run | wall s | per cell ms |",
        "|---|---:|---:|",
        f"| in this process, serial (cell time {over['cell_s'] * 1e3:.1f} ms) "
        f"| {over['serial']:.2f} | {over['serial'] / n * 1e3:.0f} |",
        f"| local pool, {CPUS} spawned workers | {over['pool']:.2f} | {over['pool'] / n * 1e3:.0f} |",
        f"| Ray, {CPUS} CPUs, fresh workers | {over['ray_cold']:.2f} "
        f"| {over['ray_cold'] / n * 1e3:.0f} |",
        f"| Ray, {CPUS} CPUs, warm workers | {over['ray_warm']:.2f} "
        f"| {over['ray_warm'] / n * 1e3:.0f} |",
        "",
        f"Ray (warm) minus the local pool: {ray_per_cell * 1e3:+.0f} ms per cell of wall time "
        f"on {CPUS} CPUs; the CPU time a Ray task adds to a cell beyond the serial cell "
        f"({o * 1e3:.0f} ms) is the per-cell overhead `o` of the model. The local pool's row "
        "includes spawning its workers (each run spawns a fresh pool). A one-cell batch on "
        f"warm Ray workers returns {over['dispatch'] * 1e3:.0f} ms after its cell's own time: "
        "the per-batch dispatch latency `d`.",
        "",
        f"### 3. Paper suite subset ({paper['subset']}: {paper['cells']} cells)",
        "",
        "| runner | wall | cells' own time (sum) | wall / local |",
        "|---|---:|---:|---:|",
        f"| local pool, {CPUS} workers | {_fmt_s(paper['pool'])} | {_fmt_s(paper['pool_cell_sum'])} "
        "| 1.00 |",
        f"| Ray, {CPUS} CPUs | {_fmt_s(paper['ray'])} | {_fmt_s(paper['ray_cell_sum'])} "
        f"| {paper['ray'] / paper['pool']:.2f} |",
        "",
        f"Mean cell {paper['cell_mean']:.2f} s, longest {paper['cell_max']:.2f} s (both runs). "
        "The full paper suite (162 board cells and the capacity rounds) was not run twice: at "
        f"this cost it is {_fmt_s(model_board(phases, CPUS, paper['cell_mean'], paper['cell_max'], 0, 0))}"
        " per runner on this machine by the model below.",
        "",
        "### 4. Training sweeps",
        "",
        f"A 2-trial smoke sweep (128 steps each): in this process {tune_cost['local']:.1f} s "
        f"(trials {', '.join(f'{t:.1f}' for t in tune_cost['local_trials'])} s, one after "
        f"another), on Tune with both trials at once {tune_cost['tune']:.1f} s (trials "
        f"{', '.join(f'{t:.1f}' for t in tune_cost['tune_trials'])} s inside their actors): "
        f"Tune's overhead per wave of trials {tune_cost['overhead']:.1f} s (trial actors "
        "start, import torch, report).",
        "",
        f"Quickstart trial at 1/{trial['scale']} of its steps "
        f"({', '.join(f'{k}={v}' for k, v in trial['steps'].items())}; final evaluation in "
        f"full): {trial['wall']:.0f} s"
        + (
            f": training (imitation + PPO) {trial['train']:.0f} s, final evaluation "
            f"{trial['eval']:.0f} s, the rest (start-up, export) {trial['fixed']:.0f} s. "
            f"Scaled to the quickstart (only training scales): {trial['fixed']:.0f} + "
            f"{trial['train']:.0f} x {trial['scale']} + {trial['eval']:.0f} = "
            if trial["phases_found"]
            else f" (the training did not print its phases; all of it scaled): {trial['wall']:.0f}"
            f" x {trial['scale']} = "
        )
        + f"**{_fmt_s(trial['scaled'])}** per trial on 2 CPUs (the quickstart's own "
        "measurement: 7 min 10 s on 2 quiet cores, configs/train/quickstart.yaml).",
        "",
        "### 5. A cluster on paper",
        "",
        f"Nodes of {CPUS_PER_NODE} CPUs as fast as this machine's (under its load above). "
        f"Paper suite: batches of {', '.join(map(str, phases))} cells ({total_cells} in all: "
        "the board, then the capacity rounds, each round waiting for the previous one; "
        "searches run to their tolerance, an upper bound).",
        "",
        "- simple model: `cells / (nodes x cpus) x (cell + o)`",
        "- round model: per batch `max(longest cell, ceil(cells / (nodes x cpus)) x (cell + o)) "
        "+ d`, summed over the board and the capacity rounds (an upper bound: each round is "
        "taken to last as long as the longest cell measured)",
        f"- cell = {paper['cell_mean']:.2f} s (mean, part 3), longest cell = "
        f"{paper['cell_max']:.2f} s, o = {o * 1e3:.0f} ms, d = {d * 1e3:.0f} ms (part 2), "
        f"plus Ray start-up or connection ({ray_start:.1f} s)",
        f"- sweep: {SWEEP_TRIALS} quickstart trials of 2 CPUs each: `ceil(trials / (nodes x "
        f"cpus / 2)) x (trial + Tune overhead)`, trial = {_fmt_s(trial['scaled'])}, overhead = "
        f"{tune_cost['overhead']:.1f} s",
        "",
        "| where | CPUs | paper suite (simple) | paper suite (rounds) | 30-trial sweep |",
        "|---|---:|---:|---:|---:|",
    ]
    for nodes, cpus in ((1, CPUS), *((n_, CPUS_PER_NODE) for n_ in NODES)):
        slots = nodes * cpus
        simple = model_simple(phases, slots, paper["cell_mean"], o) + ray_start
        rounds = model_board(phases, slots, paper["cell_mean"], paper["cell_max"], o, d) + ray_start
        waves = math.ceil(SWEEP_TRIALS / max(1, slots // 2))
        sweep = waves * (trial["scaled"] + tune_cost["overhead"]) + ray_start
        where = "this machine" if nodes == 1 else f"{nodes} nodes"
        lines.append(
            f"| {where} | {slots} | {_fmt_s(simple)} | {_fmt_s(rounds)} | {_fmt_s(sweep)} |"
        )
    lines += [
        "",
        "Reading: past a few hundred CPUs the paper suite is bound by its sequential capacity "
        "rounds (each as long as its slowest cell), not by the CPU count; a 30-trial sweep "
        "fits in one wave on 8 nodes already, so 64 nodes do not shorten it (more trials or "
        "seeds would use them).",
    ]
    write_section("ray", lines)


if __name__ == "__main__":
    main()
