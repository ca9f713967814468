"""Quality of Experience (QoE) of streamed LLM responses (docs/ANDES.md §1).

Per request: arrival ``t0``, target time-to-first-token ``ttft`` (s) and target token
delivery speed ``tds`` (tokens/s). Token i (1-based) is delivered at ``d_i``.

- Ideal consumption time: ``e_i = t0 + ttft + (i - 1) / tds``.
- Actual consumption time (the client paces tokens at ``tds``, early ones wait in a
  buffer): ``a_1 = d_1``, ``a_i = max(d_i, a_{i-1} + 1/tds)``.
- ``S_delay = sum_i max(a_i - e_i, 0)``.

Variants (``VARIANTS``):

- ``"delay"`` (paper v2, the default): ``QoE = 1 - S_delay / S_whole`` with
  ``S_whole = S_delay + sum_i (a_n - a_i)``; 1 when ``S_delay == 0``.
- ``"delay_fixed"``: same, with ``S_whole = S_delay + sum_i (e_n - e_i)
  = S_delay + n (n - 1) / (2 tds)``; monotone in every token (the paper's form is not:
  delaying the last token can raise it).
- ``"area"`` (paper v1): ``S_actual / S_expected`` over ``[t0, a_n]``, see ``_area_qoe``.

No token delivered gives QoE 0 (``qoe``, ``qoe_of_state``). ``predict_qoe`` differs on
purpose: a projected timeline with no token at all is not late yet and scores 1.

Three views of the same definition live here:

- ``qoe``: the batch definition on explicit token times (the reference).
- ``QoEState`` / ``QoETracker``: an O(1)-size running summary per request (``k``, ``a_k``,
  ``sum a_i``, ``S_delay``), updated with O(1) work per delivered token, vectorized over
  requests. Every variant is a closed form of that summary, because
  ``sum_i (a_n - a_i) = n a_n - sum_i a_i``.
- ``predict_qoe``: the QoE of a projected timeline (served at a given rate until a horizon,
  then the pending tokens delivered at the horizon), in closed form, vectorized; it feeds
  the Andes scheduler's ``Q_serve`` / ``Q_wait``, the observation features and the reward.

A note on "on time": lateness of at most ``ON_TIME_TOL_S`` per token on average counts
as none. Without it a single-token response delivered "exactly" at its target would score
0 instead of 1 whenever the target and the delivery time were rounded differently (for
n = 1 the whole area is 0, so any positive delay gives QoE 0). For n > 1 the tolerance
changes the QoE by less than about 1e-9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

__all__ = [
    "ON_TIME_TOL_S",
    "PENDING_MODES",
    "VARIANTS",
    "QoEState",
    "QoETracker",
    "consumption_times",
    "mean_tbt_s",
    "predict_qoe",
    "predict_qoe_many",
    "qoe",
    "qoe_if_completed_at",
    "qoe_of_state",
    "ttft_s",
]

VARIANTS = ("delay", "delay_fixed", "area")
"""QoE variants; ``"delay"`` (paper v2) is the default."""

PENDING_MODES = ("due", "all")
"""How ``predict_qoe`` counts tokens not yet delivered at the horizon."""

ON_TIME_TOL_S = 1e-9
"""Mean lateness per token (s) at or below which a timeline counts as on time."""

# Slack added before flooring token counts, so that a count that is an exact integer in
# real arithmetic (e.g. 2 s at 5 tok/s) is not lost to rounding (9.999999999 -> 9).
_COUNT_SLACK = 1e-9


# --------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown QoE variant {variant!r}; expected one of {VARIANTS}")


def _check_targets(arrival: float, ttft: float, tds: float) -> None:
    if math.isnan(arrival):
        raise ValueError(f"arrival must be a number of seconds, got {arrival}")
    if not ttft >= 0.0:  # also rejects NaN
        raise ValueError(f"ttft must be a non-negative number of seconds, got {ttft}")
    if not (tds > 0.0 and math.isfinite(tds)):
        raise ValueError(f"tds must be a finite positive number of tokens/s, got {tds}")


def _check_token_times(times: np.ndarray, arrival: float) -> None:
    if times.ndim != 1:
        raise ValueError(f"token_times must be 1-D, got shape {times.shape}")
    nan = np.isnan(times)
    if nan.any():
        i = int(np.argmax(nan))
        raise ValueError(f"token_times[{i}] is {times[i]}; expected a time in seconds")
    down = np.diff(times) < 0.0
    if down.any():
        i = int(np.argmax(down)) + 1
        raise ValueError(
            f"token_times must be non-decreasing: token_times[{i}] = {times[i]} "
            f"< token_times[{i - 1}] = {times[i - 1]}"
        )
    early = times < arrival
    if early.any():
        i = int(np.argmax(early))
        raise ValueError(f"token_times[{i}] = {times[i]} is before the request's arrival {arrival}")


def _check_target_arrays(arrival_s: np.ndarray, ttft_s: np.ndarray, tds: np.ndarray) -> None:
    for name, bad, expected in (
        ("arrival_s", np.isnan(arrival_s), "a number of seconds"),
        ("ttft_s", ~(ttft_s >= 0.0), "a non-negative number of seconds"),
        ("tds_tok_s", ~((tds > 0.0) & np.isfinite(tds)), "a finite positive tokens/s"),
    ):
        if bad.any():
            i = int(np.argmax(bad))
            value = {"arrival_s": arrival_s, "ttft_s": ttft_s, "tds_tok_s": tds}[name][i]
            raise ValueError(f"{name}[{i}] = {value}; expected {expected}")


# --------------------------------------------------------------------------------------
# The definition, on O(1) summaries
# --------------------------------------------------------------------------------------


def _area_qoe(
    n: np.ndarray,
    last_consume_s: np.ndarray,
    actual_area: np.ndarray,
    arrival_s: np.ndarray,
    ttft_s: np.ndarray,
    tds: np.ndarray,
) -> np.ndarray:
    """Paper v1 area form: ``S_actual / S_expected`` over ``[t0, a_n]``, clipped to [0, 1].

    ``S_actual = sum_i (a_n - a_i)`` counts token i as consumed from ``a_i`` on.
    ``S_expected = int_{t0}^{a_n} min(max(tds (t - t0 - ttft), 0), n) dt``; with
    ``T = a_n - t0 - ttft`` it is 0 if ``T <= 0``, ``tds T^2 / 2`` if ``T <= n / tds``,
    else ``n^2 / (2 tds) + n (T - n / tds)``.

    Why the clip: the expected curve is a continuous ramp that reaches i tokens only at
    ``e_i + 1/tds``, while the actual curve is a step that counts token i from ``a_i``.
    So an on-time response already has ``S_actual / S_expected = n / (n - 1) > 1``, and a
    response whose tokens come before their ideal times scores higher still. Early
    delivery earns nothing under the delay form either, so ratios above 1 are cut to 1.
    A timeline whose last token is consumed by ``t0 + ttft`` has ``S_expected == 0`` and
    scores 1.
    """
    span = last_consume_s - arrival_s - ttft_s
    ramp_s = n / tds
    expected = np.where(
        span <= ramp_s,
        0.5 * tds * span * span,
        n * n / (2.0 * tds) + n * (span - ramp_s),
    )
    has_expected = span > ON_TIME_TOL_S
    ratio = np.divide(actual_area, expected, out=np.ones_like(expected), where=has_expected)
    return np.clip(ratio, 0.0, 1.0)


def _qoe_from_summary(
    n: np.ndarray,
    last_consume_s: np.ndarray,
    sum_consume_s: np.ndarray,
    sum_delay_s: np.ndarray,
    arrival_s: np.ndarray,
    ttft_s: np.ndarray,
    tds: np.ndarray,
    variant: str,
) -> np.ndarray:
    """QoE of timelines given by their summaries (n, a_n, sum a_i, S_delay); 0 where n == 0.

    Args:
        n: Number of tokens of each timeline (int or float array).
        last_consume_s: ``a_n`` (ignored where n == 0).
        sum_consume_s: ``sum_i a_i``.
        sum_delay_s: ``S_delay``.
        arrival_s: Arrival times ``t0``.
        ttft_s: TTFT targets.
        tds: TDS targets (tokens/s).
        variant: One of ``VARIANTS``.

    Returns:
        QoE per timeline, float64 in [0, 1].
    """
    n = np.asarray(n, dtype=np.float64)
    has_tokens = n > 0
    last = np.where(has_tokens, last_consume_s, 0.0)
    q = _qoe_unmasked(n, last, sum_consume_s, sum_delay_s, arrival_s, ttft_s, tds, variant)
    return np.where(has_tokens, q, 0.0)


def _qoe_unmasked(
    n: np.ndarray,
    last_consume_s: np.ndarray,
    sum_consume_s: np.ndarray,
    sum_delay_s: np.ndarray,
    arrival_s: np.ndarray,
    ttft_s: np.ndarray,
    tds: np.ndarray,
    variant: str,
) -> np.ndarray:
    """``_qoe_from_summary`` without its ``n == 0`` masking (float ``n``).

    Where ``n > 0`` the result is ``_qoe_from_summary``'s, bit for bit; elsewhere it is
    meaningless (the caller masks it), so ``last_consume_s`` may hold NaN there.
    """
    if variant == "delay_fixed":
        # delay_fixed normalizes by the ideal timeline's own area.
        area = n * (n - 1.0) / (2.0 * tds)
    else:
        # sum_i (a_n - a_i); rounding can make it a hair negative.
        area = np.maximum(n * last_consume_s - sum_consume_s, 0.0)
        if variant == "area":
            return _area_qoe(n, last_consume_s, area, arrival_s, ttft_s, tds)
    late = sum_delay_s > ON_TIME_TOL_S * n
    # QoE = 1 - D / (D + W) = W / (D + W); D > 0 wherever late, so no 0/0.
    return np.divide(area, sum_delay_s + area, out=np.ones_like(area), where=late)


def consumption_times(token_times: np.ndarray, *, tds: float) -> np.ndarray:
    """Actual consumption times ``a_i`` of delivered tokens (client paced at ``tds``).

    ``a_1 = d_1``, ``a_i = max(d_i, a_{i-1} + 1/tds)``, computed without a loop as
    ``a_i = (i - 1)/tds + max_{j <= i} (d_j - (j - 1)/tds)``.

    Args:
        token_times: Delivery times ``d_i`` in seconds, in order.
        tds: Target token delivery speed, tokens/s.

    Returns:
        ``a_i`` as a float64 array of the same length.
    """
    d = np.asarray(token_times, dtype=np.float64)
    offsets_s = np.arange(d.size, dtype=np.float64) / tds
    return offsets_s + np.maximum.accumulate(d - offsets_s)


def qoe(
    token_times: np.ndarray | list[float],
    *,
    arrival: float,
    ttft: float,
    tds: float,
    variant: str = "delay",
) -> float:
    """QoE of one streamed response (the batch definition, docs/ANDES.md §1).

    Args:
        token_times: Absolute delivery times of the tokens, in seconds, in order.
        arrival: Arrival time ``t0`` of the request, seconds.
        ttft: Target time to first token, seconds (>= 0).
        tds: Target token delivery speed, tokens/s (> 0).
        variant: One of ``VARIANTS``.

    Returns:
        QoE in [0, 1]; 0.0 when no token was delivered.

    Raises:
        ValueError: For an unknown variant, NaN arrival, NaN or negative ttft, tds not
            finite and positive, NaN or decreasing token times, or a token before arrival.
    """
    _check_variant(variant)
    arrival, ttft, tds = float(arrival), float(ttft), float(tds)
    _check_targets(arrival, ttft, tds)
    d = np.asarray(token_times, dtype=np.float64)
    _check_token_times(d, arrival)
    if d.size == 0:
        return 0.0
    a = consumption_times(d, tds=tds)
    e = (arrival + ttft) + np.arange(d.size, dtype=np.float64) / tds
    q = _qoe_from_summary(
        np.array([d.size]),
        a[-1:],
        np.array([a.sum()]),
        np.array([np.maximum(a - e, 0.0).sum()]),
        np.array([arrival]),
        np.array([ttft]),
        np.array([tds]),
        variant,
    )
    return float(q[0])


# --------------------------------------------------------------------------------------
# Running summaries
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class QoEState:
    """Struct of arrays: the O(1)-size running summary of each request's timeline.

    Row i describes request i after ``k = num_tokens[i]`` delivered tokens.

    Attributes:
        arrival_s: Arrival time ``t0`` (float64).
        ttft_s: TTFT *target* (float64); the measured TTFT is ``ttft_s(state)``.
        tds_tok_s: TDS target, tokens/s (float64).
        num_tokens: Tokens delivered so far, ``k`` (int64).
        last_consume_s: ``a_k`` (NaN when k == 0).
        sum_consume_s: ``sum_i a_i``.
        sum_delay_s: ``sum_i max(a_i - e_i, 0)``.
        first_token_s: ``d_1`` (NaN when k == 0).
        last_token_s: ``d_k`` (NaN when k == 0).
    """

    arrival_s: np.ndarray
    ttft_s: np.ndarray
    tds_tok_s: np.ndarray
    num_tokens: np.ndarray
    last_consume_s: np.ndarray
    sum_consume_s: np.ndarray
    sum_delay_s: np.ndarray
    first_token_s: np.ndarray
    last_token_s: np.ndarray

    @classmethod
    def new(
        cls,
        arrival_s: np.ndarray | float,
        ttft_s: np.ndarray | float,
        tds_tok_s: np.ndarray | float,
    ) -> QoEState:
        """State of requests with no token delivered yet (inputs broadcast to 1-D).

        Raises:
            ValueError: For NaN arrivals, NaN or negative TTFT targets, or TDS targets
                that are not finite and positive.
        """
        arrival, ttft, tds = (
            np.array(x, dtype=np.float64)
            for x in np.broadcast_arrays(np.atleast_1d(arrival_s), ttft_s, tds_tok_s)
        )
        _check_target_arrays(arrival, ttft, tds)
        n = arrival.size
        nan = np.full(n, np.nan)
        return cls(
            arrival_s=arrival,
            ttft_s=ttft,
            tds_tok_s=tds,
            num_tokens=np.zeros(n, dtype=np.int64),
            last_consume_s=nan.copy(),
            sum_consume_s=np.zeros(n),
            sum_delay_s=np.zeros(n),
            first_token_s=nan.copy(),
            last_token_s=nan,
        )

    def take(self, idx: np.ndarray | slice | int) -> QoEState:
        """Copy of rows ``idx`` (an int selects a single row, kept 1-D)."""
        if isinstance(idx, int | np.integer):
            idx = [idx]
        if isinstance(idx, np.ndarray | list):
            # Fancy and boolean indexing copy already; a second copy costs a call a field.
            return QoEState(*(getattr(self, name)[idx] for name in _STATE_FIELDS))
        return QoEState(*(np.array(getattr(self, name)[idx]) for name in _STATE_FIELDS))

    def __len__(self) -> int:
        return len(self.arrival_s)


_STATE_FIELDS = tuple(f.name for f in fields(QoEState))


def qoe_of_state(state: QoEState, variant: str = "delay") -> np.ndarray:
    """QoE of the tokens delivered so far (equals ``qoe()`` on them; 0 where k == 0).

    Args:
        state: Running summaries.
        variant: One of ``VARIANTS``.

    Returns:
        float64 array of length ``len(state)``.
    """
    _check_variant(variant)
    return _qoe_from_summary(
        state.num_tokens,
        state.last_consume_s,
        state.sum_consume_s,
        state.sum_delay_s,
        state.arrival_s,
        state.ttft_s,
        state.tds_tok_s,
        variant,
    )


def ttft_s(state: QoEState) -> np.ndarray:
    """Measured time to first token ``d_1 - t0`` (NaN where no token was delivered)."""
    return state.first_token_s - state.arrival_s


def mean_tbt_s(state: QoEState) -> np.ndarray:
    """Mean time between tokens ``(d_k - d_1) / (k - 1)`` (NaN where k < 2)."""
    gaps = state.num_tokens - 1.0
    span_s = state.last_token_s - state.first_token_s
    return np.divide(span_s, gaps, out=np.full(len(state), np.nan), where=gaps > 0)


# --------------------------------------------------------------------------------------
# Prediction on projected timelines
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Growable tracker
# --------------------------------------------------------------------------------------

_FLOAT_FIELDS = (
    "arrival_s",
    "ttft_s",
    "tds_tok_s",
    "last_consume_s",
    "sum_consume_s",
    "sum_delay_s",
    "first_token_s",
    "last_token_s",
)
_E1_ROW = len(_FLOAT_FIELDS)  # the tracker's block row of e1 = t0 + ttft


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
        self._floats = np.full((len(_FLOAT_FIELDS) + 1, capacity), np.nan)
        self._bind_fields()
        self._log_len = 0
        self._log_rows = np.zeros(capacity if self._record else 0, dtype=np.int64)
        self._log_times_s = np.zeros(capacity if self._record else 0)

    def _bind_fields(self) -> None:
        """Per-field names (``_arrival_s``, ..., ``_e1_s``) for the rows of the block."""
        for i, name in enumerate(_FLOAT_FIELDS):
            setattr(self, "_" + name, self._floats[i])
        self._e1_s = self._floats[_E1_ROW]

    def __getstate__(self) -> dict:
        # The per-field views would pickle as copies, detached from the block.
        state = self.__dict__.copy()
        for name in (*_FLOAT_FIELDS, "e1_s"):
            state.pop("_" + name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        if "_floats" not in state:  # pickled before the block: one array per field
            names = (*_FLOAT_FIELDS, "e1_s")
            state = dict(state, _floats=np.stack([state["_" + name] for name in names]))
        self.__dict__.update(state)
        self._bind_fields()

    def __len__(self) -> int:
        return self._size

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
            self._log(idx, np.broadcast_to(t_s, idx.shape))

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
            self._log(np.full(d.size, i, dtype=np.int64), d)

    def _log(self, rows: np.ndarray, times_s: np.ndarray) -> None:
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
            **{name: getattr(self, "_" + name)[:n] for name in _FLOAT_FIELDS},
        )

    def take_state(self, idx: np.ndarray) -> QoEState:
        """``state.take(idx)`` (a copy of rows ``idx``, an int index array) in two gathers.

        The fields are rows of one new block: independent copies of the tracker's rows,
        equal to ``state.take(idx)`` value for value.
        """
        n = len(_FLOAT_FIELDS)
        rows = self._floats[:n, idx]
        return QoEState(
            num_tokens=self._num_tokens[idx], **{_FLOAT_FIELDS[i]: rows[i] for i in range(n)}
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
