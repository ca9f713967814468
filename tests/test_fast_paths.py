"""The fast paths of a surrogate step give the same bits as the plain computations.

`predict_qoe_many` (the candidates' three predictions in one pass), `qoe_if_completed_at`
(the reward potential), `QoETracker.take_state` / its block storage, and the round-based
`select` are speed-ups; each is checked here, bit for bit, against the computation it
replaces.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import _clip
from andes_gym.core.selection import priority_order, select
from andes_gym.qoe import (
    VARIANTS,
    QoEState,
    QoETracker,
    predict_qoe,
    predict_qoe_many,
    qoe_if_completed_at,
)


def _tracker(rng: np.random.Generator, n: int) -> QoETracker:
    """n requests with 0..30 delivered tokens each: on time, early, bursty and late."""
    tracker = QoETracker(capacity=4)
    arrival = rng.uniform(0.0, 10.0, n)
    tracker.add(arrival, rng.choice([0.0, 0.5, 1.0, 2.0], n), rng.choice([1.0, 3.2, 4.8, 20.0], n))
    for i in range(n):
        k = int(rng.integers(0, 30))
        if k:
            gaps = rng.exponential(rng.choice([0.05, 0.3, 1.0]), k)
            tracker.deliver_many(i, arrival[i] + rng.uniform(0.0, 3.0) + np.cumsum(gaps))
    return tracker


def _bits(x: np.ndarray) -> bytes:
    return np.ascontiguousarray(x, dtype=np.float64).tobytes()


@pytest.mark.parametrize("variant", VARIANTS)
def test_predict_qoe_many_rows_are_predict_qoe_bit_for_bit(variant: str) -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(0, 30))
        state = _tracker(rng, n).state
        now = float(np.nanmax(np.r_[state.last_token_s, state.arrival_s, 0.0])) + rng.uniform(0, 2)
        per_request = rng.choice([0.0, 2.0, 40.0], n)
        scenarios = [(now, 0.0), (now + 1.0, 30.0), (now + 1.0, 0.0), (now + 2.5, 0.7)]
        for total in (None, state.num_tokens + rng.integers(0, 20, n)):
            for pending in ("due", "all") if total is not None else ("due",):
                kw = dict(variant=variant, total_tokens=total, pending=pending)
                many = predict_qoe_many(
                    state,
                    now_s=now,
                    horizons_s=[h for h, _ in scenarios],
                    rates_tok_s=[r for _, r in scenarios],
                    **kw,
                )
                assert many.shape == (len(scenarios), n)
                for row, (h, r) in zip(many, scenarios, strict=True):
                    one = predict_qoe(state, now_s=now, horizon_s=h, rate_tok_s=r, **kw)
                    assert _bits(row) == _bits(one), (trial, h, r, pending)
                # Per-request rates (one row per scenario) go through the served projection.
                rates = np.stack([per_request, np.full(n, 30.0)])
                many = predict_qoe_many(
                    state, now_s=now, horizons_s=[now + 1.0, now + 2.0], rates_tok_s=rates, **kw
                )
                one = predict_qoe(
                    state, now_s=now, horizon_s=now + 1.0, rate_tok_s=per_request, **kw
                )
                assert _bits(many[0]) == _bits(one)


def test_predict_qoe_many_keeps_exactness_for_infinite_targets() -> None:
    # An infinite TTFT makes the served terms NaN even when nothing is served; the waiting
    # scenarios must then not skip them (the shortcut assumes finite ideal times).
    rng = np.random.default_rng(1)
    state = _tracker(rng, 12).state.take(np.arange(12))
    state.ttft_s[:3] = np.inf
    now = 40.0
    with np.errstate(invalid="ignore"):  # inf * 0 in the served terms, as predict_qoe has
        many = predict_qoe_many(state, now_s=now, horizons_s=[now, now + 1], rates_tok_s=[0.0, 0.0])
        for row, h in zip(many, [now, now + 1], strict=True):
            assert _bits(row) == _bits(predict_qoe(state, now_s=now, horizon_s=h, rate_tok_s=0.0))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(horizons_s=[1.0, 0.5], rates_tok_s=[0.0, 0.0]), "horizon_s = 0.5 must be >= now_s"),
        (dict(horizons_s=[2.0], rates_tok_s=[-1.0]), "expected a finite rate >= 0"),
        (dict(horizons_s=[2.0, 3.0], rates_tok_s=[1.0]), "rates_tok_s has shape"),
        (dict(horizons_s=[[2.0]], rates_tok_s=[1.0]), "horizons_s must be 1-D"),
        (dict(horizons_s=[2.0], rates_tok_s=[1.0], pending="all"), "needs total_tokens"),
    ],
)
def test_predict_qoe_many_checks_its_arguments(kwargs: dict, match: str) -> None:
    state = QoEState.new([0.0, 0.5], 1.0, 4.0)
    with pytest.raises(ValueError, match=match):
        predict_qoe_many(state, now_s=1.0, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
def test_qoe_if_completed_at_is_the_pending_all_prediction(variant: str) -> None:
    rng = np.random.default_rng(2)
    tracker = _tracker(rng, 60)
    state = tracker.state
    now = float(np.nanmax(state.last_token_s)) + 0.3
    total = state.num_tokens + rng.integers(0, 15, 60)  # some finished (no token missing)
    rows = rng.permutation(60)[:35]
    want = predict_qoe(
        state.take(rows),
        now_s=now,
        horizon_s=now,
        rate_tok_s=0.0,
        variant=variant,
        total_tokens=total[rows],
        pending="all",
    )
    got = qoe_if_completed_at(
        state, now_s=now, total_tokens=total[rows], variant=variant, rows=rows
    )
    assert _bits(got) == _bits(want)
    from_tracker = tracker.qoe_if_completed_at(
        rows, now_s=now, total_tokens=total[rows], variant=variant
    )
    assert _bits(from_tracker) == _bits(want)
    everyone = qoe_if_completed_at(state, now_s=now, total_tokens=total, variant=variant)
    assert _bits(everyone[rows]) == _bits(want)


def test_take_state_copies_the_rows_like_state_take() -> None:
    tracker = _tracker(np.random.default_rng(3), 20)
    rows = np.array([5, 0, 19, 7])
    fast, plain = tracker.take_state(rows), tracker.state.take(rows)
    for name in QoEState.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(fast, name), getattr(plain, name), err_msg=name)
        assert getattr(fast, name).dtype == getattr(plain, name).dtype
    fast.sum_delay_s[:] = -1.0  # a copy: the tracker is untouched
    assert (tracker.state.sum_delay_s >= 0).all()


def test_tracker_keeps_its_fields_bound_after_growth_and_pickling() -> None:
    tracker = QoETracker(capacity=2)
    tracker.add(np.arange(5.0), 0.5, 4.0)  # grows past the initial capacity
    tracker.deliver(np.arange(5), 6.0)
    twin = pickle.loads(pickle.dumps(tracker))
    for t in (tracker, twin):
        t.deliver(np.array([1, 3]), 7.0)
        t.deliver(np.int64(4), 7.5)  # a scalar row works as a one-row array
        t.add([0.5, 2.0, 1.5], 0.5, 4.0)
        t.deliver_many(6, [8.0, 8.1])
    for name in QoEState.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(twin.state, name), getattr(tracker.state, name))
    np.testing.assert_array_equal(twin.state.num_tokens, [1, 2, 1, 2, 2, 0, 2, 0])


def _select_one_by_one(scores: np.ndarray, cands: Candidates, cap: Capacity) -> np.ndarray:
    """The selection rule written plainly (the previous implementation): the longest
    prefix that fits, then a walk over the rest, one candidate at a time."""
    order = priority_order(scores, cands)
    need = cands.kv_blocks_needed[order]
    blocks, seqs = cap.total_kv_blocks, cap.max_num_seqs
    cum = np.cumsum(need)
    prefix = min(int(np.searchsorted(cum, blocks, side="right")), seqs)
    picked = list(order[:prefix])
    if prefix:
        blocks -= int(cum[prefix - 1])
        seqs -= prefix
    for pos in range(prefix + 1, len(order)):
        if seqs == 0 or blocks == 0:
            break
        if need[pos] <= blocks:
            picked.append(order[pos])
            blocks -= int(need[pos])
            seqs -= 1
    return np.asarray(picked, dtype=np.int64)


def _candidates(rng: np.random.Generator, need: np.ndarray) -> Candidates:
    n = len(need)
    state = QoEState.new(np.sort(rng.uniform(0, 5, n)), 1.0, 4.0)
    zeros_f, zeros_i = np.zeros(n), np.zeros(n, dtype=np.int64)
    return Candidates(
        now_s=5.0,
        lookahead_s=1.0,
        request_id=rng.permutation(n),
        is_running=rng.random(n) < 0.5,
        arrival_s=state.arrival_s,
        prompt_tokens=zeros_i,
        tokens_delivered=zeros_i,
        kv_blocks_held=zeros_i,
        kv_blocks_needed=need.astype(np.int64),
        ttft_s=state.ttft_s,
        tds_tok_s=state.tds_tok_s,
        num_preemptions=zeros_i,
        qoe_now=zeros_f,
        q_serve=zeros_f,
        q_wait=zeros_f,
        qoe_state=state,
    )


def test_select_matches_the_one_by_one_walk() -> None:
    rng = np.random.default_rng(5)
    for trial in range(2000):
        # Short rests are walked; long ones (over 128 candidates) go through rounds first.
        n = int(rng.integers(1, 50)) if trial % 2 else int(rng.integers(150, 600))
        need = [
            rng.integers(0, 20, n),  # zeros included: they stop at an exactly used budget
            rng.integers(1, 5, n) * rng.choice([1, 10], n),  # big and small: many skips
            np.sort(rng.integers(1, 30, n))[::-1],  # decreasing: a skip every round
            rng.integers(-3, 20, n),  # invalid sizes still give the same answer
        ][(trial // 2) % 4]
        cands = _candidates(rng, need)
        seqs = int(rng.integers(1, n + 3))
        cap = Capacity(
            total_kv_blocks=int(rng.integers(1, 15 * n)),
            free_kv_blocks=0,
            block_size=16,
            max_num_seqs=seqs,
            iter_latency_s=np.zeros(seqs + 1),
        )
        scores = rng.choice([0.0, 0.5, 1.0], n) if trial % 3 == 0 else rng.random(n)
        decision = select(scores, cands, cap)
        want = _select_one_by_one(scores, cands, cap)
        np.testing.assert_array_equal(decision.order, want, err_msg=f"trial {trial}")
        assert decision.selected.sum() == len(want)


def test_clip_is_np_clip() -> None:
    x = np.array([-12.0, -4.0, -0.0, 0.0, 3.5, 4.0, 9.0, np.nan, np.inf, -np.inf])
    assert _bits(_clip(x, -4.0, 4.0)) == _bits(np.clip(x, -4.0, 4.0))
    y = x.astype(np.float32)
    out = y.copy()
    _clip(out, -10.0, 10.0, out=out)
    assert out.tobytes() == np.clip(y, -10.0, 10.0).tobytes()
