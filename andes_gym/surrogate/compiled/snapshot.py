"""`EngineSnapshot`: a copy of a compiled engine's episode state, taken and put back in
place (`CompiledSurrogateBackend.snapshot` / `restore`, whose docstrings are the API)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from andes_gym.surrogate.compiled.backend import CompiledSurrogateBackend


@dataclass(eq=False)
class EngineSnapshot:
    """Copies of every piece of a `CompiledSurrogateBackend`'s episode state that changes
    while the episode runs.

    Attributes:
        ints, flags, sti, stf: Copies of the kernels' arrays (`_ints`, `_flags`, `_sti`,
            `_stf`; rows and slots as `kernels.R_*`, `B_*`, `S_*`, `SF_*`).
        floats, num_tokens: Copies of the QoE tracker's `floats` and `num_tokens`.
        scores: Copy of the backend's candidate-score work array.
        pending_point: Whether a decision point was pending.
    """

    ints: np.ndarray
    flags: np.ndarray
    sti: np.ndarray
    stf: np.ndarray
    floats: np.ndarray
    num_tokens: np.ndarray
    scores: np.ndarray
    pending_point: bool


_ARRAYS = ("ints", "flags", "sti", "stf", "floats", "num_tokens", "scores")


def _live_arrays(backend: CompiledSurrogateBackend) -> tuple[np.ndarray, ...]:
    """The backend's arrays, in the order of `_ARRAYS`."""
    tracker = backend.tracker
    return (
        backend._ints,
        backend._flags,
        backend._sti,
        backend._stf,
        tracker.floats,
        tracker.num_tokens,
        backend._scores,
    )


def _pairs(snapshot: EngineSnapshot, backend: CompiledSurrogateBackend) -> list[tuple]:
    """(snapshot array, backend array) of each piece of state, checked to fit."""
    pairs = [
        (getattr(snapshot, name), live)
        for name, live in zip(_ARRAYS, _live_arrays(backend), strict=True)
    ]
    for saved, live in pairs:
        if saved.shape != live.shape:
            raise ValueError(
                f"the snapshot's arrays ({saved.shape}) do not fit this episode's "
                f"({live.shape}): a snapshot restores only into the episode it was taken in"
            )
    return pairs


def take_snapshot(
    backend: CompiledSurrogateBackend, out: EngineSnapshot | None = None
) -> EngineSnapshot:
    """A new snapshot of `backend`'s state, or `out` overwritten with it."""
    if out is None:
        copies = (live.copy() for live in _live_arrays(backend))
        return EngineSnapshot(*copies, pending_point=backend._pending_point)
    for saved, live in _pairs(out, backend):
        np.copyto(saved, live)
    out.pending_point = backend._pending_point
    return out


def restore_snapshot(backend: CompiledSurrogateBackend, snapshot: EngineSnapshot) -> None:
    """Copies `snapshot` back into `backend`'s arrays, in place."""
    for saved, live in _pairs(snapshot, backend):
        np.copyto(live, saved)
    backend._pending_point = snapshot.pending_point
