"""Per-request bookkeeping of the live engine: QoE summaries, preemptions, completions.

One ledger row per request, in the order requests were registered. The vLLM hook fills it
(token deliveries, preemption counts, finish times); the live environment registers its
workload's requests so that row i is workload request i, and reads it back for rewards
and metrics. Plain numpy, no vLLM.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from andes_gym.qoe import QoETracker


class RequestLedger:
    """QoE tracker rows plus the per-request counters the environment and metrics need.

    Args:
        clock: Returns the current time in seconds (the engine clock every time stamp
            of this ledger uses).
        capacity: Rows allocated up front (they grow as needed).
        record_token_times: Also keep every delivery time (see `QoETracker`).
        buffer_steps: Deliveries of up to this many engine steps are kept and applied
            together when the tracker is next read (`tracker` applies them first), or
            when that many are pending. The QoE summaries read are the same; applying
            them in a row is several times cheaper than one call per step right after a
            forward pass, when the caches are cold. 0: apply each at once. Only for
            ledgers whose readers go through `tracker` (the hook in serving mode; the
            live environment keeps a reference to the tracker itself).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        capacity: int = 64,
        record_token_times: bool = False,
        buffer_steps: int = 0,
    ) -> None:
        self.clock = clock
        self._tracker = QoETracker(capacity=capacity, record_token_times=record_token_times)
        self.buffer_steps = buffer_steps
        self._pending: list[tuple[np.ndarray, np.ndarray, float]] = []
        self.rows: dict[str, int] = {}
        self._prompt_tokens = np.zeros(capacity, dtype=np.int64)
        self._max_tokens = np.zeros(capacity, dtype=np.int64)
        self._num_preemptions = np.zeros(capacity, dtype=np.int64)
        self._finish_s = np.full(capacity, np.nan)
        self.completion_order: list[int] = []

    def __len__(self) -> int:
        return len(self._tracker)

    @property
    def tracker(self) -> QoETracker:
        """The QoE tracker, with every delivery recorded so far applied."""
        if self._pending:
            self.flush()
        return self._tracker

    # ---------------------------------------------------------------- registration
    def add(
        self,
        arrival_s: float,
        ttft_s: float,
        tds_tok_s: float,
        prompt_tokens: int,
        max_tokens: int,
        request_id: str | None = None,
    ) -> int:
        """Adds one request with no token delivered; returns its row.

        Args:
            arrival_s: Arrival time on this ledger's clock.
            ttft_s: TTFT target, seconds.
            tds_tok_s: Token delivery speed target, tokens/s.
            prompt_tokens: Prompt length.
            max_tokens: Output length limit (the exact length when EOS is ignored).
            request_id: The engine's request id, bound to the row when given.

        Raises:
            ValueError: For invalid targets (see `QoETracker.add`) or an id bound twice.
        """
        row = int(self._tracker.add(arrival_s, ttft_s, tds_tok_s)[0])
        if row >= len(self._prompt_tokens):
            self._grow(max(2 * len(self._prompt_tokens), row + 1))
        self._prompt_tokens[row] = prompt_tokens
        self._max_tokens[row] = max_tokens
        if request_id is not None:
            self.bind(request_id, row)
        return row

    def bind(self, request_id: str, row: int) -> None:
        """Binds an engine request id to a row.

        Raises:
            ValueError: When the id is bound already or the row does not exist.
        """
        if request_id in self.rows:
            raise ValueError(f"request id {request_id!r} is bound to row {self.rows[request_id]}")
        if not 0 <= row < len(self):
            raise ValueError(f"row {row} is not a row of this ledger (size {len(self)})")
        self.rows[request_id] = row

    def _grow(self, size: int) -> None:
        for name in ("_prompt_tokens", "_max_tokens", "_num_preemptions", "_finish_s"):
            old = getattr(self, name)
            new = np.full(size, np.nan) if old.dtype.kind == "f" else np.zeros(size, old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    # ---------------------------------------------------------------- updates
    def deliver(self, rows: np.ndarray, counts: np.ndarray, t_s: float) -> None:
        """Records `counts[j]` new tokens of request `rows[j]` delivered at `t_s`."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = np.asarray(counts, dtype=np.int64)
        if not self.buffer_steps:
            self._apply(rows, counts, t_s)
            return
        self._pending.append((rows, counts, t_s))
        if len(self._pending) >= self.buffer_steps:
            self.flush()

    def flush(self) -> None:
        """Applies the buffered deliveries to the tracker, in order."""
        pending, self._pending = self._pending, []
        for rows, counts, t_s in pending:
            self._apply(rows, counts, t_s)

    def _apply(self, rows: np.ndarray, counts: np.ndarray, t_s: float) -> None:
        tracker = self._tracker
        one = counts == 1
        if one.all():
            tracker.deliver(rows, t_s)
            return
        if one.any():
            tracker.deliver(rows[one], t_s)
        for row, count in zip(rows[~one], counts[~one], strict=True):
            if count > 0:
                tracker.deliver_many(int(row), np.full(int(count), t_s))

    def set_preemptions(self, row: int | np.ndarray, count: int | np.ndarray) -> None:
        """Sets the preemption count of a row, or of an array of rows (the engine's counter)."""
        self._num_preemptions[row] = count

    def finish(self, request_id: str, t_s: float) -> int:
        """Marks a request finished at `t_s` and unbinds its id; returns its row."""
        row = self.rows.pop(request_id)
        self._finish_s[row] = t_s
        self.completion_order.append(row)
        return row

    # ---------------------------------------------------------------- views
    @property
    def num_preemptions(self) -> np.ndarray:
        """Preemptions per row."""
        return self._num_preemptions[: len(self)]

    @property
    def finish_s(self) -> np.ndarray:
        """Finish time per row (NaN while unfinished)."""
        return self._finish_s[: len(self)]

    @property
    def finished(self) -> np.ndarray:
        """Whether each row finished."""
        return ~np.isnan(self.finish_s)

    @property
    def prompt_tokens(self) -> np.ndarray:
        return self._prompt_tokens[: len(self)]

    @property
    def max_tokens(self) -> np.ndarray:
        return self._max_tokens[: len(self)]

    @property
    def num_tokens(self) -> np.ndarray:
        """Tokens delivered per row."""
        return self.tracker.state.num_tokens
