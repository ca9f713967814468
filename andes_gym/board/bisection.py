"""Capacity as the Andes paper measures it: the highest load that keeps mean QoE >= 0.95.

`Bisection` is a small state machine so that a runner can evaluate the pending points of
many searches (one per policy) in one parallel round; `bisect_capacity` drives it with a
plain function. The QoE is assumed non-increasing in the load parameter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Censoring labels of a result.
WITHIN = "within"  # the threshold is crossed inside [low, high]
BELOW_RANGE = "below_range"  # even `low` misses the threshold
ABOVE_RANGE = "above_range"  # even `high` meets it


@dataclass(frozen=True)
class CapacityResult:
    """Outcome of a capacity search.

    Attributes:
        capacity: Highest evaluated load whose QoE met the threshold (None when even the
            range's low end missed it).
        low: Final bracket: a load known to meet the threshold (or the range's low end).
        high: Final bracket: a load known to miss it (or the range's high end).
        censored: WITHIN, BELOW_RANGE or ABOVE_RANGE.
        evaluations: (load, qoe) pairs in the order they were evaluated.
    """

    capacity: float | None
    low: float
    high: float
    censored: str
    evaluations: tuple[tuple[float, float], ...]


@dataclass
class Bisection:
    """Bisection for the largest x in [low, high] with f(x) >= threshold.

    First round: both ends. Then one midpoint per round until the bracket is narrower
    than `tolerance`.

    Args:
        low: Low end of the search range.
        high: High end (> low).
        tolerance: Stop when high - low <= tolerance (> 0).
        threshold: The QoE to keep (0.95 in the paper).

    Raises:
        ValueError: On an empty range or a non-positive tolerance.
    """

    low: float
    high: float
    tolerance: float
    threshold: float = 0.95
    evaluations: list[tuple[float, float]] = field(default_factory=list)
    _censored: str | None = None

    def __post_init__(self) -> None:
        if not self.high > self.low:
            raise ValueError(f"bisection range needs high > low, got [{self.low}, {self.high}]")
        if not self.tolerance > 0:
            raise ValueError(f"bisection tolerance must be positive, got {self.tolerance}")

    @property
    def done(self) -> bool:
        return self._censored is not None

    def pending(self) -> list[float]:
        """The loads to evaluate next (empty when done)."""
        if self.done:
            return []
        if not self.evaluations:
            return [self.low, self.high]
        return [0.5 * (self.low + self.high)]

    def update(self, values: dict[float, float]) -> None:
        """Feeds the QoE at every pending load.

        Args:
            values: Load -> QoE for each load of `pending()`.

        Raises:
            KeyError: When a pending load has no value.
        """
        points = self.pending()
        missing = [x for x in points if x not in values]
        if missing:
            raise KeyError(f"no QoE for pending load(s) {missing}")
        for x in points:
            self.evaluations.append((x, float(values[x])))
        if len(points) == 2:
            lo_ok = values[self.low] >= self.threshold
            hi_ok = values[self.high] >= self.threshold
            if not lo_ok:
                self._censored = BELOW_RANGE
            elif hi_ok:
                self._censored = ABOVE_RANGE
        else:
            (x,) = points
            if values[x] >= self.threshold:
                self.low = x
            else:
                self.high = x
        if self._censored is None and self.high - self.low <= self.tolerance:
            self._censored = WITHIN

    def result(self) -> CapacityResult:
        """The search's outcome.

        Raises:
            RuntimeError: When the search is not done.
        """
        if not self.done:
            raise RuntimeError("the bisection is not finished; evaluate pending() first")
        capacity = {BELOW_RANGE: None, ABOVE_RANGE: self.high}.get(self._censored, self.low)
        return CapacityResult(
            capacity=capacity,
            low=self.low,
            high=self.high,
            censored=self._censored,
            evaluations=tuple(self.evaluations),
        )


def bisect_capacity(
    qoe_at: Callable[[float], float],
    low: float,
    high: float,
    tolerance: float,
    threshold: float = 0.95,
) -> CapacityResult:
    """Highest load in [low, high] whose QoE stays >= threshold, for a monotone `qoe_at`.

    Args:
        qoe_at: Load -> mean QoE (non-increasing).
        low: Low end of the range.
        high: High end.
        tolerance: Width of the final bracket.
        threshold: QoE to keep.

    Returns:
        The result (see `CapacityResult`).
    """
    search = Bisection(low, high, tolerance, threshold)
    while not search.done:
        search.update({x: qoe_at(x) for x in search.pending()})
    return search.result()
