"""The shared selection rule, the decision checks and the slot encoding round trip."""

from __future__ import annotations

import numpy as np
import pytest
from policies_support import Req, build, capacity, random_candidates

from andes_gym.agents import make_policy
from andes_gym.core import Decision, InvalidDecision, check_decision, select
from andes_gym.core.features import (
    FeatureSpec,
    observe,
    scores_from_slots,
    slot_action_from_decision,
    slot_order,
)
from andes_gym.core.selection import decision_from_order, priority_order


def cands_with(kv, arrivals=None, running=None, now_s=10.0, cap=None, ids=None):
    n = len(kv)
    arrivals = list(range(n)) if arrivals is None else arrivals
    running = [False] * n if running is None else running
    reqs = [
        Req(
            arrival_s=float(a),
            kv_needed=int(k),
            running=r,
            request_id=None if ids is None else ids[i],
        )
        for i, (a, k, r) in enumerate(zip(arrivals, kv, running, strict=True))
    ]
    return build(reqs, now_s, cap or capacity())


# ------------------------------------------------------------------------------ select
def test_select_follows_score_order():
    cap = capacity(total_kv_blocks=100, max_num_seqs=8)
    cands = cands_with([5, 5, 5, 5], cap=cap)
    decision = select(np.array([0.1, 0.9, 0.5, -2.0]), cands, cap)
    assert decision.order.tolist() == [1, 2, 0, 3]
    assert decision.selected.all()


def test_select_skips_what_does_not_fit_and_keeps_walking():
    cap = capacity(total_kv_blocks=20, max_num_seqs=8)
    cands = cands_with([12, 10, 6, 3], cap=cap)
    decision = select(np.array([4.0, 3.0, 2.0, 1.0]), cands, cap)
    # 12 fits, 10 does not (2 left after 12 + 6), 6 fits, 3 does not... 12 + 6 = 18, 3 > 2.
    assert decision.order.tolist() == [0, 2]
    cands = cands_with([12, 10, 6, 2], cap=cap)
    assert select(np.array([4.0, 3.0, 2.0, 1.0]), cands, cap).order.tolist() == [0, 2, 3]


def test_select_respects_batch_limit():
    cap = capacity(total_kv_blocks=100, max_num_seqs=2)
    cands = cands_with([1, 1, 1, 1], cap=cap)
    decision = select(np.array([1.0, 4.0, 3.0, 2.0]), cands, cap)
    assert decision.order.tolist() == [1, 2]
    assert decision.selected.sum() == 2


def test_select_marks_running_left_out_as_preempted_and_admits_in_order():
    cap = capacity(total_kv_blocks=20, max_num_seqs=8)
    cands = cands_with([10, 10, 10, 5], running=[True, True, False, False], cap=cap)
    decision = select(np.array([1.0, 3.0, 4.0, 2.0]), cands, cap)
    assert decision.order.tolist() == [2, 1]
    assert decision.preempted(cands).tolist() == [0]
    assert decision.admitted(cands).tolist() == [2]


def test_select_breaks_ties_by_arrival_then_id():
    cap = capacity(total_kv_blocks=100, max_num_seqs=3)
    cands = cands_with([1, 1, 1, 1], arrivals=[3, 1, 1, 0], ids=[0, 9, 4, 7], cap=cap)
    decision = select(np.zeros(4), cands, cap)
    assert decision.order.tolist() == [3, 2, 1]
    assert priority_order(np.zeros(4), cands).tolist() == [3, 2, 1, 0]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_select_rejects_non_finite_scores(bad):
    cap = capacity()
    cands = cands_with([1, 1], cap=cap)
    with pytest.raises(InvalidDecision, match=r"scores\[1\]"):
        select(np.array([0.0, bad]), cands, cap)


def test_select_rejects_wrong_shape():
    cap = capacity()
    cands = cands_with([1, 1], cap=cap)
    with pytest.raises(InvalidDecision, match="shape"):
        select(np.zeros(3), cands, cap)


def test_select_on_no_candidates():
    cap = capacity()
    cands = build([], 1.0, cap)
    decision = select(np.zeros(0), cands, cap)
    assert decision.order.tolist() == [] and decision.selected.shape == (0,)


# ------------------------------------------------------------------------ check_decision
def test_check_decision_names_each_broken_invariant():
    cap = capacity(total_kv_blocks=10, max_num_seqs=2)
    cands = cands_with([6, 6, 1], cap=cap)
    with pytest.raises(InvalidDecision, match="KV blocks"):
        check_decision(decision_from_order(np.array([0, 1]), 3), cands, cap)
    with pytest.raises(InvalidDecision, match="max_num_seqs"):
        small = cands_with([1, 1, 1], cap=cap)
        check_decision(decision_from_order(np.array([0, 1, 2]), 3), small, cap)
    sel = np.array([True, False, False])
    with pytest.raises(InvalidDecision, match="more than once"):
        check_decision(Decision(selected=sel, order=np.array([0, 0])), cands, cap)
    with pytest.raises(InvalidDecision, match="exactly the selected"):
        check_decision(Decision(selected=sel, order=np.array([2])), cands, cap)
    with pytest.raises(InvalidDecision, match="index"):
        check_decision(Decision(selected=sel, order=np.array([5])), cands, cap)
    with pytest.raises(InvalidDecision, match="bool array"):
        check_decision(Decision(selected=np.ones(3), order=np.array([0])), cands, cap)
    check_decision(decision_from_order(np.array([2, 0]), 3), cands, cap)


# --------------------------------------------------------------- slots and round trip
@pytest.mark.parametrize("name", ["andes", "fcfs", "edf", "lqf", "sjf_oracle", "round_robin"])
def test_decision_to_slot_action_and_back_is_identity(name):
    """Every candidate in a slot: select(scores_from_slots(action)) reproduces the decision.

    This holds for work-conserving decisions (all of ours): `select` adds anything that still
    fits after the encoded selection, so a decision leaving room would come back larger.
    """
    rng = np.random.default_rng(4)
    policy = make_policy(name)
    policy.reset(0)
    spec = FeatureSpec(k_slots=48)
    for _ in range(20):
        cap = capacity(
            total_kv_blocks=int(rng.integers(20, 300)), max_num_seqs=int(rng.integers(1, 16))
        )
        cands = random_candidates(rng, int(rng.integers(1, 48)), cap)
        decision = policy.decide(cands, cap)
        _, slot_idx = observe(cands, cap, spec)
        action = slot_action_from_decision(decision.order, slot_idx, spec.k_slots)
        assert action.shape == (spec.k_slots,) and np.all(np.abs(action) <= 1.0)
        scores = scores_from_slots(action, slot_idx, len(cands), cands.arrival_s)
        again = select(scores, cands, cap)
        assert again.order.tolist() == decision.order.tolist()


def test_overflow_candidates_score_below_every_slot_oldest_first():
    cap = capacity(total_kv_blocks=1000, max_num_seqs=16)
    cands = cands_with([1] * 6, arrivals=[5, 4, 3, 2, 1, 0], cap=cap)
    slot_idx = slot_order(cands, 2)
    assert slot_idx.tolist() == [5, 4]  # waiting by arrival
    scores = scores_from_slots(np.array([-1.0, -0.5]), slot_idx, 6, cands.arrival_s)
    assert scores[[5, 4]].tolist() == [-1.0, -0.5]
    rest = [3, 2, 1, 0]
    assert scores[rest].max() < -1.0
    assert np.all(np.diff(scores[rest]) < 0)  # rest is listed oldest first: decreasing


def test_observe_shape_bounds_and_slot_mask():
    rng = np.random.default_rng(5)
    cap = capacity(total_kv_blocks=200, max_num_seqs=8)
    for oracle in (False, True):
        spec = FeatureSpec(k_slots=16, oracle=oracle)
        for n in (1, 10, 30):
            cands = random_candidates(rng, n, cap, oracle=oracle)
            obs, slot_idx = observe(cands, cap, spec)
            assert obs.shape == (spec.obs_dim,) and obs.dtype == np.float32
            assert np.all(np.isfinite(obs)) and np.all(np.abs(obs) <= 10.0)
            k, f = spec.k_slots, spec.num_slot_features
            mask = obs[k * f : k * f + k]
            assert mask.sum() == min(n, k) == len(slot_idx)
            running = cands.is_running[slot_idx]
            # Running first, each group by arrival.
            assert not np.any(~running[:-1] & running[1:])
            for group in (slot_idx[running], slot_idx[~running]):
                assert np.all(np.diff(cands.arrival_s[group]) >= 0)
