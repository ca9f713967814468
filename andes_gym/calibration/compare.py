"""Comparing a surrogate run with a live run of the same workload: errors and rank agreement."""

from __future__ import annotations

import numpy as np


def relative_errors(surrogate: np.ndarray, live: np.ndarray, floor: float = 0.0) -> np.ndarray:
    """|surrogate - live| / max(|live|, floor) over the pairs where both are finite.

    Args:
        surrogate: Per-request values from the surrogate.
        live: The same quantity from the live engine, row-aligned.
        floor: Smallest denominator; keeps near-zero live values (a TTFT of a few
            microseconds) from producing meaningless huge ratios.

    Returns:
        The relative errors of the finite pairs (possibly empty).
    """
    s = np.asarray(surrogate, dtype=np.float64)
    v = np.asarray(live, dtype=np.float64)
    if s.shape != v.shape:
        raise ValueError(f"surrogate and live must align, got shapes {s.shape} and {v.shape}")
    ok = np.isfinite(s) & np.isfinite(v)
    denom = np.maximum(np.abs(v[ok]), floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(s[ok] - v[ok]) / denom
    return rel[np.isfinite(rel)]


def error_summary(surrogate: np.ndarray, live: np.ndarray, floor: float = 0.0) -> dict:
    """Median and p90 relative error (None when no pair is comparable)."""
    rel = relative_errors(surrogate, live, floor)
    if rel.size == 0:
        return {"median_rel_error": None, "p90_rel_error": None, "num_pairs": 0}
    return {
        "median_rel_error": float(np.median(rel)),
        "p90_rel_error": float(np.percentile(rel, 90)),
        "num_pairs": int(rel.size),
    }


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b between two rankings (ties counted as neither agreeing nor not).

    Args:
        x: Scores of n items under one engine (e.g. mean QoE per policy).
        y: Scores of the same items under the other.

    Returns:
        tau-b in [-1, 1]; NaN when either side is constant or n < 2.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(
            f"kendall_tau needs two 1-D arrays of equal length, got {x.shape}, {y.shape}"
        )
    iu = np.triu_indices(len(x), k=1)
    dx = np.sign(x[:, None] - x[None, :])[iu]
    dy = np.sign(y[:, None] - y[None, :])[iu]
    n_x = np.count_nonzero(dx)
    n_y = np.count_nonzero(dy)
    if n_x == 0 or n_y == 0:
        return float("nan")
    return float(np.sum(dx * dy) / np.sqrt(n_x * n_y))
