"""`QoETracker`: the growable per-request running summaries of the QoE definition.

Its storage layout is public, because the compiled surrogate engine updates it in place:

- ``tracker.floats``: float64, shape ``(len(FLOAT_ROWS), capacity)``; row ``r`` holds field
  ``FLOAT_ROWS[r]`` of every request (``E1_ROW`` is ``arrival_s + ttft_s``, the first
  ideal time). Unused columns hold NaN.
- ``tracker.num_tokens``: int64, shape ``(capacity,)``: tokens delivered per request.

Request ``i`` is column ``i`` (the order of ``add``). Both arrays are replaced only when
``add`` grows them; ``deliver``, ``deliver_many`` and ``reset`` update them in place.
"""

from __future__ import annotations

import numpy as np

from andes_gym.qoe.definition import (
    QoEState,
    _check_target_arrays,
    _check_variant,
    qoe_of_state,
)
from andes_gym.qoe.prediction import (
    _check_now,
    _qoe_if_completed,
)

FLOAT_ROWS = (
    "arrival_s",
    "ttft_s",
    "tds_tok_s",
    "last_consume_s",
    "sum_consume_s",
    "sum_delay_s",
    "first_token_s",
    "last_token_s",
    "e1_s",
)
"""The rows of `QoETracker.floats`, in order: the float fields of `QoEState`, then e1."""

E1_ROW = FLOAT_ROWS.index("e1_s")
"""The row of `QoETracker.floats` holding e1 = arrival + ttft (the first ideal time)."""

# The rows that are `QoEState` fields (all but e1).
_STATE_ROWS = FLOAT_ROWS[:E1_ROW]


class QoETracker:
    """Growable per-request accumulator: O(1) work per delivered token, vectorized.

    Rows are requests, in the order ``add`` was called. ``deliver`` updates the running
    summaries of many requests in a few numpy operations; ``state`` exposes them as a
    ``QoEState`` of views. Only plain numpy arrays and ints are held, so it pickles.

    Args:
        capacity: Rows allocated up front; the arrays double when full.
        record_token_times: Also keep every delivery time (a flat log, for debugging and
            tests), readable with ``token_times``.
    """

    def __init__(self, capacity: int = 64, record_token_times: bool = False) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._size = 0
        self._record = bool(record_token_times)
        self._num_tokens = np.zeros(capacity, dtype=np.int64)
        # The float fields, then e1 = t0 + ttft (the first ideal time), as the rows of one
        # block, so that the rows of many requests move in one fancy index instead of one
        # per field (the per-call cost dominates at a few hundred requests).
        self._floats = np.full((len(FLOAT_ROWS), capacity), np.nan)
        self._bind_fields()
        self._log_len = 0
        self._log_rows = np.zeros(capacity if self._record else 0, dtype=np.int64)
        self._log_times_s = np.zeros(capacity if self._record else 0)

    def _bind_fields(self) -> None:
        """Per-field names (``_arrival_s``, ..., ``_e1_s``) for the rows of the block."""
        for i, name in enumerate(FLOAT_ROWS):
            setattr(self, "_" + name, self._floats[i])

    def __getstate__(self) -> dict:
        # The per-field views would pickle as copies, detached from the block.
        state = self.__dict__.copy()
        for name in FLOAT_ROWS:
            state.pop("_" + name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        if "_floats" not in state:  # pickled before the block: one array per field
            state = dict(state, _floats=np.stack([state["_" + name] for name in FLOAT_ROWS]))
        self.__dict__.update(state)
        self._bind_fields()

    def __len__(self) -> int:
        return self._size

    @property
    def floats(self) -> np.ndarray:
        """The float block: row r holds field `FLOAT_ROWS[r]` of every request (column i =
        request i; NaN in unused columns). Updated in place; replaced only when `add` grows
        the tracker."""
        return self._floats

    @property
    def num_tokens(self) -> np.ndarray:
        """Tokens delivered per request (int64, one entry per column of `floats`)."""
        return self._num_tokens

    @property
    def capacity(self) -> int:
        """Rows currently allocated."""
        return len(self._num_tokens)

    def _grow(self, needed: int) -> None:
        new_cap = max(needed, 2 * self.capacity)
        num_tokens = np.zeros(new_cap, dtype=np.int64)
        num_tokens[: self._size] = self._num_tokens[: self._size]
        floats = np.full((len(self._floats), new_cap), np.nan)
        floats[:, : self._size] = self._floats[:, : self._size]
        self._num_tokens, self._floats = num_tokens, floats
        self._bind_fields()

    def add(
        self,
        arrival_s: np.ndarray | float,
        ttft_s: np.ndarray | float,
        tds_tok_s: np.ndarray | float,
    ) -> np.ndarray:
        """Add requests (scalars or arrays, broadcast together) with no token yet.

        Returns:
            The new rows' indices (int64).

        Raises:
            ValueError: For NaN arrivals, NaN or negative TTFT targets, or TDS targets
                that are not finite and positive.
        """
        arrival, ttft, tds = (
            np.asarray(x, dtype=np.float64)
            for x in np.broadcast_arrays(np.atleast_1d(arrival_s), ttft_s, tds_tok_s)
        )
        if arrival.ndim != 1:
            raise ValueError(f"add() takes scalars or 1-D arrays, got shape {arrival.shape}")
        _check_target_arrays(arrival, ttft, tds)
        lo, hi = self._size, self._size + arrival.size
        if hi > self.capacity:
            self._grow(hi)
        self._arrival_s[lo:hi] = arrival
        self._ttft_s[lo:hi] = ttft
        self._tds_tok_s[lo:hi] = tds
        self._e1_s[lo:hi] = arrival + ttft
        self._num_tokens[lo:hi] = 0
        self._sum_consume_s[lo:hi] = 0.0
        self._sum_delay_s[lo:hi] = 0.0
        for name in ("_last_consume_s", "_first_token_s", "_last_token_s"):
            getattr(self, name)[lo:hi] = np.nan
        self._size = hi
        return np.arange(lo, hi, dtype=np.int64)

    def _bad_delivery(self, idx: np.ndarray, t_s: np.ndarray, ok: np.ndarray) -> ValueError:
        j = int(np.argmax(~ok))
        row = int(idx[j])
        t = float(np.broadcast_to(t_s, ok.shape)[j])
        if not 0 <= row < self._size:
            return ValueError(f"row {row} is not a request of this tracker (size {self._size})")
        return ValueError(
            f"delivery time {t} for row {row} is NaN or earlier than its arrival "
            f"{self._arrival_s[row]} or its previous delivery {self._last_token_s[row]}"
        )

    def deliver(self, idx: np.ndarray, t_s: float | np.ndarray) -> None:
        """Deliver one token to each request in ``idx`` at ``t_s`` (scalar or per row).

        The hot path of the simulators: a fixed number of numpy operations on
        ``len(idx)`` elements, independent of the tracker's size.

        Args:
            idx: Unique row indices (int array). Duplicates are not detected and give
                wrong results.
            t_s: Delivery time(s) in seconds.

        Raises:
            ValueError: If a time is NaN, earlier than the row's arrival or previous
                delivery, or a row was never added; nothing is updated then.
        """
        idx = np.asarray(idx)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        # One gather of every float field (a copy), updated in place, scattered back.
        rows = self._floats[:, idx]
        arrival, _, tds, last_consume, sum_consume, sum_delay, first_token, last_token, e1 = rows
        # Unused rows hold NaN arrivals, and NaN compares False: one check covers all.
        ok = t_s >= np.fmax(arrival, last_token)
        if not ok.all():
            raise self._bad_delivery(idx, np.asarray(t_s), np.atleast_1d(ok))
        k = self._num_tokens[idx]
        # a = max(d, a_prev + 1/tds); fmax skips the NaN a_prev of a first token.
        consume = np.fmax(t_s, last_consume + 1.0 / tds)
        late = np.maximum(consume - (e1 + k / tds), 0.0)
        self._num_tokens[idx] = k + 1
        last_consume[:] = consume
        sum_consume += consume
        sum_delay += late
        # fmin keeps d_1: NaN before the first token, and later times are never smaller.
        np.fmin(first_token, t_s, out=first_token)
        last_token[:] = t_s
        self._floats[:, idx] = rows
        if self._record:
            self.log_tokens(idx, t_s)

    def deliver_many(self, i: int, times: np.ndarray) -> None:
        """Deliver several tokens to request ``i`` (times in seconds, non-decreasing).

        Raises:
            ValueError: If the times are NaN, decrease, or start before the request's
                arrival or previous delivery, or ``i`` was never added.
        """
        if not 0 <= i < self._size:
            raise ValueError(f"row {i} is not a request of this tracker (size {self._size})")
        d = np.asarray(times, dtype=np.float64).ravel()
        if d.size == 0:
            return
        # A NaN fails a comparison with its neighbour, or (alone) the check of d[0].
        ok = bool((d[1:] >= d[:-1]).all())
        if not (ok and d[0] >= np.fmax(self._arrival_s[i], self._last_token_s[i])):
            raise ValueError(
                f"delivery times for row {i} must be non-decreasing, not NaN and not before "
                f"its arrival {self._arrival_s[i]} or previous delivery "
                f"{self._last_token_s[i]}; got {d}"
            )
        k, tds = int(self._num_tokens[i]), float(self._tds_tok_s[i])
        # a_{k+j} = j/tds + max(a_k, max_{l<=j}(d_l - l/tds)), j, l = 1..m
        offsets_s = np.arange(1, d.size + 1, dtype=np.float64) / tds
        consume = offsets_s + np.fmax(self._last_consume_s[i], np.maximum.accumulate(d - offsets_s))
        ideal = self._e1_s[i] + np.arange(k, k + d.size, dtype=np.float64) / tds
        self._num_tokens[i] = k + d.size
        self._last_consume_s[i] = consume[-1]
        self._sum_consume_s[i] += consume.sum()
        self._sum_delay_s[i] += np.maximum(consume - ideal, 0.0).sum()
        self._first_token_s[i] = np.fmin(self._first_token_s[i], d[0])
        self._last_token_s[i] = d[-1]
        if self._record:
            self.log_tokens(np.full(d.size, i, dtype=np.int64), d)

    def log_tokens(self, rows: np.ndarray, times_s: np.ndarray | float) -> None:
        """Appends deliveries to the token log (nothing unless ``record_token_times``).

        `deliver` and `deliver_many` call it; an engine that updates `floats` and
        `num_tokens` itself calls it for the tokens it delivered.
        """
        if not self._record:
            return
        rows = np.asarray(rows)
        times_s = np.broadcast_to(times_s, rows.shape)
        lo, hi = self._log_len, self._log_len + rows.size
        if hi > self._log_rows.size:
            cap = max(hi, 2 * self._log_rows.size)
            self._log_rows = np.resize(self._log_rows, cap)
            self._log_times_s = np.resize(self._log_times_s, cap)
        self._log_rows[lo:hi] = rows
        self._log_times_s[lo:hi] = times_s
        self._log_len = hi

    @property
    def state(self) -> QoEState:
        """Views of the rows added so far (no copy: they change with later deliveries)."""
        n = self._size
        return QoEState(
            num_tokens=self._num_tokens[:n],
            **{name: getattr(self, "_" + name)[:n] for name in _STATE_ROWS},
        )

    def take_state(self, idx: np.ndarray) -> QoEState:
        """``state.take(idx)`` (a copy of rows ``idx``, an int index array) in two gathers.

        The fields are rows of one new block: independent copies of the tracker's rows,
        equal to ``state.take(idx)`` value for value.
        """
        rows = self._floats[:E1_ROW, idx]
        return QoEState(
            num_tokens=self._num_tokens[idx],
            **{name: rows[i] for i, name in enumerate(_STATE_ROWS)},
        )

    def qoe_if_completed_at(
        self,
        idx: np.ndarray,
        *,
        now_s: float,
        total_tokens: np.ndarray | float,
        variant: str = "delay",
    ) -> np.ndarray:
        """``qoe_if_completed_at(self.state, rows=idx, ...)``, same bits, fewer gathers.

        Args:
            idx: Rows (an int index array).
            now_s: Current time, seconds (finite).
            total_tokens: Output lengths of those rows (or a scalar).
            variant: One of ``VARIANTS``.

        Returns:
            float64 array, one QoE per row of ``idx``.
        """
        _check_variant(variant)
        _check_now(now_s)
        rows = self._floats[:, idx]
        arrival, ttft, tds, last, sum_consume, sum_delay, _, _, e1 = rows
        return _qoe_if_completed(
            arrival,
            ttft,
            tds,
            e1,
            self._num_tokens[idx],
            last,
            sum_consume,
            sum_delay,
            now_s,
            total_tokens,
            variant,
        )

    def qoe(self, idx: np.ndarray | None = None, variant: str = "delay") -> np.ndarray:
        """QoE of the tokens delivered so far, for rows ``idx`` (all rows when None)."""
        state = self.state if idx is None else self.state.take(idx)
        return qoe_of_state(state, variant)

    def token_times(self, i: int) -> np.ndarray:
        """Delivery times of request ``i`` (needs ``record_token_times=True``).

        Raises:
            RuntimeError: If the tracker does not record token times.
            IndexError: If ``i`` is not a row of the tracker.
        """
        if not self._record:
            raise RuntimeError("token_times() needs a tracker built with record_token_times=True")
        if not 0 <= i < self._size:
            raise IndexError(f"row {i} is not a request of this tracker (size {self._size})")
        n = self._log_len
        return self._log_times_s[:n][self._log_rows[:n] == i]

    def reset(self) -> None:
        """Forget all requests, keeping the allocated memory."""
        n = self._size
        # Unused rows must hold NaN arrivals and last deliveries: deliver() relies on it
        # to reject them.
        self._arrival_s[:n] = np.nan
        self._last_token_s[:n] = np.nan
        self._size = 0
        self._log_len = 0
