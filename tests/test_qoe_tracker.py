"""Running QoE summaries: QoETracker and predict_qoe against the batch definition."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from andes_gym.qoe import (
    VARIANTS,
    QoEState,
    QoETracker,
    mean_tbt_s,
    predict_qoe,
    qoe,
    qoe_of_state,
    ttft_s,
)

_ABS = 1e-9


def _random_requests(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    arrival = rng.uniform(0.0, 50.0, n)
    ttft = rng.uniform(0.0, 3.0, n)
    tds = np.where(
        rng.random(n) < 0.5, rng.choice([1.0, 3.2, 4.8, 10.0], n), rng.uniform(0.5, 15.0, n)
    )
    return arrival, ttft, tds


def _random_times(rng: np.random.Generator, arrival: float, tds: float, k: int) -> np.ndarray:
    """k delivery times after arrival: bursts (gap 0), fast, on-pace and slow gaps."""
    gaps = rng.choice([0.0, 0.2, 1.0, 3.0], k) / tds * rng.uniform(0.5, 1.5, k)
    return arrival + rng.uniform(0.0, 6.0) + np.cumsum(np.r_[0.0, gaps])[:k]


def _assert_matches_batch(tracker: QoETracker, times: list[np.ndarray], targets: tuple) -> None:
    arrival, ttft, tds = targets
    for variant in VARIANTS:
        got = tracker.qoe(variant=variant)
        want = [
            qoe(t, arrival=arrival[i], ttft=ttft[i], tds=tds[i], variant=variant)
            for i, t in enumerate(times)
        ]
        np.testing.assert_allclose(got, want, rtol=0, atol=_ABS, err_msg=variant)


def test_tracker_matches_batch_qoe_with_interleaved_vector_deliveries() -> None:
    rng = np.random.default_rng(0)
    n = 300
    targets = _random_requests(rng, n)
    arrival, ttft, tds = targets
    lengths = rng.integers(0, 40, n)
    times = [_random_times(rng, arrival[i], tds[i], lengths[i]) for i in range(n)]
    tracker = QoETracker(capacity=8, record_token_times=True)
    rows = tracker.add(arrival, ttft, tds)
    np.testing.assert_array_equal(rows, np.arange(n))
    # Step j delivers token j of every request that has one, each at its own time.
    for j in range(lengths.max()):
        idx = np.flatnonzero(lengths > j)
        tracker.deliver(idx, np.array([times[i][j] for i in idx]))
        if j == 5:  # QoE so far matches too, mid-stream
            prefix = [t[: j + 1] for t in times]
            _assert_matches_batch(tracker, prefix, targets)
    _assert_matches_batch(tracker, times, targets)
    state = tracker.state
    np.testing.assert_array_equal(state.num_tokens, lengths)
    for i in range(n):
        np.testing.assert_array_equal(tracker.token_times(i), times[i])
    has = lengths > 0
    np.testing.assert_allclose(
        ttft_s(state)[has], [times[i][0] - arrival[i] for i in np.flatnonzero(has)]
    )
    assert np.isnan(ttft_s(state)[~has]).all()
    two = lengths > 1
    want_tbt = [(times[i][-1] - times[i][0]) / (lengths[i] - 1) for i in np.flatnonzero(two)]
    np.testing.assert_allclose(mean_tbt_s(state)[two], want_tbt)
    assert np.isnan(mean_tbt_s(state)[~two]).all()


def test_tracker_with_a_common_clock_and_deliver_many() -> None:
    """A simulator-like loop: each iteration a random subset gets a token at the same
    scalar time; some requests also receive chunks through deliver_many."""
    rng = np.random.default_rng(1)
    n = 120
    targets = _random_requests(rng, n)
    arrival, ttft, tds = targets
    tracker = QoETracker(capacity=4)
    tracker.add(arrival, ttft, tds)
    times: list[list[float]] = [[] for _ in range(n)]
    t = 0.0
    for _ in range(200):
        t += rng.choice([0.0, 0.02, 0.3])
        arrived = np.flatnonzero(arrival <= t)
        idx = arrived[rng.random(arrived.size) < 0.4]
        tracker.deliver(idx, t)
        for i in idx:
            times[i].append(t)
        if rng.random() < 0.1 and arrived.size:
            i = int(rng.choice(arrived))
            chunk = t + np.sort(rng.uniform(0.0, 0.05, rng.integers(1, 6)))
            tracker.deliver_many(i, chunk)
            times[i].extend(chunk)
            t = max(t, chunk[-1])
    assert sum(map(len, times)) > 500
    _assert_matches_batch(tracker, [np.array(x) for x in times], targets)


def test_growth_beyond_initial_capacity_keeps_rows() -> None:
    tracker = QoETracker(capacity=2)
    first = tracker.add(0.0, 1.0, 2.0)
    tracker.deliver(first, 1.0)
    for start in range(1, 200, 7):
        rows = tracker.add(np.full(7, float(start)), 1.0, 2.0)
        np.testing.assert_array_equal(rows, np.arange(start, start + 7))
        tracker.deliver(rows, start + 3.0)  # 2 s late each
    assert len(tracker) == 204 and tracker.capacity >= 204
    assert tracker.qoe(first)[0] == 1.0
    np.testing.assert_array_equal(tracker.state.num_tokens, np.ones(204))
    # A single late token scores 0 (no whole area to dilute its delay).
    assert (tracker.qoe()[1:] == 0.0).all()


def test_pickle_round_trip_continues_identically() -> None:
    tracker = QoETracker(capacity=4, record_token_times=True)
    rows = tracker.add([0.0, 1.0, 2.0], [1.0, 1.0, 0.5], [2.0, 4.0, 1.0])
    tracker.deliver(rows, 3.0)
    clone = pickle.loads(pickle.dumps(tracker))
    for tr in (tracker, clone):
        tr.deliver(rows[:2], np.array([3.5, 3.7]))
        tr.add(5.0, 1.0, 1.0)
    for variant in VARIANTS:
        np.testing.assert_array_equal(clone.qoe(variant=variant), tracker.qoe(variant=variant))
    np.testing.assert_array_equal(clone.token_times(1), [3.0, 3.7])


def test_bad_delivery_times_raise_and_change_nothing() -> None:
    tracker = QoETracker(capacity=4)
    rows = tracker.add([0.0, 5.0], 1.0, 1.0)
    tracker.deliver(rows[:1], 2.0)
    before = tracker.qoe()
    with pytest.raises(ValueError, match=r"row 1\b.*arrival 5\.0"):
        tracker.deliver(rows, 4.0)  # row 1 arrives at 5
    with pytest.raises(ValueError, match=r"row 0\b.*previous delivery 2\.0"):
        tracker.deliver(rows[:1], 1.5)
    with pytest.raises(ValueError, match=r"row 0\b"):
        tracker.deliver(rows[:1], float("nan"))
    with pytest.raises(ValueError, match=r"row 3 is not a request"):
        tracker.deliver(np.array([3]), 9.0)  # allocated but never added
    with pytest.raises(ValueError, match=r"row 0\b"):
        tracker.deliver_many(0, np.array([3.0, 2.5]))
    with pytest.raises(ValueError, match=r"row 1\b.*arrival 5\.0"):
        tracker.deliver_many(1, np.array([4.0]))
    np.testing.assert_array_equal(tracker.qoe(), before)
    np.testing.assert_array_equal(tracker.state.num_tokens, [1, 0])


def test_bad_targets_are_rejected_by_add() -> None:
    tracker = QoETracker()
    with pytest.raises(ValueError, match=r"tds_tok_s\[1\] = 0\.0"):
        tracker.add([0.0, 1.0], 1.0, [2.0, 0.0])
    with pytest.raises(ValueError, match=r"ttft_s\[0\] = -1\.0"):
        tracker.add(0.0, -1.0, 2.0)
    assert len(tracker) == 0


def test_token_times_needs_recording_and_reset_keeps_memory() -> None:
    tracker = QoETracker(capacity=2)
    rows = tracker.add([0.0, 0.0, 0.0], 1.0, 1.0)
    tracker.deliver(rows, 1.0)
    with pytest.raises(RuntimeError, match="record_token_times=True"):
        tracker.token_times(0)
    cap = tracker.capacity
    tracker.reset()
    assert len(tracker) == 0 and tracker.capacity == cap
    with pytest.raises(ValueError, match="not a request"):
        tracker.deliver(rows[:1], 2.0)
    rows = tracker.add(10.0, 1.0, 1.0)
    assert rows.tolist() == [0]
    assert tracker.state.num_tokens.tolist() == [0]
    assert tracker.qoe().tolist() == [0.0]


def test_state_take_copies_rows() -> None:
    state = QoEState.new([0.0, 1.0, 2.0], 1.0, [1.0, 2.0, 3.0])
    sub = state.take(np.array([2, 0]))
    assert len(sub) == 2 and sub.tds_tok_s.tolist() == [3.0, 1.0]
    sub.tds_tok_s[0] = 9.0
    assert state.tds_tok_s[2] == 3.0
    assert len(state.take(1)) == 1


# ---------------------------------------------------------------------------------------
# predict_qoe against brute force
# ---------------------------------------------------------------------------------------


def _brute_predict(
    times: np.ndarray,
    targets: tuple[float, float, float],
    *,
    now_s: float,
    horizon_s: float,
    rate: float,
    total: int | None,
    pending: str,
    variant: str,
) -> float:
    """Build the projected token times explicitly and run the batch qoe()."""
    arrival, ttft, tds = targets
    k = times.size
    m = int(np.floor((horizon_s - now_s) * rate + 1e-9)) if rate > 0 else 0
    if total is not None:
        m = min(m, max(total - k, 0))
    served = now_s + np.arange(1, m + 1) / rate if m else np.empty(0)
    if pending == "all":
        target = total
    else:
        target = max(int(np.floor((horizon_s - arrival - ttft) * tds + 1e-9)) + 1, 0)
        target = target if total is None else min(target, total)
    p = max(target - k - m, 0)
    timeline = np.r_[times, served]
    # The last served token may land a hair after H (the 1e-9 slack in M); pending
    # tokens delivered at max(H, that) are consumed exactly as if delivered at H.
    last = timeline[-1] if timeline.size else horizon_s
    timeline = np.r_[timeline, np.full(p, max(horizon_s, last))]
    if timeline.size == 0:
        return 1.0
    return qoe(timeline, arrival=arrival, ttft=ttft, tds=tds, variant=variant)


def _rate_for(rng: np.random.Generator, tds: float) -> float:
    kind = rng.integers(5)
    return [
        0.0,
        tds * rng.uniform(0.1, 0.99),
        tds,
        tds * rng.uniform(1.01, 6.0),
        rng.uniform(0.2, 40.0),
    ][kind]


@pytest.mark.parametrize("variant", VARIANTS)
def test_predict_qoe_matches_brute_force(variant: str) -> None:
    rng = np.random.default_rng(7)
    n = 40
    for scenario in range(50):
        # Requests that arrived up to 10 s before now, some still inside their TTFT
        # target, some ahead of their ideal timeline (bursts), some far behind it.
        now_s = 60.0 + rng.uniform(0.0, 1.0)
        _, ttft, tds = _random_requests(rng, n)
        arrival = now_s - rng.uniform(0.0, 10.0, n)
        times = [_random_times(rng, arrival[i], tds[i], rng.integers(0, 25)) for i in range(n)]
        times = [t[t <= now_s] for t in times]
        if scenario % 2:  # now is exactly the last delivery of some requests
            times = [np.r_[t, now_s] if rng.random() < 0.3 else t for t in times]
        k = np.array([t.size for t in times])
        tracker = QoETracker(capacity=n)
        tracker.add(arrival, ttft, tds)
        for i in range(n):
            tracker.deliver_many(i, times[i])
        horizon_s = now_s + rng.choice([0.0, 1.0, rng.uniform(0.0, 6.0)])
        rate = np.array([_rate_for(rng, tds[i]) for i in range(n)])
        pending = "all" if scenario % 3 == 0 else "due"
        total = None
        if pending == "all" or scenario % 3 == 1:
            total = k + rng.integers(0, 12, n)
            finished = rng.random(n) < 0.2
            total[finished] = k[finished]
        got = predict_qoe(
            tracker.state,
            now_s=now_s,
            horizon_s=horizon_s,
            rate_tok_s=rate,
            variant=variant,
            total_tokens=total,
            pending=pending,
        )
        for i in range(n):
            want = _brute_predict(
                times[i],
                (arrival[i], ttft[i], tds[i]),
                now_s=now_s,
                horizon_s=horizon_s,
                rate=rate[i],
                total=None if total is None else int(total[i]),
                pending=pending,
                variant=variant,
            )
            assert got[i] == pytest.approx(want, abs=1e-8), (scenario, i, k[i], rate[i], tds[i])


def test_predict_qoe_special_cases() -> None:
    # Row 0 finished (3 of 3 tokens), row 1 unfinished (1 of 4), row 2 nothing yet.
    tracker = QoETracker(record_token_times=True)
    rows = tracker.add([0.0, 0.0, 4.0], 1.0, 1.0)
    tracker.deliver_many(0, np.array([1.0, 2.5, 3.0]))
    tracker.deliver(rows[1:2], 2.0)
    total = np.array([3, 4, 2])
    t = 6.0
    lower = predict_qoe(
        tracker.state, now_s=t, horizon_s=t, rate_tok_s=0.0, total_tokens=total, pending="all"
    )
    assert lower[0] == pytest.approx(tracker.qoe()[0])
    # Unfinished: the remaining 3 tokens delivered at t (the truncation lower bound).
    assert lower[1] == pytest.approx(qoe([2.0, 6.0, 6.0, 6.0], arrival=0.0, ttft=1.0, tds=1.0))
    assert lower[2] == pytest.approx(qoe([6.0, 6.0], arrival=4.0, ttft=1.0, tds=1.0))
    # Nothing delivered, nothing due yet (row 2's first ideal time is 5.0 > 4.5): 1.0.
    early = predict_qoe(tracker.state, now_s=4.5, horizon_s=4.5, rate_tok_s=0.0)
    assert early[2] == 1.0
    assert early[1] < 1.0  # tokens 2-4 were due by 4.5 and count as delivered then


def test_predict_serving_beats_waiting_for_a_late_request() -> None:
    state = QoEState.new([0.0], 1.0, 4.0)
    serve = predict_qoe(state, now_s=0.5, horizon_s=3.0, rate_tok_s=20.0)
    wait = predict_qoe(state, now_s=0.5, horizon_s=3.0, rate_tok_s=0.0)
    assert serve[0] == 1.0  # tokens arrive before they are due: on time
    assert wait[0] < serve[0]


def test_predict_qoe_validation() -> None:
    state = QoEState.new([0.0, 1.0], 1.0, 2.0)
    with pytest.raises(ValueError, match="total_tokens"):
        predict_qoe(state, now_s=1.0, horizon_s=2.0, rate_tok_s=1.0, pending="all")
    with pytest.raises(ValueError, match=r"'some'.*due.*all"):
        predict_qoe(state, now_s=1.0, horizon_s=2.0, rate_tok_s=1.0, pending="some")
    with pytest.raises(ValueError, match=r"horizon_s = 0\.5.*now_s = 1\.0"):
        predict_qoe(state, now_s=1.0, horizon_s=0.5, rate_tok_s=1.0)
    with pytest.raises(ValueError, match=r"rate_tok_s\[1\] = -1\.0"):
        predict_qoe(state, now_s=1.0, horizon_s=2.0, rate_tok_s=np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"'v1'.*delay"):
        predict_qoe(state, now_s=1.0, horizon_s=2.0, rate_tok_s=1.0, variant="v1")
    with pytest.raises(ValueError, match=r"'v1'.*delay"):
        qoe_of_state(state, "v1")
