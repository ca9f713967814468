"""QoE prediction on projected timelines: `predict_qoe` (served at a rate until a horizon,
then the pending tokens delivered at the horizon) and `qoe_if_completed_at` (every missing
token delivered now), in closed form, vectorized. They feed the Andes scheduler's
``Q_serve`` / ``Q_wait``, the observation features and the reward.

A projected timeline with no token at all is not late yet and scores 1 (the definition's
``qoe`` gives 0 for no token).
"""

from __future__ import annotations

import math

import numpy as np

from andes_gym.qoe.definition import (
    _COUNT_SLACK,
    PENDING_MODES,
    QoEState,
    _check_variant,
    _qoe_unmasked,
)

# "No previous consumption" (k == 0) as a finite time, so that the closed forms below
# need no masking: max(-1e30, x) = x, 0 * -1e30 = 0, and products with the huge inverse
# slope below stay far from overflow.
_NO_PREVIOUS_S = -1e30
# Inverse slope used when the lateness of served tokens is constant (r >= tds): any count
# above the number of served tokens clips to it.
_MAX_INV_SLOPE = 1e250


def _sum_max_affine(
    c: np.ndarray,
    b: np.ndarray,
    inv_delta: np.ndarray,
    half_delta: np.ndarray,
    m: np.ndarray,
    m_m1: np.ndarray,
) -> np.ndarray:
    """``sum_{j=1..m} max(c, b + (j - 1) delta)`` for ``delta >= 0``, in O(1).

    The affine part is nondecreasing, so the first ``cnt`` terms (those with
    ``b + (j - 1) delta <= c``) take ``c`` and the rest form an arithmetic series.
    ``inv_delta`` is ``1 / delta`` (``_MAX_INV_SLOPE`` where ``delta == 0``: then every
    term takes ``c`` if ``b < c``, else ``b``; at ``b == c`` either is right).
    ``half_delta = delta * 0.5`` and ``m_m1 = m * (m - 1)`` are passed in because both
    calls of a projection share them.
    """
    cnt = np.minimum(np.maximum(np.floor((c - b) * inv_delta) + 1.0, 0.0), m)
    return cnt * c + (m - cnt) * b + half_delta * (m_m1 - cnt * (cnt - 1.0))


def _project_served(
    k: np.ndarray,
    last_consume_s: np.ndarray,
    e1_s: np.ndarray,
    tds: np.ndarray,
    inv_tds: np.ndarray,
    now_s: float,
    rate: np.ndarray | float,
    m: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consumption of ``m`` tokens delivered at ``now + j / r``, j = 1..m.

    With ``A = a_k`` and ``rho = min(r, tds)``:
    ``a_{k+j} = max(A + j/tds, now + 1/r + (j-1)/rho)``, so relative to
    ``e_{k+j} = e_{k+1} + (j-1)/tds`` the lateness ``a - e`` is
    ``max(c_A, c_B + (j-1) delta)`` with ``c_A = A + 1/tds - e_{k+1}``,
    ``c_B = now + 1/r - e_{k+1}`` and ``delta = 1/rho - 1/tds >= 0``.

    ``inv_tds`` is ``1 / tds``. Every argument broadcasts (e.g. one row per scenario of
    ``predict_qoe_many``).

    Returns:
        ``(a_{k+m}, sum_j a_{k+j}, sum_j max(a_{k+j} - e_{k+j}, 0))``; ``a_{k+m}`` is
        ``last_consume_s`` where ``m == 0`` and every sum is 0 there.
    """
    r = np.maximum(rate, 1e-9)  # r == 0 serves nothing (m == 0); keep 1/r finite
    delta = 1.0 / np.minimum(r, tds) - inv_tds  # exactly 0 when r >= tds
    inv_delta = 1.0 / np.maximum(delta, 1.0 / _MAX_INV_SLOPE)
    half_delta = delta * 0.5
    m_m1 = m * (m - 1.0)
    e_next = e1_s + k * inv_tds
    c_a = np.fmax(last_consume_s + inv_tds - e_next, _NO_PREVIOUS_S)  # NaN a_k: k == 0
    c_b = now_s + 1.0 / r - e_next
    sum_late = _sum_max_affine(c_a, c_b, inv_delta, half_delta, m, m_m1)
    sum_delay = _sum_max_affine(np.maximum(c_a, 0.0), c_b, inv_delta, half_delta, m, m_m1)
    # ((0.5 / tds) * m) * (m - 1), not (0.5 / tds) * m_m1: rounding differs, results must not.
    sum_consume = m * e_next + 0.5 * inv_tds * m * (m - 1.0) + sum_late
    last_served = e_next + (m - 1.0) * inv_tds + np.maximum(c_a, c_b + (m - 1.0) * delta)
    return np.where(m > 0, last_served, last_consume_s), sum_consume, sum_delay


def _project_pending(
    n: np.ndarray,
    last_consume_s: np.ndarray,
    e1_s: np.ndarray,
    inv_tds: np.ndarray,
    horizon_s: float | np.ndarray,
    p: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Consumption of ``p`` tokens all delivered at the horizon ``H`` after ``n`` tokens.

    Consumption starts at ``max(H, a_n + 1/tds)`` and is spaced ``1/tds``, exactly as the
    ideal times are, so every pending token has the same lateness. ``inv_tds`` is
    ``1 / tds``.

    Returns:
        ``(last consumption, sum of the p consumption times, sum of their delays)``.
    """
    start = np.fmax(horizon_s, last_consume_s + inv_tds)  # NaN a_n (n == 0) -> H
    late = np.maximum(start - (e1_s + n * inv_tds), 0.0)
    last = np.where(p > 0, start + (p - 1.0) * inv_tds, last_consume_s)
    return last, p * start + 0.5 * inv_tds * p * (p - 1.0), p * late


def _check_rate(rate_tok_s: np.ndarray | float, n: int) -> np.ndarray | float:
    if type(rate_tok_s) is float and 0.0 <= rate_tok_s < math.inf:  # the common case, fast
        return rate_tok_s
    rate = np.asarray(rate_tok_s, dtype=np.float64)
    if rate.ndim and rate.shape != (n,):
        raise ValueError(f"rate_tok_s has shape {rate.shape}; expected a scalar or ({n},)")
    _check_rate_values(rate)
    return rate if rate.ndim else float(rate)


def _check_rate_values(rate: np.ndarray) -> None:
    if rate.size and not (rate.min() >= 0.0 and rate.max() < np.inf):  # NaN fails too
        bad = ~((rate >= 0.0) & np.isfinite(rate))
        i = int(np.argmax(bad.ravel()))
        raise ValueError(
            f"rate_tok_s[{i}] = {rate.ravel()[i]}; expected a finite rate >= 0 tokens/s"
        )


def _check_predict_args(now_s: float, horizon_s: float, pending: str, has_total: bool) -> None:
    if pending not in PENDING_MODES:
        raise ValueError(f"unknown pending mode {pending!r}; expected one of {PENDING_MODES}")
    if pending == "all" and not has_total:
        raise ValueError('pending="all" needs total_tokens (the requests\' output lengths)')
    if not math.isfinite(now_s):
        raise ValueError(f"now_s must be a finite time in seconds, got {now_s}")
    if not horizon_s >= now_s:
        raise ValueError(f"horizon_s = {horizon_s} must be >= now_s = {now_s}")


def _served_part(
    state: QoEState,
    k: np.ndarray,
    e1_s: np.ndarray,
    inv_tds: np.ndarray,
    total: np.ndarray | None,
    now_s: float,
    horizon_s: float | np.ndarray,
    rate: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 1 of ``predict_qoe``: ``(n, a_n, sum a_i, S_delay)`` after the served tokens."""
    m = np.floor((horizon_s - now_s) * rate + _COUNT_SLACK)  # >= 0: horizon_s >= now_s
    if total is not None:
        m = np.minimum(m, np.maximum(total - k, 0.0))
    last, served_consume, served_delay = _project_served(
        k, state.last_consume_s, e1_s, state.tds_tok_s, inv_tds, now_s, rate, m
    )
    return (
        k + m,
        last,
        state.sum_consume_s + served_consume,
        state.sum_delay_s + served_delay,
    )


def _pending_part(
    state: QoEState,
    e1_s: np.ndarray,
    inv_tds: np.ndarray,
    total: np.ndarray | None,
    horizon_s: float | np.ndarray,
    served: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    variant: str,
    pending: str,
) -> np.ndarray:
    """Steps 2 and 3 of ``predict_qoe``: pending tokens at the horizon, then the QoE."""
    n, last, sum_consume, sum_delay = served
    if pending == "all":
        target = total
    else:
        tds = state.tds_tok_s
        target = np.maximum(np.floor((horizon_s - e1_s) * tds + _COUNT_SLACK) + 1.0, 0.0)
        if total is not None:
            target = np.minimum(target, total)
    p = np.maximum(target - n, 0.0)
    last, pending_consume, pending_delay = _project_pending(n, last, e1_s, inv_tds, horizon_s, p)
    n = n + p
    q = _qoe_unmasked(
        n,
        last,
        sum_consume + pending_consume,
        sum_delay + pending_delay,
        state.arrival_s,
        state.ttft_s,
        state.tds_tok_s,
        variant,
    )
    return np.where(n > 0, q, 1.0)


def _predict(
    state: QoEState,
    now_s: float,
    horizons_s: list[float],
    rates: list[float | np.ndarray],
    variant: str,
    total_tokens: np.ndarray | None,
    pending: str,
) -> np.ndarray:
    """``predict_qoe`` on checked arguments for c scenarios at once: ``(c, n)``.

    The scenarios share one pass: from the pending tokens on, every array is ``(c, n)``
    with the horizons as a ``(c, 1)`` column. Every element goes through the same
    operations as in a one-scenario call, so each row is that call's result bit for bit.
    A waiting scenario (scalar rate 0) serves m = 0 tokens, and with finite ideal times
    the served terms are then exactly 0 (or -0) and drop out: its rows start from the
    state itself, which saves the served projection, the costliest part.
    """
    inv_tds = 1.0 / state.tds_tok_s
    e1_s = state.arrival_s + state.ttft_s
    k = state.num_tokens.astype(np.float64)
    total = None if total_tokens is None else np.asarray(total_tokens, dtype=np.float64)
    c = len(horizons_s)
    waits = [type(r) is float and r == 0.0 for r in rates]
    # A sum of the ideal times is finite only if every one is (NaN and inf propagate).
    if any(waits) and math.isfinite(e1_s.sum()):
        serve = [i for i, w in enumerate(waits) if not w]
    else:
        serve = list(range(c))
    # One scenario: plain scalars, as predict_qoe always had; else a (c, 1) column.
    horizons = horizons_s[0] if c == 1 else np.asarray(horizons_s, dtype=np.float64)[:, None]
    waiting = (k, state.last_consume_s, state.sum_consume_s, state.sum_delay_s)
    if not serve:
        served = tuple(np.broadcast_to(w, (c, len(k))) for w in waiting)
    elif len(serve) == 1:  # the common case: one served scenario, as in make_candidates
        i = serve[0]
        served = _served_part(state, k, e1_s, inv_tds, total, now_s, horizons_s[i], rates[i])
        if c > 1:
            is_served = np.zeros((c, 1), dtype=bool)
            is_served[i] = True
            served = tuple(np.where(is_served, x, w) for x, w in zip(served, waiting, strict=True))
    else:
        rate_cols = np.stack([np.broadcast_to(rates[i], k.shape) for i in serve])
        served = _served_part(state, k, e1_s, inv_tds, total, now_s, horizons[serve], rate_cols)
        if len(serve) < c:
            # Row 0 holds the waiting state, rows 1.. the served scenarios.
            row_of = np.zeros(c, dtype=np.int64)
            row_of[serve] = np.arange(1, len(serve) + 1)
            served = tuple(
                np.concatenate((w[None], x))[row_of] for x, w in zip(served, waiting, strict=True)
            )
    q = _pending_part(state, e1_s, inv_tds, total, horizons, served, variant, pending)
    return q.reshape(c, len(k))


def predict_qoe(
    state: QoEState,
    *,
    now_s: float,
    horizon_s: float,
    rate_tok_s: np.ndarray | float,
    variant: str = "delay",
    total_tokens: np.ndarray | None = None,
    pending: str = "due",
) -> np.ndarray:
    """QoE of each request's projected timeline at ``horizon_s`` (vectorized, O(1) each).

    The projection, per request:

    1. Served: tokens delivered at ``now_s + m / r`` for m = 1..M, with
       ``M = floor((horizon_s - now_s) r + 1e-9)`` (0 where ``r == 0``, i.e. waiting),
       capped by ``total_tokens - k`` when given.
    2. Pending, delivered at ``horizon_s`` (the lower-bound rule of docs/ANDES.md §1):
       ``"due"``: the tokens whose ideal time ``e_j <= horizon_s`` (capped by
       ``total_tokens`` when given) not delivered yet; ``"all"``: every remaining token up
       to ``total_tokens``.
    3. The QoE (``variant``) of delivered + served + pending tokens.

    A projected timeline with no token at all (nothing delivered, served or due) scores
    1.0, not 0 as ``qoe([])`` does: nothing is late yet, and a request still inside its
    TTFT target should not look like the worst request to a scheduler.

    ``predict_qoe(s, now_s=t, horizon_s=t, rate_tok_s=0, pending="all", total_tokens=n)``
    is ``qoe_of_state(s)`` for finished requests (k == n >= 1) and the truncation lower
    bound (remaining tokens delivered at t) for unfinished ones.

    Several look-aheads of the same requests: ``predict_qoe_many`` (one pass, same bits).

    Args:
        state: Running summaries; ``now_s`` should not precede their last deliveries.
        now_s: Current time, seconds.
        horizon_s: End of the look-ahead, seconds (>= now_s).
        rate_tok_s: Delivery rate while served, tokens/s, per request or scalar; 0 means
            the request waits.
        variant: One of ``VARIANTS``.
        total_tokens: Output lengths (per request or scalar), or None when unknown.
        pending: One of ``PENDING_MODES``.

    Returns:
        float64 array of length ``len(state)``.

    Raises:
        ValueError: For an unknown variant or pending mode, ``pending="all"`` without
            ``total_tokens``, ``horizon_s < now_s``, or a negative or non-finite rate.
    """
    _check_variant(variant)
    _check_predict_args(now_s, horizon_s, pending, total_tokens is not None)
    rate = _check_rate(rate_tok_s, len(state))
    return _predict(state, now_s, [horizon_s], [rate], variant, total_tokens, pending)[0]


def predict_qoe_many(
    state: QoEState,
    *,
    now_s: float,
    horizons_s: np.ndarray | list[float],
    rates_tok_s: np.ndarray | list,
    variant: str = "delay",
    total_tokens: np.ndarray | None = None,
    pending: str = "due",
) -> np.ndarray:
    """``predict_qoe`` for several (horizon, rate) scenarios of the same requests at once.

    Row i equals ``predict_qoe(state, now_s=now_s, horizon_s=horizons_s[i],
    rate_tok_s=rates_tok_s[i], ...)`` bit for bit; the arguments are checked once and the
    scenarios share one pass of numpy calls. For the few hundred requests of a decision
    point the calls' fixed cost dominates, so three scenarios cost about 1.5 calls of
    ``predict_qoe`` (waiting scenarios, rate 0, skip the served projection).

    Args:
        state: Running summaries (n requests).
        now_s: Current time, seconds.
        horizons_s: One look-ahead end per scenario, seconds (each >= now_s), shape (c,).
        rates_tok_s: One rate per scenario, shape (c,), or per scenario and request,
            shape (c, n); tokens/s, 0 means waiting.
        variant: One of ``VARIANTS``.
        total_tokens: Output lengths (per request or scalar), or None when unknown.
        pending: One of ``PENDING_MODES``.

    Returns:
        float64 array of shape ``(c, n)``.

    Raises:
        ValueError: As ``predict_qoe``, naming the bad scenario's horizon or rate, or
            when the shapes do not match.
    """
    _check_variant(variant)
    horizons = np.asarray(horizons_s, dtype=np.float64)
    if horizons.ndim != 1:
        raise ValueError(f"horizons_s must be 1-D (one per scenario), got shape {horizons.shape}")
    for horizon_s in horizons.tolist():
        _check_predict_args(now_s, horizon_s, pending, total_tokens is not None)
    c, n = len(horizons), len(state)
    rates = np.asarray(rates_tok_s, dtype=np.float64)
    if rates.shape not in ((c,), (c, n)):
        raise ValueError(
            f"rates_tok_s has shape {rates.shape}; expected ({c},) or ({c}, {n}) "
            "(one rate per scenario, or per scenario and request)"
        )
    _check_rate_values(rates)
    rate_list = rates.tolist() if rates.ndim == 1 else list(rates)
    return _predict(state, now_s, horizons.tolist(), rate_list, variant, total_tokens, pending)


def qoe_if_completed_at(
    state: QoEState,
    *,
    now_s: float,
    total_tokens: np.ndarray | float,
    variant: str = "delay",
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """QoE of each request if every token it still misses were delivered at ``now_s``.

    The reward potential's term (the docs/ANDES.md §1 lower bound): the final QoE of a
    finished request, the truncation lower bound of an unfinished one. Equals
    ``predict_qoe(state.take(rows), now_s=now_s, horizon_s=now_s, rate_tok_s=0.0,
    variant=variant, total_tokens=total_tokens, pending="all")`` bit for bit whenever
    the requests' arrival and TTFT targets are finite (as `Workload` guarantees), in a
    third of the numpy calls: nothing is served, so the served projection drops out.

    Args:
        state: Running summaries (views are fine: nothing is copied but the rows used).
        now_s: Current time, seconds (finite).
        total_tokens: Output lengths of the rows used (or a scalar).
        variant: One of ``VARIANTS``.
        rows: Rows of ``state`` to evaluate, or None for all.

    Returns:
        float64 array, one QoE per row used.

    Raises:
        ValueError: For an unknown variant or a non-finite ``now_s``.
    """
    _check_variant(variant)
    _check_now(now_s)
    fields_ = (
        state.arrival_s,
        state.ttft_s,
        state.tds_tok_s,
        state.num_tokens,
        state.last_consume_s,
        state.sum_consume_s,
        state.sum_delay_s,
    )
    if rows is not None:
        fields_ = tuple(x[rows] for x in fields_)
    arrival, ttft, tds, num, last, sum_consume, sum_delay = fields_
    return _qoe_if_completed(
        arrival,
        ttft,
        tds,
        arrival + ttft,
        num,
        last,
        sum_consume,
        sum_delay,
        now_s,
        total_tokens,
        variant,
    )


def _check_now(now_s: float) -> None:
    if not math.isfinite(now_s):
        raise ValueError(f"now_s must be a finite time in seconds, got {now_s}")


def _qoe_if_completed(
    arrival_s: np.ndarray,
    ttft_s: np.ndarray,
    tds: np.ndarray,
    e1_s: np.ndarray,
    num_tokens: np.ndarray,
    last_consume_s: np.ndarray,
    sum_consume_s: np.ndarray,
    sum_delay_s: np.ndarray,
    now_s: float,
    total_tokens: np.ndarray | float,
    variant: str,
) -> np.ndarray:
    """The body of ``qoe_if_completed_at`` on the fields of the rows used."""
    # predict_qoe with horizon == now and rate 0 serves m = 0 tokens: its served terms are
    # exactly 0 (finite inputs), so n = k, a_n and the sums pass through unchanged.
    k = num_tokens.astype(np.float64)
    p = np.maximum(np.asarray(total_tokens, dtype=np.float64) - k, 0.0)
    last, pending_consume, pending_delay = _project_pending(
        k, last_consume_s, e1_s, 1.0 / tds, now_s, p
    )
    n = k + p
    q = _qoe_unmasked(
        n,
        last,
        sum_consume_s + pending_consume,
        sum_delay_s + pending_delay,
        arrival_s,
        ttft_s,
        tds,
        variant,
    )
    return np.where(n > 0, q, 1.0)
