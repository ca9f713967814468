"""The whole `paper` suite (every seed, capacity searches on) on the local pool and on Ray.

Complements `bench_ray.py`, which times a seed-0 subset without capacity searches: this
runs the full board twice, once per runner with 2 CPUs each, and checks that both give the
same `results.json` and `capacity.json` (wall-clock fields aside). Takes about 15 minutes
on 2 cores.

Usage:
    python benchmarks/bench_ray_paper.py
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _report import header, write_section

from andes_gym.board.cells import TIMING_FIELDS
from andes_gym.board.leaderboard import BoardOptions, run_board

CPUS = 2


def _timed(out: Path, ray: str | None) -> float:
    opts = BoardOptions(
        suite="paper", out=str(out), progress=False, plots=False, workers=CPUS, ray=ray
    )
    start = time.perf_counter()
    result = run_board(opts)
    wall = time.perf_counter() - start
    failed = [r for r in result.rows if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"benchmark cells failed: {failed[0]['error']}")
    return wall


def _rows(path: Path) -> list:
    rows = json.loads(path.read_text())
    if isinstance(rows, dict):
        return rows
    return [{k: v for k, v in row.items() if k not in TIMING_FIELDS} for row in rows]


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pool = _timed(root / "pool", None)
        ray = _timed(root / "ray", "local")
        cells = len(json.loads((root / "pool" / "results.json").read_text()))
        same_results = _rows(root / "pool" / "results.json") == _rows(root / "ray" / "results.json")
        same_capacity = (root / "pool" / "capacity.json").read_bytes() == (
            root / "ray" / "capacity.json"
        ).read_bytes()
    lines = [
        *header("The whole paper suite: local pool vs Ray"),
        f"Load average (1 min) before: {load_before:.2f}; after: {os.getloadavg()[0]:.2f}.",
        "",
        "| runner (2 CPUs) | wall | wall / local |",
        "|---|---:|---:|",
        f"| local pool | {pool / 60:.1f} min | 1.00 |",
        f"| Ray (local instance, start-up included) | {ray / 60:.1f} min | {ray / pool:.2f} |",
        "",
        f"{cells} board cells plus the capacity searches' probes. Same results.json (timing "
        f"fields aside): {'yes' if same_results else 'NO'}; same capacity.json: "
        f"{'yes' if same_capacity else 'NO'}.",
    ]
    write_section("ray_paper", lines)


if __name__ == "__main__":
    main()
