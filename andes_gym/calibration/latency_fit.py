"""Fitting the surrogate's linear latency model to profiled engine steps.

The model is the one `andes_gym.surrogate.latency.LinearLatencyModel` evaluates:
`base_s + per_prefill_token_s p + per_prefill_token_sq_s p^2 + per_decode_seq_s d
+ per_context_token_s c`, all coefficients >= 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from andes_gym.calibration.fit import FitStats, fit_nonneg, fit_stats
from andes_gym.calibration.profiler import StepSample
from andes_gym.surrogate.profile import LinearLatencySpec

# Column order of the design matrix and the LinearLatencySpec field of each column.
COEF_FIELDS: tuple[str, ...] = (
    "base_s",
    "per_prefill_token_s",
    "per_prefill_token_sq_s",
    "per_decode_seq_s",
    "per_context_token_s",
)


def design_matrix(
    prefill_tokens: np.ndarray, decode_seqs: np.ndarray, context_tokens: np.ndarray
) -> np.ndarray:
    """Rows `[1, p, p^2, d, c]` in the order of `COEF_FIELDS`."""
    p = np.asarray(prefill_tokens, dtype=np.float64)
    d = np.asarray(decode_seqs, dtype=np.float64)
    c = np.asarray(context_tokens, dtype=np.float64)
    return np.column_stack((np.ones_like(p), p, p * p, d, c))


def samples_matrix(samples: Sequence[StepSample]) -> tuple[np.ndarray, np.ndarray]:
    """`(design matrix, latencies)` of profiled steps."""
    if not samples:
        raise ValueError("no samples to fit")
    arr = np.array(
        [(s.prefill_tokens, s.decode_seqs, s.context_tokens, s.latency_s) for s in samples],
        dtype=np.float64,
    )
    return design_matrix(arr[:, 0], arr[:, 1], arr[:, 2]), arr[:, 3]


def spec_from_coef(coef: np.ndarray) -> LinearLatencySpec:
    """A `LinearLatencySpec` from coefficients in `COEF_FIELDS` order."""
    if len(coef) != len(COEF_FIELDS):
        raise ValueError(f"expected {len(COEF_FIELDS)} coefficients, got {len(coef)}")
    return LinearLatencySpec(**{f: float(v) for f, v in zip(COEF_FIELDS, coef, strict=True)})


def coef_from_spec(spec: LinearLatencySpec) -> np.ndarray:
    """The coefficients of a spec in `COEF_FIELDS` order."""
    return np.array([getattr(spec, f) for f in COEF_FIELDS], dtype=np.float64)


def fit_linear_latency(
    samples: Sequence[StepSample], quadratic: bool = True, relative: bool = True
) -> tuple[LinearLatencySpec, FitStats]:
    """Fits the linear model by non-negative least squares.

    Args:
        samples: Profiled steps (aggregated medians).
        quadratic: Fit the p^2 term (else it is fixed at 0).
        relative: Minimize relative rather than absolute squared error.

    Returns:
        `(spec, stats)`: the fitted coefficients and the fit's error on the samples.
    """
    x, y = samples_matrix(samples)
    cols = [i for i, f in enumerate(COEF_FIELDS) if quadratic or f != "per_prefill_token_sq_s"]
    coef_sub, _ = fit_nonneg(x[:, cols], y, relative=relative)
    coef = np.zeros(len(COEF_FIELDS))
    coef[cols] = coef_sub
    return spec_from_coef(coef), fit_stats(x @ coef, y)


def stats_by_kind(samples: Sequence[StepSample], spec: LinearLatencySpec) -> dict[str, dict]:
    """Fit errors per step kind (decode, prefill, mixed, reprefill) and overall."""
    x, y = samples_matrix(samples)
    pred = x @ coef_from_spec(spec)
    kinds = np.array([s.kind for s in samples])
    out = {"all": fit_stats(pred, y).as_dict()}
    for kind in ("decode", "prefill", "mixed", "reprefill"):
        mask = kinds == kind
        if mask.sum() >= 2:
            out[kind] = fit_stats(pred[mask], y[mask]).as_dict()
    return out


# A term the surrogate's model does not have (yet): a fixed cost per request that computes
# prefill tokens in the step (per-request input preparation and attention set-up). The
# calibrator fits it as a diagnostic, to show what the missing term costs in accuracy.
EXTENDED_FIELDS: tuple[str, ...] = (*COEF_FIELDS, "per_prefill_seq_s")


def fit_extended(samples: Sequence[StepSample], relative: bool = True) -> tuple[dict, dict]:
    """Fits the linear model plus a per-prefill-sequence term (diagnostic only).

    Returns:
        `(coefficients by name, fit statistics per step kind)`.
    """
    x, y = samples_matrix(samples)
    seqs = np.array([s.prefill_seqs for s in samples], dtype=np.float64)
    x = np.column_stack((x, seqs))
    coef, _ = fit_nonneg(x, y, relative=relative)
    pred = x @ coef
    kinds = np.array([s.kind for s in samples])
    stats = {"all": fit_stats(pred, y).as_dict()}
    for kind in ("decode", "prefill", "mixed", "reprefill"):
        mask = kinds == kind
        if mask.sum() >= 2:
            stats[kind] = fit_stats(pred[mask], y[mask]).as_dict()
    return dict(zip(EXTENDED_FIELDS, coef.tolist(), strict=True)), stats
