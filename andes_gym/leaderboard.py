"""Leaderboards: baselines and learned policies on standard suites, one command.

    python -m andes_gym.leaderboard --suite paper --workers 2 --out runs/leaderboard/paper

Runs a suite's (policy, workload, seed) cells and capacity searches with
`andes_gym.board.leaderboard.run_board` and writes the board into `--out` (`board.md`,
`results.json`, CSVs, plots; the list is in that module's docstring).

Exit status: 0 when every cell succeeded, 2 when some failed (they are still reported),
1 on a usage error.
"""

from __future__ import annotations

import argparse
import sys

from andes_gym.board.leaderboard import BoardOptions, run_board
from andes_gym.board.report import BoardLockedError
from andes_gym.board.suite import ENV_KINDS


def _split(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [v for item in values for v in item.split(",") if v]


def parse_args(argv: list[str] | None = None) -> BoardOptions:
    """Parses the command line into `BoardOptions`."""
    d = BoardOptions()
    p = argparse.ArgumentParser(
        prog="python -m andes_gym.leaderboard",
        description="Rank scheduling policies by QoE on a suite of workloads.",
    )
    p.add_argument("--suite", default=d.suite, help="suite name (configs/suites/NAME.yaml) or path")
    p.add_argument("--policies", nargs="+", help="registered names, .onnx paths or module:Class")
    p.add_argument("--env", choices=ENV_KINDS, help="environment kind (default: the suite's)")
    p.add_argument("--trace", nargs="+", default=[], help="project-format CSV trace(s)")
    p.add_argument("--seeds", nargs="+", help="seeds (default: the suite's), e.g. 0 1 2 or 0,1,2")
    p.add_argument("--workers", type=int, help=f"worker processes (default {d.workers})")
    p.add_argument("--out", help="output directory (default runs/leaderboard/<suite>)")
    p.add_argument("--force", action="store_true", help="re-run cells already done in --out")
    p.add_argument("--no-capacity", dest="capacity", action="store_false")
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--publish", help="replace this suite's section of a board file")
    p.add_argument("--timelines", type=int, default=d.timelines, help="sample requests per cell")
    p.add_argument("--mp-start", choices=("spawn", "fork"), default=d.mp_start)
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run cells and capacity probes as Ray tasks: alone, on a local Ray with --workers "
        "CPUs (default all); 'auto' or HOST:PORT joins a running cluster (docs/SCALE_OUT.md)",
    )
    ns = p.parse_args(argv)
    seeds = _split(ns.seeds)
    try:
        seed_list = None if seeds is None else [int(s) for s in seeds]
    except ValueError:
        p.error(f"--seeds must be integers, got {ns.seeds}")
    if ns.workers is not None and ns.workers < 1:
        p.error(f"--workers must be >= 1, got {ns.workers}")
    return BoardOptions(
        suite=ns.suite,
        policies=_split(ns.policies),
        env=ns.env,
        trace=ns.trace,
        seeds=seed_list,
        workers=d.workers if ns.workers is None else ns.workers,
        out=ns.out,
        force=ns.force,
        capacity=ns.capacity,
        plots=ns.plots,
        progress=ns.progress,
        publish=ns.publish,
        timelines=ns.timelines,
        mp_start=ns.mp_start,
        ray=ns.ray,
        ray_cpus=ns.workers,
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    opts = parse_args(argv)
    try:
        result = run_board(opts, argv)
    except (FileNotFoundError, ValueError, BoardLockedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = f", {result.num_failed} FAILED" if result.num_failed else ""
    print(
        f"{len(result.rows)} board cells, {len(result.capacity_points)} capacity cells "
        f"({result.ran} run now, {result.skipped} reused{failed}); "
        f"board: {result.out_dir / 'board.md'}"
    )
    for row in result.rows:
        if row["status"] != "ok":
            print(
                f"FAILED {row['workload']} / {row['policy']} / seed {row['seed']}: {row['error']}",
                file=sys.stderr,
            )
    return 2 if result.num_failed else 0


if __name__ == "__main__":
    sys.exit(main())
