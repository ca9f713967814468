"""Invariants every registered policy keeps on every decision, and the registry's contract."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from policies_support import capacity, random_candidates

from andes_gym.agents import make_policy, policy_class, register, registered_policies
from andes_gym.agents.base import Policy
from andes_gym.core import check_decision

EXPECTED_POLICIES = [
    "andes",
    "andes_dp",
    "edf",
    "fcfs",
    "lqf",
    "random",
    "round_robin",
    "sjf_oracle",
]


def test_every_expected_policy_is_registered_under_its_name():
    assert set(EXPECTED_POLICIES) <= set(registered_policies())
    for name in EXPECTED_POLICIES:
        cls = policy_class(name)
        assert issubclass(cls, Policy)
        assert cls.name == name
        assert cls.__doc__ and len(cls.__doc__) > 80
    assert [n for n in EXPECTED_POLICIES if policy_class(n).oracle] == ["sjf_oracle"]


@pytest.mark.parametrize("name", EXPECTED_POLICIES)
def test_invariants_on_random_decisions(name):
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    policy = make_policy(name)
    policy.reset(0)
    now = 100.0
    for _ in range(25):
        cap = capacity(
            total_kv_blocks=int(rng.integers(20, 400)),
            max_num_seqs=int(rng.integers(1, 24)),
            per_seq_s=float(rng.uniform(0.0, 0.01)),
        )
        now += float(rng.uniform(0.0, 2.0))
        cands = random_candidates(rng, int(rng.integers(1, 40)), cap, now_s=now)
        frozen = {k: v.copy() for k, v in vars(cands).items() if isinstance(v, np.ndarray)}
        frozen.update({f"qoe_state.{k}": v.copy() for k, v in vars(cands.qoe_state).items()})
        decision = policy.decide(cands, cap)
        check_decision(decision, cands, cap)
        order = decision.order
        assert len(set(order.tolist())) == len(order)
        assert cands.kv_blocks_needed[order].sum() <= cap.total_kv_blocks
        assert len(order) <= cap.max_num_seqs
        # Work-conserving: nothing left out would still fit.
        left_w = cap.total_kv_blocks - cands.kv_blocks_needed[order].sum()
        if len(order) < cap.max_num_seqs:
            assert not (cands.kv_blocks_needed[~decision.selected] <= left_w).any()
        # decide never mutates its inputs.
        for key, value in frozen.items():
            obj = cands.qoe_state if key.startswith("qoe_state.") else cands
            current = getattr(obj, key.removeprefix("qoe_state."))
            np.testing.assert_array_equal(current, value, err_msg=key)


def test_unknown_policy_name_lists_the_registered_ones():
    with pytest.raises(KeyError) as err:
        make_policy("shortest_prompt_first")
    for name in EXPECTED_POLICIES:
        assert name in str(err.value)


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register("fcfs", "andes_gym.agents.fcfs:FCFS")
    with pytest.raises(ValueError, match="pkg.module:Class"):
        register("brand_new_policy_without_colon", "andes_gym.agents.fcfs.FCFS")
    assert "brand_new_policy_without_colon" not in registered_policies()
