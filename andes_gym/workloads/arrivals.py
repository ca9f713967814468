"""Seeded arrival processes: Poisson, gamma (bursty) and cyclic bursts (docs/ANDES.md §3).

Every generator takes a `numpy.random.Generator` and returns `n` sorted float64 arrival
times in seconds, measured from the start of the process at t = 0 (so the first arrival
is one inter-arrival gap after 0, not exactly 0).
"""

from __future__ import annotations

import math

import numpy as np


def _check_common(rate_rps: float, n: int) -> None:
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"rate_rps must be a positive finite number, got {rate_rps}")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")


def poisson(rng: np.random.Generator, rate_rps: float, n: int) -> np.ndarray:
    """Arrivals of a homogeneous Poisson process.

    Args:
        rng: Source of randomness.
        rate_rps: Mean arrival rate in requests per second.
        n: Number of arrivals.

    Returns:
        Sorted float64 arrival times in seconds.

    Raises:
        ValueError: If `rate_rps` is not positive or `n` is negative.
    """
    _check_common(rate_rps, n)
    return np.cumsum(rng.exponential(1.0 / rate_rps, size=int(n)))


def gamma(rng: np.random.Generator, rate_rps: float, cv: float, n: int) -> np.ndarray:
    """Arrivals with i.i.d. gamma inter-arrival times (a renewal process).

    The gap has mean `1 / rate_rps` and coefficient of variation `cv` (std / mean), i.e.
    shape `1 / cv**2`. `cv = 1` is a Poisson process; larger `cv` is burstier (many short
    gaps and a few long lulls), smaller is more regular.

    Args:
        rng: Source of randomness.
        rate_rps: Mean arrival rate in requests per second.
        cv: Coefficient of variation of the inter-arrival time (> 0).
        n: Number of arrivals.

    Returns:
        Sorted float64 arrival times in seconds.

    Raises:
        ValueError: If `rate_rps` or `cv` is not positive, or `n` is negative.
    """
    _check_common(rate_rps, n)
    if not (math.isfinite(cv) and cv > 0):
        raise ValueError(f"cv must be a positive finite number, got {cv}")
    shape = 1.0 / cv**2
    gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), size=int(n))
    return np.cumsum(gaps)


def burst_rates(rate_rps: float, intensity: float, duty: float) -> tuple[float, float]:
    """Peak and off-peak rates of a cyclic-burst process with mean rate `rate_rps`.

    Peak rate = `rate_rps * intensity` for a fraction `duty` of each period; off-peak
    rate = `(rate_rps - peak * duty) / (1 - duty)`, so the mean over a period is
    `rate_rps` (docs/ANDES.md §3).

    Args:
        rate_rps: Mean arrival rate over a whole period, requests per second.
        intensity: Peak rate as a multiple of the mean rate (> 0; the paper uses 1.5-2.5).
        duty: Fraction of each period spent at the peak rate, in (0, 1).

    Returns:
        `(peak_rps, off_peak_rps)`.

    Raises:
        ValueError: If a parameter is out of range or the off-peak rate would be
            negative (`intensity * duty > 1`).
    """
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise ValueError(f"rate_rps must be a positive finite number, got {rate_rps}")
    if not (math.isfinite(intensity) and intensity > 0):
        raise ValueError(f"intensity must be a positive finite number, got {intensity}")
    if not 0 < duty < 1:
        raise ValueError(f"duty must lie in (0, 1), got {duty}")
    peak_rps = rate_rps * intensity
    off_peak_rps = (rate_rps - peak_rps * duty) / (1.0 - duty)
    # A tolerance keeps intensity * duty == 1 (an idle off-peak) legal despite rounding.
    if off_peak_rps < -1e-12 * rate_rps:
        raise ValueError(
            f"intensity * duty = {intensity} * {duty} = {intensity * duty:.4g} exceeds 1: "
            f"the off-peak rate would be negative ({off_peak_rps:.4g} rps)"
        )
    return peak_rps, max(off_peak_rps, 0.0)


def cyclic_bursts(
    rng: np.random.Generator,
    rate_rps: float,
    intensity: float,
    duty: float,
    period_s: float,
    n: int,
) -> np.ndarray:
    """Arrivals of a Poisson process whose rate alternates between a burst and a lull.

    Each period of `period_s` seconds starts with a burst of `duty * period_s` seconds at
    the peak rate, followed by the off-peak rate for the rest (see `burst_rates`). The
    non-homogeneous process is sampled exactly by time change: unit-rate Poisson points
    are mapped through the inverse of the piecewise-linear cumulative rate.

    Args:
        rng: Source of randomness.
        rate_rps: Mean arrival rate over a period, requests per second.
        intensity: Peak rate as a multiple of `rate_rps`.
        duty: Fraction of each period at the peak rate, in (0, 1).
        period_s: Length of one burst cycle in seconds (> 0).
        n: Number of arrivals.

    Returns:
        Sorted float64 arrival times in seconds.

    Raises:
        ValueError: If a parameter is out of range or `intensity * duty > 1`.
    """
    _check_common(rate_rps, n)
    peak_rps, off_peak_rps = burst_rates(rate_rps, intensity, duty)
    if not (math.isfinite(period_s) and period_s > 0):
        raise ValueError(f"period_s must be a positive finite number, got {period_s}")
    burst_s = duty * period_s
    mass_per_period = rate_rps * period_s  # expected arrivals per period
    burst_mass = peak_rps * burst_s  # expected arrivals inside one burst
    # Points of a unit-rate process on the "cumulative rate" axis.
    mass = np.cumsum(rng.exponential(1.0, size=int(n)))
    cycle = np.floor(mass / mass_per_period)
    within = mass - cycle * mass_per_period
    in_burst = within < burst_mass
    offset_s = np.empty_like(within)
    offset_s[in_burst] = within[in_burst] / peak_rps
    if off_peak_rps > 0:
        offset_s[~in_burst] = burst_s + (within[~in_burst] - burst_mass) / off_peak_rps
    else:
        # Idle off-peak: the whole period's mass sits in the burst; rounding can leave a
        # point a hair past it, which belongs at the burst's end.
        offset_s[~in_burst] = burst_s
    times = cycle * period_s + offset_s
    # Floating rounding at cycle edges could create a tiny inversion; keep the contract.
    return np.maximum.accumulate(times)
