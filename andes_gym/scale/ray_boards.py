"""Leaderboard cells as Ray tasks: the `CellRunner` backend behind `leaderboard --ray`.

The backend only schedules. Each cell runs `andes_gym.board.cells.run_cell` in a Ray
worker (one CPU per task) and its record comes back to the driver, where `CellRunner`
writes the cell file, counts it and merges the records in (workload, policy, seed) order,
exactly as with the local process pool. Skip-done, failed-cell records and capacity
rounds (each round's probes are one batch of cells) are therefore the runner's, unchanged.

What Ray adds is failure handling of its own: a task whose worker process or node dies is
retried by Ray (`max_retries`); when the retries are spent, or the task fails for another
reason (e.g. `andes_gym` cannot be imported on a node), the cell gets a failed record
naming the Ray error, and the other cells go on.

Live-engine cells (`--env vllm`) are refused: a vLLM engine takes a whole machine and
seconds to start, and the live board runs its cells one after another on one engine in the
driver process (see `andes_gym.board.runner`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from andes_gym.board.cells import Cell, failed_record, run_cell
from andes_gym.scale.cluster import RayConnection, describe, require_ray

LIVE_ENGINE_REFUSAL = (
    "--ray runs surrogate cells only: live-engine (--env vllm) cells share one vLLM engine "
    "in this process, one after another; run the live board without --ray"
)
# Longest Ray error kept in a failed cell's record (Ray's errors carry remote tracebacks).
_MAX_ERROR_CHARS = 600


@functools.cache
def _remote_run_cell(max_retries: int):
    """`run_cell` as a Ray remote function (built once per process and retry count)."""
    import ray

    return ray.remote(num_cpus=1, max_retries=max_retries)(run_cell)


def ray_error_message(exc: BaseException) -> str:
    """A short message for a task that Ray could not complete (its type and last lines)."""
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    tail = "\n".join(lines[-3:]) if lines else type(exc).__name__
    return f"Ray task failed ({type(exc).__name__}): {tail}"[:_MAX_ERROR_CHARS]


@dataclass
class RayCellBackend:
    """Runs batches of surrogate cells as Ray tasks.

    Args:
        connection: Where Ray runs (started here on first use unless already up).
        max_retries: Ray retries of a task whose worker or node died.
    """

    connection: RayConnection = field(default_factory=RayConnection)
    max_retries: int = 2
    _announced: bool = field(default=False, init=False, repr=False)

    def run(self, cells: Sequence[Cell], done: Callable[[Cell, dict], None]) -> None:
        """Runs every cell as a task and calls `done(cell, record)` as each finishes.

        Raises:
            ValueError: For live-engine cells (see `LIVE_ENGINE_REFUSAL`).
            RayUnavailableError: When Ray is not installed.
        """
        if any(cell.env_kind == "vllm" for cell in cells):
            raise ValueError(LIVE_ENGINE_REFUSAL)
        ray = self.connection.ensure()
        if not self._announced:
            cpus = int(ray.cluster_resources().get("CPU", 0))
            where = describe(self.connection.address)
            print(f"cells run as Ray tasks on {where} ({cpus} CPUs)", file=sys.stderr)
            self._announced = True
        task = _remote_run_cell(self.max_retries)
        pending_cells = {task.remote(cell): cell for cell in cells}
        pending = list(pending_cells)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                if pending:
                    # Drain whatever else already finished, in one call.
                    more, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                    ready += more
                for ref in ready:
                    cell = pending_cells.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 (a lost task fails its cell, visibly)
                        record = failed_record(cell, ray_error_message(exc))
                    done(cell, record)
        finally:
            for ref in pending:  # interrupted: do not leave the cluster busy
                ray.cancel(ref)

    def close(self) -> None:
        """Shuts down a Ray that this backend started."""
        self.connection.close()


def ray_backend(
    address: str | None, num_cpus: int | None = None, env_kind: str = "surrogate"
) -> RayCellBackend:
    """The backend of `leaderboard --ray [ADDRESS]` (Ray starts on first use).

    Args:
        address: See `andes_gym.scale.cluster.RayConnection`.
        num_cpus: CPUs of a Ray started here (None: every CPU).
        env_kind: The board's environment kind.

    Raises:
        ValueError: For the live engine (see `LIVE_ENGINE_REFUSAL`).
        RayUnavailableError: When Ray is not installed (naming the `ray` extra).
    """
    if env_kind == "vllm":
        raise ValueError(LIVE_ENGINE_REFUSAL)
    require_ray("--ray")
    return RayCellBackend(RayConnection(address, num_cpus))
