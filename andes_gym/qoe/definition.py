"""The QoE definition (docs/ANDES.md §1): on explicit token times (`qoe`) and on the O(1)
running summary of a timeline (`QoEState`, `qoe_of_state`).

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

No token delivered gives QoE 0 (``qoe``, ``qoe_of_state``). Every variant is a closed form
of the running summary (``k``, ``a_k``, ``sum a_i``, ``S_delay``), because
``sum_i (a_n - a_i) = n a_n - sum_i a_i``.

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
