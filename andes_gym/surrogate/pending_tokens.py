"""Tokens the simulator produced but has not yet handed to the QoE tracker.

Handing tokens over one iteration at a time costs one tracker call per iteration; most of
a long simulation is spent that way. Instead the simulator logs each iteration's end time
once, and remembers per request the log index of its first unreported token. This works
because a request with unreported tokens is a running decoder, and a running decoder
produces a token in *every* logged iteration until it finishes or is preempted, so its
unreported tokens are exactly the log entries from its start to the end of the log.

`flush` reports them, with whichever tracker API needs fewer calls: one `deliver` per
logged iteration (for many requests over few iterations), or one `deliver_many` per
request (for few requests over many iterations: a request's whole response in one call).
The simulator flushes before anything reads the tracker.
"""

from __future__ import annotations

import numpy as np

from andes_gym.qoe import QoETracker


class PendingTokens:
    """A log of iteration end times and, per request, where its unreported tokens start.

    Args:
        num_requests: Requests of the episode (row i = request i of the workload).
        tracker: The tracker the tokens go to.
    """

    def __init__(self, num_requests: int, tracker: QoETracker) -> None:
        self.tracker = tracker
        self._times_s = np.zeros(1024)
        self._len = 0
        self._start = np.full(num_requests, -1, dtype=np.int64)
        # Set by the simulator while the log is flushed after every iteration (a decision
        # of one iteration): tokens then skip the log. Only then: a flush over several
        # logged iterations may use `deliver_many`, which rounds differently.
        self.deliver_single = False

    def _append(self, times_s: np.ndarray | float) -> None:
        times = np.atleast_1d(times_s)
        hi = self._len + len(times)
        if hi > len(self._times_s):
            grown = np.zeros(max(hi, 2 * len(self._times_s)))
            grown[: self._len] = self._times_s[: self._len]
            self._times_s = grown
        self._times_s[self._len : hi] = times
        self._len = hi

    def produced(
        self, ids: np.ndarray, times_s: np.ndarray | float, steps: np.ndarray | None = None
    ) -> None:
        """Requests `ids` produced one token at each of `times_s` (the iterations just run).

        Every running decoder must be in `ids` (see the module docstring).

        Args:
            ids: The producing requests.
            times_s: End times of the iterations, in order.
            steps: Per request, how many of those iterations it produced in (from the
                first on), or None for all. A request with fewer finished its response:
                its tokens are reported at once.
        """
        num = np.size(times_s)
        first = self._len
        if self.deliver_single and first == 0 and num == 1:
            # One iteration on an empty log, flushed before the next (see
            # `deliver_single`): the flush would deliver exactly this, one `deliver` for
            # the iteration (rows are independent, so grouping them changes nothing).
            self.tracker.deliver(ids, float(np.reshape(times_s, -1)[0]))
            return
        self._append(times_s)
        start = self._start[ids]
        fresh = start < 0
        if fresh.any():
            self._start[ids[fresh]] = first
        if steps is not None:
            short = np.flatnonzero(steps < num)
            if len(short):
                done, stop = ids[short], first + steps[short]
                for i, s, e in zip(
                    done.tolist(), self._start[done].tolist(), stop.tolist(), strict=True
                ):
                    self.tracker.deliver_many(i, self._times_s[s:e])
                self._start[done] = -1

    def pending(self, ids: np.ndarray) -> np.ndarray:
        """Unreported tokens of each request."""
        start = self._start[ids]
        return np.where(start >= 0, self._len - start, 0)

    def flush(self, ids: np.ndarray) -> None:
        """Reports the unreported tokens of `ids` to the tracker (others are left alone)."""
        if self._len == 0:  # an empty log: nothing is pending
            return
        tracker = self.tracker
        start = self._start[ids]
        has = start >= 0
        if not has.any():
            return
        ids, start = ids[has], start[has]
        end = self._len
        times = self._times_s
        lo = int(start.min())
        if end - lo <= len(ids):
            if int(start.max()) == lo:  # common: everyone pending since the same iteration
                for s in range(lo, end):
                    tracker.deliver(ids, float(times[s]))
            else:
                by_start = np.argsort(start, kind="stable")
                ids, start = ids[by_start], start[by_start]
                for s in range(lo, end):
                    k = int(np.searchsorted(start, s, side="right"))
                    tracker.deliver(ids[:k], float(times[s]))
        else:
            for i, s in zip(ids.tolist(), start.tolist(), strict=True):
                tracker.deliver_many(i, times[s:end])
        self._start[ids] = -1

    def flush_all(self, active: np.ndarray) -> None:
        """Reports every unreported token; `active` must hold every running request."""
        if self._len == 0:
            return
        self.flush(active)
        # Nothing is pending any more, so the log can start over.
        self._len = 0
