"""Exact selections of the scoring baselines on hand-built candidate sets."""

from __future__ import annotations

import numpy as np
import pytest
from policies_support import Req, build, capacity

from andes_gym.agents import make_policy
from andes_gym.agents.edf import next_token_deadline_s
from andes_gym.agents.ranking import rank_scores
from andes_gym.core import check_decision


def decide(name, reqs, now_s, cap, **kwargs):
    policy = make_policy(name, **kwargs)
    policy.reset(0)
    cands = build(reqs, now_s, cap)
    decision = policy.decide(cands, cap)
    check_decision(decision, cands, cap)
    return decision, cands


# ----------------------------------------------------------------------------- ranking
def test_rank_scores_is_lexicographic_and_strict():
    primary = np.array([2.0, 1.0, 1.0, 0.0])
    secondary = np.array([0, 5, 3, 9])
    scores = rank_scores(primary, secondary)
    assert list(np.argsort(-scores)) == [3, 2, 1, 0]
    assert len(set(scores.tolist())) == 4


def test_rank_scores_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        rank_scores(np.array([0.0, np.nan]))


# -------------------------------------------------------------------------------- FCFS
def test_fcfs_admits_oldest_first_up_to_batch_limit():
    reqs = [Req(arrival_s=a) for a in (3.0, 1.0, 2.0, 0.0)]
    decision, _ = decide("fcfs", reqs, 4.0, capacity(total_kv_blocks=100, max_num_seqs=2))
    assert decision.order.tolist() == [3, 1]


def test_fcfs_preempts_newest_running_under_kv_pressure():
    reqs = [
        Req(arrival_s=0.0, running=True, kv_needed=12, token_times_s=[1.0]),
        Req(arrival_s=2.0, running=True, kv_needed=12, token_times_s=[2.5]),
        Req(arrival_s=1.0, running=True, kv_needed=12, token_times_s=[1.5]),
        Req(arrival_s=3.0, kv_needed=5),
    ]
    decision, cands = decide("fcfs", reqs, 3.0, capacity(total_kv_blocks=30, max_num_seqs=8))
    assert decision.preempted(cands).tolist() == [1]  # the newest running request
    # The 5-block newcomer still fits after the skipped 12-block one (work-conserving).
    assert decision.order.tolist() == [0, 2, 3]


def test_fcfs_ties_go_to_lower_request_id():
    reqs = [Req(arrival_s=1.0, request_id=7), Req(arrival_s=1.0, request_id=3)]
    decision, _ = decide("fcfs", reqs, 2.0, capacity(max_num_seqs=1))
    assert decision.order.tolist() == [1]


# --------------------------------------------------------------------------------- EDF
def test_edf_orders_by_ttft_or_next_token_deadline():
    reqs = [
        Req(arrival_s=0.0, ttft_s=2.0),  # waiting: deadline 2.0
        Req(
            arrival_s=0.0,
            ttft_s=1.0,
            tds_tok_s=5.0,
            running=True,
            token_times_s=[1.0 + 0.05 * i for i in range(10)],
        ),  # 1 + 10/5 = 3.0
        Req(arrival_s=1.0, ttft_s=0.5),  # waiting: deadline 1.5
        Req(
            arrival_s=-5.0,
            ttft_s=1.0,
            tds_tok_s=2.0,
            running=True,
            token_times_s=[-3.0, -2.5, -2.0, -1.5],
        ),  # -5 + 1 + 4/2 = -2.0
    ]
    decision, cands = decide("edf", reqs, 1.6, capacity(max_num_seqs=2))
    np.testing.assert_allclose(next_token_deadline_s(cands), [2.0, 3.0, 1.5, -2.0])
    assert decision.order.tolist() == [3, 2]
    assert decision.preempted(cands).tolist() == [1]


# --------------------------------------------------------------------------------- LQF
def lqf_requests():
    return [
        # On time, buffer ahead of the reader: QoE 1, nothing due soon.
        Req(
            arrival_s=0.0,
            running=True,
            ttft_s=1.0,
            tds_tok_s=5.0,
            token_times_s=[1.0 + 0.01 * i for i in range(40)],
        ),
        # Waiting well past its TTFT with no token: the worst QoE.
        Req(arrival_s=0.0, ttft_s=1.0),
        # Tokens delivered late: QoE in between.
        Req(
            arrival_s=0.0,
            running=True,
            ttft_s=1.0,
            tds_tok_s=5.0,
            token_times_s=[3.0 + 0.2 * i for i in range(20)],
        ),
        # Brand new, first token due inside the look-ahead: QoE 1 now, gain > 0.
        Req(arrival_s=6.5, ttft_s=1.0),
        # Brand new, TTFT far beyond the look-ahead: QoE 1 now, gain 0.
        Req(arrival_s=6.9, ttft_s=10.0),
    ]


def test_lqf_lowest_current_qoe_first_ties_by_gain():
    cap = capacity(max_num_seqs=8)
    cands = build(lqf_requests(), 7.0, cap)
    q = cands.qoe_now
    assert q[1] < q[2] < 1.0 and q[0] == q[3] == q[4] == 1.0
    gain = cands.q_serve - cands.q_wait
    assert gain[3] > gain[0] == gain[4] == 0.0
    decision, _ = decide("lqf", lqf_requests(), 7.0, capacity(max_num_seqs=3))
    assert decision.order.tolist() == [1, 2, 3]


def test_lqf_gain_key_ranks_by_andes_value():
    cap = capacity(max_num_seqs=8)
    cands = build(lqf_requests(), 7.0, cap)
    gain = cands.q_serve - cands.q_wait
    decision, _ = decide("lqf", lqf_requests(), 7.0, cap, key="gain")
    expected = np.lexsort((cands.request_id, cands.arrival_s, cands.qoe_now, -gain))
    assert decision.order.tolist() == expected.tolist()


def test_lqf_rejects_unknown_key():
    with pytest.raises(ValueError, match="qoe_now"):
        make_policy("lqf", key="age")


# -------------------------------------------------------------------------- SJF oracle
def test_sjf_oracle_shortest_remaining_first():
    reqs = [
        Req(arrival_s=0.0, remaining=50),
        Req(arrival_s=1.0, remaining=5),
        Req(arrival_s=2.0, remaining=20),
        Req(arrival_s=0.5, remaining=5),
    ]
    decision, _ = decide("sjf_oracle", reqs, 3.0, capacity(max_num_seqs=3))
    assert decision.order.tolist() == [3, 1, 2]


def test_sjf_oracle_without_remaining_lengths_is_a_clear_error():
    cap = capacity()
    cands = build([Req(arrival_s=0.0)], 1.0, cap)
    policy = make_policy("sjf_oracle")
    assert policy.oracle
    with pytest.raises(ValueError, match="oracle=True"):
        policy.decide(cands, cap)


# ------------------------------------------------------------------------- round robin
def test_round_robin_rotates_turns():
    cap = capacity(total_kv_blocks=100, max_num_seqs=2)
    policy = make_policy("round_robin", quantum_s=1.0)
    policy.reset()
    arrivals = [0.0, 0.1, 0.2, 0.3]
    running = [False] * 4
    turns = []
    for now in (1.0, 1.5, 2.1, 2.6, 3.2):
        cands = build(
            [Req(arrival_s=a, running=r) for a, r in zip(arrivals, running, strict=True)], now, cap
        )
        decision = policy.decide(cands, cap)
        check_decision(decision, cands, cap)
        turns.append(sorted(decision.order.tolist()))
        running = decision.selected.tolist()
    assert turns == [[0, 1], [0, 1], [2, 3], [2, 3], [0, 1]]


def test_round_robin_reset_clears_the_queue():
    cap = capacity(total_kv_blocks=100, max_num_seqs=1)
    policy = make_policy("round_robin", quantum_s=1.0)
    first = build([Req(arrival_s=0.0, running=True), Req(arrival_s=0.1)], 1.0, cap)
    policy.decide(first, cap)
    later = build([Req(arrival_s=0.0, running=True), Req(arrival_s=0.1)], 2.5, cap)
    assert policy.decide(later, cap).order.tolist() == [1]  # request 0's turn is over
    policy.reset()
    assert policy.decide(later, cap).order.tolist() == [0]  # a fresh queue: by arrival


def test_round_robin_rejects_bad_quantum():
    with pytest.raises(ValueError, match="quantum_s"):
        make_policy("round_robin", quantum_s=0.0)


# ------------------------------------------------------------------------------ random
def test_random_is_reproducible_under_seed():
    cap = capacity(total_kv_blocks=1000, max_num_seqs=5)
    cands = build([Req(arrival_s=float(i)) for i in range(30)], 40.0, cap)
    policy = make_policy("random")

    def run(seed):
        policy.reset(seed)
        return [policy.decide(cands, cap).order.tolist() for _ in range(4)]

    a, b, c = run(1), run(1), run(2)
    assert a == b
    assert a != c
    assert len({tuple(x) for x in a}) > 1  # fresh scores every decision
