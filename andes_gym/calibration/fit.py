"""Non-negative least squares and fit statistics for latency models (no scipy needed).

The calibrator fits `latency_s ~ X @ coef` with `coef >= 0`. Latencies of one engine span
two orders of magnitude (a 1-token decode step vs a full prefill chunk), so the fit
minimizes *relative* squared error by default: each row is divided by its target, which
keeps the small decode steps, the bulk of every real run, from being swamped by a few
large prefill steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int | None = None) -> np.ndarray:
    """Solves `min ||a x - b||_2` subject to `x >= 0` (Lawson and Hanson's active set method).

    Args:
        a: Design matrix, shape `(m, n)`.
        b: Targets, shape `(m,)`.
        max_iter: Iteration cap (default `30 * n`).

    Returns:
        The solution `x`, shape `(n,)`, all entries >= 0.

    Raises:
        ValueError: When shapes disagree or inputs are not finite.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.shape != (a.shape[0],):
        raise ValueError(
            f"nnls needs a of shape (m, n) and b of shape (m,), got {a.shape}, {b.shape}"
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("nnls inputs must be finite")
    m, n = a.shape
    # Column scaling makes the tolerance meaningful when features differ by orders of magnitude.
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    a_s = a / scale
    max_iter = 30 * n if max_iter is None else max_iter
    x = np.zeros(n)
    passive = np.zeros(n, dtype=bool)
    tol = 10 * np.finfo(float).eps * max(m, n) * max(np.linalg.norm(a_s, 1), 1.0)
    w = a_s.T @ (b - a_s @ x)
    for _ in range(max_iter):
        if passive.all() or not (w[~passive] > tol).any():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a_s[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            # Step back towards x until the first passive variable hits zero.
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
        w = a_s.T @ (b - a_s @ x)
    return np.maximum(x, 0.0) / scale


@dataclass(frozen=True)
class FitStats:
    """How well a fitted latency model predicts measured latencies.

    Attributes:
        num_samples: Rows fitted.
        median_rel_error: Median of |pred - meas| / meas.
        p90_rel_error: 90th percentile of the same.
        r2: Coefficient of determination on the raw latencies.
    """

    num_samples: int
    median_rel_error: float
    p90_rel_error: float
    r2: float

    def as_dict(self) -> dict[str, float]:
        return {
            "num_samples": self.num_samples,
            "median_rel_error": round(self.median_rel_error, 4),
            "p90_rel_error": round(self.p90_rel_error, 4),
            "r2": round(self.r2, 4),
        }


def fit_stats(predicted_s: np.ndarray, measured_s: np.ndarray) -> FitStats:
    """Relative errors and R^2 of predictions against positive measurements."""
    pred = np.asarray(predicted_s, dtype=np.float64)
    meas = np.asarray(measured_s, dtype=np.float64)
    if pred.shape != meas.shape or meas.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {pred.shape} and {meas.shape}")
    rel = np.abs(pred - meas) / np.maximum(meas, 1e-12)
    ss_res = float(np.sum((meas - pred) ** 2))
    ss_tot = float(np.sum((meas - meas.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    return FitStats(
        num_samples=int(meas.size),
        median_rel_error=float(np.median(rel)),
        p90_rel_error=float(np.percentile(rel, 90)),
        r2=r2,
    )


def fit_nonneg(
    features: np.ndarray, latency_s: np.ndarray, relative: bool = True
) -> tuple[np.ndarray, FitStats]:
    """Fits non-negative coefficients of a linear latency model.

    Args:
        features: Design matrix, one row per measured iteration, shape `(m, n)`.
        latency_s: Measured latencies (> 0), shape `(m,)`.
        relative: Minimize relative instead of absolute squared error.

    Returns:
        `(coef, stats)`.

    Raises:
        ValueError: When a latency is not positive or there are fewer rows than columns.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(latency_s, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < x.shape[1]:
        raise ValueError(f"need at least as many samples as features, got shape {x.shape}")
    if not (y > 0).all():
        bad = int(np.argmax(~(y > 0)))
        raise ValueError(f"latency_s[{bad}] = {y[bad]}; latencies must be positive")
    w = 1.0 / y if relative else np.ones_like(y)
    coef = nnls(x * w[:, None], y * w)
    return coef, fit_stats(x @ coef, y)
