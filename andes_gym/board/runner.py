"""Runs leaderboard cells: in worker processes on the surrogate, in one process on the live engine.

Each finished cell is written to `<cells_dir>/<workload>__<policy>__<seed>.json` as soon as
it completes, so an interrupted run resumes where it stopped: a cell whose file holds an
OK result with the same spec hash (the cell, and the code digest of the environments,
engines and policies) is not run again unless `force` is set. Failed cells are
always re-run (their error is recorded again if it persists).

Results come back sorted by (workload, policy, seed) whatever the number of workers or the
order in which cells finished.

Where surrogate cells run is the runner's backend: this process (one worker), a local
process pool, or any `CellBackend` (the Ray backend of `andes_gym.scale.ray_boards`). A
backend only schedules: skip-done, cell files, failure records and the merge stay here.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from andes_gym.board.cells import (
    Cell,
    failed_record,
    read_done_record,
    run_cell,
    write_record,
)
from andes_gym.engine_bridge.engine import create_engine, release_engine
from andes_gym.engine_bridge.runtime import ENV_SCHEDULER


@dataclass
class RunStats:
    """Counts of one `run_cells` call.

    Attributes:
        ran: Cells run now.
        skipped: Cells found done in the cells directory.
        failed: Cells (run now) that failed.
    """

    ran: int = 0
    skipped: int = 0
    failed: int = 0

    def add(self, other: RunStats) -> None:
        self.ran += other.ran
        self.skipped += other.skipped
        self.failed += other.failed


class CellBackend(Protocol):
    """Runs surrogate cells somewhere else (e.g. as Ray tasks).

    `run` must call `done(cell, record)` exactly once per cell, with `run_cell`'s record
    or, when the cell could not run, a `failed_record`; it may do so in any order.
    """

    def run(self, cells: Sequence[Cell], done: Callable[[Cell, dict], None]) -> None: ...


@dataclass
class CellRunner:
    """Runs batches of cells with the chosen parallelism, caching results on disk.

    Args:
        cells_dir: Directory of the per-cell JSON files.
        workers: Worker processes on the surrogate (1 runs in this process). The live
            engine always runs in this process, one cell after another.
        force: Re-run cells even when a cached OK result exists.
        progress: Show a tqdm progress bar (on stderr).
        mp_start: Multiprocessing start method of the workers ("spawn" or "fork").
        engine_handle: A live engine to share (from `create_engine` with the environment's
            scheduler hook); None starts one for the run and releases it afterwards.
        backend: Runs the cells instead of this process and its `workers` (e.g. on a Ray
            cluster); a backend that cannot host the live engine refuses its cells.
    """

    cells_dir: Path
    workers: int = 1
    force: bool = False
    progress: bool = True
    mp_start: str = "spawn"
    engine_handle: Any = None
    backend: CellBackend | None = None
    stats: RunStats = field(default_factory=RunStats)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        self.cells_dir = Path(self.cells_dir)

    def run(self, cells: Sequence[Cell], desc: str = "cells") -> list[dict]:
        """Runs (or loads) every cell and returns their records sorted by workload, policy, seed.

        Raises:
            ValueError: When two cells share a (workload, policy, seed) key.
        """
        keys = [c.key for c in cells]
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"duplicate cells (workload, policy, seed): {dupes}")
        records: dict[tuple, dict] = {}
        todo: list[Cell] = []
        for cell in sorted(cells, key=lambda c: c.key):
            cached = None if self.force else read_done_record(self._path(cell), cell)
            if cached is None:
                todo.append(cell)
            else:
                records[cell.key] = cached
        stats = RunStats(skipped=len(records))
        if todo:
            bar = _progress_bar(len(todo), desc, self.progress)

            def done(cell: Cell, record: dict) -> None:
                write_record(self._path(cell), record)
                records[cell.key] = record
                stats.ran += 1
                stats.failed += record["status"] != "ok"
                bar.update(1)
                bar.set_postfix(failed=stats.failed, refresh=False)

            if self.backend is not None:
                self.backend.run(todo, done)
            elif todo[0].env_kind == "vllm":
                _run_live(todo, done, self.engine_handle)
            elif self.workers == 1 or len(todo) == 1:
                for cell in todo:
                    done(cell, run_cell(cell))
            else:
                _run_pool(todo, done, self.workers, self.mp_start)
            bar.close()
        self.stats.add(stats)
        return [records[key] for key in sorted(records)]

    def _path(self, cell: Cell) -> Path:
        return self.cells_dir / cell.file_name()


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    # disable=None: shown on a terminal, silent when stderr is a file or a pipe.
    return tqdm(
        total=total, desc=desc, unit="cell", disable=None if enabled else True, file=sys.stderr
    )


def _run_pool(
    cells: list[Cell], done: Callable[[Cell, dict], None], workers: int, mp_start: str
) -> None:
    context = multiprocessing.get_context(mp_start)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures: dict[Future, Cell] = {pool.submit(run_cell, cell): cell for cell in cells}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # noqa: BLE001 (a dead worker fails its cells, visibly)
                record = failed_record(cell, exc)
            done(cell, record)


def _run_live(cells: list[Cell], done: Callable[[Cell, dict], None], handle: Any = None) -> None:
    """Runs live-engine cells one after another on one shared engine.

    Starting vLLM takes seconds and only one engine may run per process, so the engine is
    created once (with the environment's scheduler hook), unless `handle` is given, and
    every cell's environment receives it as `engine_handle` (closing such an environment
    leaves the engine up).
    """
    owned = handle is None
    if owned:
        try:
            handle = create_engine(
                cells[0].env_kwargs.get("engine", "cpu_live"), scheduler_cls=ENV_SCHEDULER
            )
        except Exception as exc:  # noqa: BLE001 (every cell fails with the reason)
            for cell in cells:
                done(cell, failed_record(cell, exc))
            return
    try:
        for cell in cells:
            done(cell, run_cell(cell, engine_handle=handle))
    finally:
        if owned:
            release_engine(handle)
