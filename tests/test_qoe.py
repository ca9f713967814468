"""The batch QoE definition (docs/ANDES.md §1): hand-computed cases and properties.

Notation: arrival t0, target ttft, target speed tds, delivery times d_i, ideal times
e_i = t0 + ttft + (i-1)/tds, consumption a_1 = d_1, a_i = max(d_i, a_{i-1} + 1/tds),
D = sum_i max(a_i - e_i, 0), W = sum_i (a_n - a_i).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andes_gym.qoe import VARIANTS, consumption_times, qoe

# ---------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_on_time_is_one(variant: str) -> None:
    # t0 = 0, ttft = 1, tds = 2: e = 1, 1.5, 2, ..., delivered exactly then.
    d = 1.0 + np.arange(12) / 2.0
    assert qoe(d, arrival=0.0, ttft=1.0, tds=2.0, variant=variant) == 1.0


@pytest.mark.parametrize(
    ("variant", "expected"), [("delay", 3 / 7), ("delay_fixed", 3 / 7), ("area", 0.5)]
)
def test_uniformly_late(variant: str, expected: float) -> None:
    # t0 = 0, ttft = 1, tds = 2, 4 tokens each 1 s late.
    # e = 1, 1.5, 2, 2.5; d = a = 2, 2.5, 3, 3.5.
    # D = 4 * 1 = 4; W = 1.5 + 1 + 0.5 = 3 -> delay: 1 - 4/7 = 3/7.
    # delay_fixed: sum (e_n - e_i) = n(n-1)/(2 tds) = 3 -> also 3/7 (spacing unchanged).
    # area: T = a_n - t0 - ttft = 2.5 > n/tds = 2, S_exp = n^2/(2 tds) + n (T - n/tds)
    #       = 4 + 2 = 6; S_act = W = 3 -> 0.5.
    d = [2.0, 2.5, 3.0, 3.5]
    assert qoe(d, arrival=0.0, ttft=1.0, tds=2.0, variant=variant) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("variant", "expected"), [("delay", 2 / 3), ("delay_fixed", 0.5), ("area", 0.8)]
)
def test_first_token_on_time_then_slow(variant: str, expected: float) -> None:
    # t0 = 0, ttft = 1, tds = 1; d = a = 1, 3, 5; e = 1, 2, 3.
    # D = 0 + 1 + 2 = 3; W = 4 + 2 = 6 -> delay 6/9; delay_fixed: E = 3 -> 3/6.
    # area: T = 4 > n/tds = 3 -> S_exp = 9/2 + 3 * 1 = 7.5; S_act = 6 -> 0.8.
    d = [1.0, 3.0, 5.0]
    assert qoe(d, arrival=0.0, ttft=1.0, tds=1.0, variant=variant) == pytest.approx(expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_late_first_token_then_fast_cannot_catch_up(variant: str) -> None:
    # First token 2 s late, the rest right behind it (faster than tds = 1): the client
    # paces them, a = 3, 4, 5, 6, exactly the timeline of "every token 2 s late".
    fast = qoe([3.0, 3.1, 3.2, 3.3], arrival=0.0, ttft=1.0, tds=1.0, variant=variant)
    late = qoe([3.0, 4.0, 5.0, 6.0], arrival=0.0, ttft=1.0, tds=1.0, variant=variant)
    assert fast == pytest.approx(late)
    # D = 8, W = 6 -> 6/14 for both delay forms (sum (e_n - e_i) = 6 as well).
    if variant != "area":
        assert fast == pytest.approx(6 / 14)


@pytest.mark.parametrize("variant", VARIANTS)
def test_single_token(variant: str) -> None:
    kw = {"arrival": 10.0, "ttft": 2.0, "tds": 4.0, "variant": variant}
    assert qoe([12.0], **kw) == 1.0  # exactly on time
    assert qoe([11.0], **kw) == 1.0  # early
    assert qoe([12.5], **kw) == 0.0  # late: W = 0, so any delay is total
    # Rounding in the target (0.1 + 0.2 != 0.3) must not turn "on time" into 0.
    assert qoe([0.3], arrival=0.1, ttft=0.2, tds=1.0, variant=variant) == 1.0


@pytest.mark.parametrize("variant", VARIANTS)
def test_everything_at_first_ideal_time_is_one(variant: str) -> None:
    # All 8 tokens at e_1 = 1: the buffer releases them at e_i exactly.
    assert qoe([1.0] * 8, arrival=0.0, ttft=1.0, tds=3.0, variant=variant) == 1.0


def test_delivering_faster_than_tds_earns_nothing() -> None:
    # All at arrival (before the TTFT target) is still just "on time".
    assert qoe([0.0] * 8, arrival=0.0, ttft=1.0, tds=3.0) == 1.0
    # Late by 1 s, then the rest instantly vs at exactly tds: same QoE.
    burst = qoe([2.0] * 5, arrival=0.0, ttft=1.0, tds=2.0)
    paced = qoe(2.0 + np.arange(5) / 2.0, arrival=0.0, ttft=1.0, tds=2.0)
    assert burst == pytest.approx(paced)
    assert burst < 1.0


def test_early_lateness_costs_more_than_late_lateness() -> None:
    # 10 tokens at tds = 1 (t0 = 0, ttft = 1), 3 s of lateness:
    # (a) first token 3 s late: every a_i = e_i + 3, D = 30, W = 45 -> 0.6.
    # (b) only the last token 3 s late: D = 3, W = 45 + 9 * 3 = 72 -> 72/75 = 0.96.
    e = 1.0 + np.arange(10)
    early = qoe(e + 3.0, arrival=0.0, ttft=1.0, tds=1.0)
    at_end = qoe(np.r_[e[:-1], e[-1] + 3.0], arrival=0.0, ttft=1.0, tds=1.0)
    assert early == pytest.approx(0.6)
    assert at_end == pytest.approx(0.96)


@pytest.mark.parametrize("ttft", [0.0, 1.0])
def test_last_token_quirk_of_the_paper_form(ttft: float) -> None:
    """The example of docs/ANDES.md §1: 10 tokens at 1 tok/s, each 1 s late -> 0.818; the last one
    5 s later still -> 0.857. Only lateness matters, so it holds for t0 = 0 with ttft 0
    or 1 alike:
    D = 10, W = 45 -> 1 - 10/55 = 0.818;
    last token 6 s late: D = 9 + 6 = 15, W = 45 + 9 * 5 = 90 -> 1 - 15/105 = 0.857.
    """
    d = ttft + np.arange(10) + 1.0
    d_last_later = np.r_[d[:-1], d[-1] + 5.0]
    kw = {"arrival": 0.0, "ttft": ttft, "tds": 1.0}
    assert round(qoe(d, **kw), 3) == 0.818
    assert round(qoe(d_last_later, **kw), 3) == 0.857  # delaying the last token raised it
    # delay_fixed normalizes by the ideal area E = 45: 45/55 -> 45/60, monotone.
    assert qoe(d, **kw, variant="delay_fixed") == pytest.approx(45 / 55)
    assert qoe(d_last_later, **kw, variant="delay_fixed") == pytest.approx(45 / 60)


def test_delaying_a_middle_token_can_raise_the_paper_form() -> None:
    """Counterexample to the too-strong claim "delaying any other token never raises it" (docs/ANDES.md §1 gives the correct condition).

    t0 = 0, ttft = 0, tds = 1, d = 10, 11, 12 (e = 0, 1, 2): D = 30, W = 3 -> 1/11.
    Delay token 2 to 12 (token 3 unchanged): pacing pushes a_3 to 13, so a = 10, 12, 13,
    D = 10 + 11 + 11 = 32, W = 3 + 1 = 4 -> 4/36 = 1/9 > 1/11. Delaying a non-last token
    raises QoE whenever its delay propagates to a_n; it cannot when a_n stays put
    (see test_delaying_without_moving_last_consumption_never_raises_qoe).
    """
    kw = {"arrival": 0.0, "ttft": 0.0, "tds": 1.0}
    assert qoe([10.0, 11.0, 12.0], **kw) == pytest.approx(1 / 11)
    assert qoe([10.0, 12.0, 12.0], **kw) == pytest.approx(1 / 9)
    assert qoe([10.0, 12.0, 12.0], **kw, variant="delay_fixed") < qoe(
        [10.0, 11.0, 12.0], **kw, variant="delay_fixed"
    )


def test_no_token_is_zero() -> None:
    for variant in VARIANTS:
        assert qoe([], arrival=0.0, ttft=1.0, tds=1.0, variant=variant) == 0.0


def test_consumption_times_paces_early_tokens() -> None:
    a = consumption_times(np.array([1.0, 1.0, 4.0, 4.1, 9.0]), tds=2.0)
    np.testing.assert_allclose(a, [1.0, 1.5, 4.0, 4.5, 9.0])


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"ttft": float("nan")}, r"ttft.*nan"),
        ({"ttft": -0.5}, r"ttft.*-0\.5"),
        ({"tds": 0.0}, r"tds.*0\.0"),
        ({"tds": -2.0}, r"tds.*-2\.0"),
        ({"tds": float("nan")}, r"tds.*nan"),
        ({"arrival": float("nan")}, r"arrival.*nan"),
        ({"variant": "bogus"}, r"'bogus'.*delay.*delay_fixed.*area"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, pattern: str) -> None:
    args = {"arrival": 0.0, "ttft": 1.0, "tds": 1.0} | kwargs
    with pytest.raises(ValueError, match=pattern):
        qoe([1.0, 2.0], **args)


def test_bad_token_times_name_the_index() -> None:
    with pytest.raises(ValueError, match=r"token_times\[2\] = 1\.5"):
        qoe([1.0, 2.0, 1.5], arrival=0.0, ttft=1.0, tds=1.0)
    with pytest.raises(ValueError, match=r"token_times\[0\] = 4\.0.*arrival 5\.0"):
        qoe([4.0, 6.0], arrival=5.0, ttft=1.0, tds=1.0)
    with pytest.raises(ValueError, match=r"token_times\[1\] is nan"):
        qoe([6.0, float("nan")], arrival=5.0, ttft=1.0, tds=1.0)


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

_TOL = 1e-9


@st.composite
def timelines(draw: st.DrawFn) -> tuple[np.ndarray, dict]:
    """A valid response: targets and non-decreasing delivery times after arrival."""
    arrival = draw(st.floats(0.0, 100.0))
    ttft = draw(st.floats(0.0, 5.0))
    tds = draw(st.floats(0.5, 20.0))
    n = draw(st.integers(1, 25))
    first = draw(st.floats(0.0, 15.0))
    gaps = draw(st.lists(st.floats(0.0, 3.0), min_size=n - 1, max_size=n - 1))
    d = arrival + first + np.cumsum([0.0, *gaps])
    return d, {"arrival": arrival, "ttft": ttft, "tds": tds}


@settings(max_examples=200, deadline=None)
@given(timelines(), st.sampled_from(VARIANTS))
def test_qoe_is_in_unit_interval(tl: tuple, variant: str) -> None:
    d, kw = tl
    assert 0.0 <= qoe(d, **kw, variant=variant) <= 1.0


@settings(max_examples=200, deadline=None)
@given(timelines(), st.floats(0.0, 20.0), st.sampled_from(VARIANTS))
def test_shifting_the_whole_response_later_never_raises_qoe(
    tl: tuple, shift_s: float, variant: str
) -> None:
    # The spec states it for the paper's form; it holds for all three variants (the
    # shifted timeline has the same W and S_actual, and larger D and S_expected).
    d, kw = tl
    assert qoe(d + shift_s, **kw, variant=variant) <= qoe(d, **kw, variant=variant) + _TOL


@settings(max_examples=200, deadline=None)
@given(timelines(), st.data())
def test_delay_fixed_never_rises_when_tokens_are_delayed(tl: tuple, data: st.DataObject) -> None:
    d, kw = tl
    extra = np.array(data.draw(st.lists(st.floats(0.0, 10.0), min_size=d.size, max_size=d.size)))
    # Sorting keeps every token at or after its old time (k-th smallest of d + extra
    # is >= k-th smallest of d).
    later = np.sort(d + extra)
    fixed = {"variant": "delay_fixed", **kw}
    assert qoe(later, **fixed) <= qoe(d, **fixed) + _TOL


@settings(max_examples=200, deadline=None)
@given(timelines(), st.data())
def test_delaying_without_moving_last_consumption_never_raises_qoe(
    tl: tuple, data: st.DataObject
) -> None:
    """Paper form: delaying tokens other than the last never raises QoE, as long as the
    delay does not push the last token's consumption a_n (then W can only shrink and D
    only grow). The unqualified claim, for any non-last token, is false in general (docs/ANDES.md §1):
    see test_delaying_a_middle_token_can_raise_the_paper_form."""
    d, kw = tl
    n, tds = d.size, kw["tds"]
    a_n = consumption_times(d, tds=tds)[-1]
    extra = np.array(data.draw(st.lists(st.floats(0.0, 10.0), min_size=n - 1, max_size=n - 1)))
    # Token j may arrive up to a_n - (n - j)/tds without moving a_n, and up to d_n
    # without overtaking the last token; both caps increase with j, so sorting keeps them.
    cap = np.minimum(a_n - (n - np.arange(1, n)) / tds, d[-1])
    later = np.r_[np.sort(np.minimum(d[:-1] + extra, np.maximum(cap, d[:-1]))), d[-1]]
    assert np.all(later >= d)
    assert consumption_times(later, tds=tds)[-1] == pytest.approx(a_n, abs=1e-9)
    assert qoe(later, **kw) <= qoe(d, **kw) + _TOL


@settings(max_examples=200, deadline=None)
@given(timelines(), st.sampled_from(VARIANTS), st.data())
def test_buffered_tokens_can_arrive_any_earlier_without_changing_qoe(
    tl: tuple, variant: str, data: st.DataObject
) -> None:
    """Delivering faster than tds earns nothing: a token that waited in the buffer
    (d_i <= a_{i-1} + 1/tds) may be delivered anywhere in [d'_{i-1}, a_i] and every
    consumption time, so the QoE, stays the same."""
    d, kw = tl
    a = consumption_times(d, tds=kw["tds"])
    moved = d.copy()
    for i in range(1, d.size):
        if d[i] <= a[i - 1] + 1.0 / kw["tds"]:
            u = data.draw(st.floats(0.0, 1.0))
            moved[i] = moved[i - 1] + u * (a[i] - moved[i - 1])
    np.testing.assert_allclose(consumption_times(moved, tds=kw["tds"]), a, rtol=0, atol=1e-9)
    expected = qoe(d, **kw, variant=variant)
    assert qoe(moved, **kw, variant=variant) == pytest.approx(expected, abs=1e-9)
    # In particular, delivering each token at its consumption time changes nothing.
    assert qoe(a, **kw, variant=variant) == pytest.approx(expected, abs=1e-9)
