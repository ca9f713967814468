"""Small statistics for leaderboards: Student-t quantiles and confidence intervals over seeds.

scipy is not a dependency, so the t quantile is computed here: the t density is integrated
with Simpson's rule and the CDF inverted by bisection (accurate to ~1e-6, far below what a
handful of seeds can resolve).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _t_pdf(x: np.ndarray, df: float) -> np.ndarray:
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))


def t_cdf(x: float, df: float) -> float:
    """P(T <= x) for Student's t with `df` degrees of freedom.

    Args:
        x: The point.
        df: Degrees of freedom (> 0).

    Raises:
        ValueError: When `df` is not positive.
    """
    if not df > 0:
        raise ValueError(f"df must be positive, got {df}")
    ax = abs(float(x))
    # Simpson's rule on [0, |x|]; the density is smooth, 4000 panels are plenty.
    n = 4000
    grid = np.linspace(0.0, ax, n + 1)
    y = _t_pdf(grid, df)
    half = ax / n / 3.0 * (y[0] + y[-1] + 4.0 * y[1:-1:2].sum() + 2.0 * y[2:-1:2].sum())
    return 0.5 + half if x >= 0 else 0.5 - half


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t with `df` degrees of freedom.

    Args:
        p: Probability in (0, 1).
        df: Degrees of freedom (> 0).

    Raises:
        ValueError: When `p` is outside (0, 1) or `df` is not positive.
    """
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
        if hi > 1e7:
            break
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class MeanCI:
    """A mean with its two-sided confidence interval.

    Attributes:
        mean: Sample mean (NaN without samples).
        half_width: Half-width of the interval (NaN with fewer than two samples).
        n: Number of samples.
        confidence: Confidence level of the interval.
    """

    mean: float
    half_width: float
    n: int
    confidence: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> MeanCI:
    """Mean and t-distribution confidence interval of `values` (e.g. one value per seed).

    Non-finite values are dropped. With one value the half-width is NaN (unknown), not 0.

    Args:
        values: The samples.
        confidence: Two-sided confidence level in (0, 1).

    Returns:
        The mean and interval.
    """
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    n = int(arr.size)
    if n == 0:
        return MeanCI(float("nan"), float("nan"), 0, confidence)
    mean = float(arr.mean())
    if n < 2:
        return MeanCI(mean, float("nan"), n, confidence)
    sem = float(arr.std(ddof=1)) / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sem
    return MeanCI(mean, half, n, confidence)
