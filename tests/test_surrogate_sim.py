"""The surrogate engine driven directly, decision by decision: every test runs on the
specification (`SurrogateBackend`) and on the compiled engine (`CompiledSurrogateBackend`),
with expectations computed by hand from the rules."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest
from surrogate_support import TINY_LINEAR_PROFILE

from andes_gym.core.backend import DecisionConfig
from andes_gym.core.selection import decision_from_order, fits_all, select
from andes_gym.envs.scheduling_env import decision_for_all
from andes_gym.surrogate import SurrogateBackend, engine_profile_from_dict, load_engine_profile
from andes_gym.surrogate.base import RUNNING
from andes_gym.surrogate.compiled import CompiledSurrogateBackend
from andes_gym.surrogate.profile import KVCacheSpec, OverheadSpec
from andes_gym.workloads import Workload, make_workload, workload_config_from_dict

TINY = TINY_LINEAR_PROFILE
ENGINES = [
    pytest.param(SurrogateBackend, id="spec"),
    pytest.param(CompiledSurrogateBackend, id="compiled"),
]
pytestmark = pytest.mark.parametrize("engine", ENGINES)


def tiny(**sections) -> dict:
    data = copy.deepcopy(TINY)
    for section, fields in sections.items():
        data.setdefault(section, {}).update(fields)
    return engine_profile_from_dict(data)


def workload(*rows, name="w") -> Workload:
    """Rows of (arrival_s, prompt, output); ttft 0.5 s, tds 20 tok/s."""
    arr = np.array(rows, dtype=float)
    n = len(rows)
    return Workload(arr[:, 0], arr[:, 1], arr[:, 2], np.full(n, 0.5), np.full(n, 20.0), name)


def contended_workload(n=150, seed=0) -> Workload:
    cfg = workload_config_from_dict(
        {
            "name": "contended",
            "num_requests": n,
            "arrivals": {"kind": "gamma", "rate_rps": 400.0, "cv": 3.0},
            "lengths": {
                "kind": "sharegpt",
                "scale": 0.2,
                "max_prompt_tokens": 256,
                "max_output_tokens": 200,
            },
            "targets": {"kind": "reading", "time_scale": 0.02},
        }
    )
    return make_workload(cfg, seed)


def least_qoe_first(cands, cap):
    # Thrashes on purpose (no preemption guard): many preemptions to test.
    return select(-cands.qoe_now + 1e-3 * cands.is_running, cands, cap)


def oldest_first(cands, cap):
    return select(-cands.arrival_s, cands, cap)


def drive(backend, wl, policy=least_qoe_first, env_rule=False, max_steps=100_000):
    """Runs an episode; with env_rule, uncontested points get SchedulingEnv's decision."""
    backend.start(wl, 0)
    steps = 0
    while (ctx := backend.next_decision()) is not None and steps < max_steps:
        cands, cap = ctx
        if env_rule and fits_all(cands.kv_blocks_needed, cap.total_kv_blocks, cap.max_num_seqs):
            backend.apply(decision_for_all(cands))
        else:
            backend.apply(policy(cands, cap))
        steps += 1
    return steps


def cpu_backend(engine, **kw):
    return engine(load_engine_profile("cpu_tiny"), **kw)


def test_every_request_finishes_with_its_exact_length_despite_preemptions(engine):
    wl = contended_workload()
    backend = cpu_backend(engine)
    drive(backend, wl)
    assert backend.finished.all()
    assert np.array_equal(backend.generated_tokens, wl.output_tokens)
    assert np.array_equal(backend.tracker.state.num_tokens, wl.output_tokens)
    assert backend.num_preemptions.sum() > 0  # the scenario really preempts
    assert backend.kv_blocks_used == 0 and backend.kv_blocks_held.sum() == 0
    first_token = backend.tracker.state.first_token_s
    assert np.all(first_token >= wl.arrival_s)


def test_kv_and_batch_limits_hold_at_every_iteration(engine):
    wl = contended_workload(n=100)
    profile = load_engine_profile("cpu_tiny")
    backend = engine(profile)
    bs, seen = profile.kv.block_size, []

    def check(b):
        running = np.flatnonzero(b.status == RUNNING)
        held = b.kv_blocks_held
        assert b.kv_blocks_used == held.sum() <= profile.kv.num_blocks
        assert len(running) <= profile.limits.max_num_seqs
        assert np.array_equal(held[running], -(-b.computed_tokens[running] // bs))
        assert held[b.status != RUNNING].sum() == 0
        seen.append(len(running))

    backend.on_iteration = check
    drive(backend, wl)
    assert backend.finished.all()
    assert len(seen) == backend.num_iterations
    assert max(seen) == profile.limits.max_num_seqs  # the batch limit was reached


@pytest.mark.parametrize("mode", ["recompute", "swap", "overhead"])
@pytest.mark.parametrize("iters_per_decision", [1, 3])
def test_backend_skipping_and_watching_every_iteration_are_exact(engine, mode, iters_per_decision):
    """The same episode with uncontested points skipped inside the backend, and with every
    iteration watched (token log and hook: the compiled engine then returns after each),
    is the specification's episode, bit for bit."""
    wl = contended_workload(n=120, seed=1)
    profile = load_engine_profile("cpu_tiny")
    if mode == "overhead":  # per-iteration serving terms
        overhead = OverheadSpec(per_prefill_seq_s=2.5e-4, per_request_s=3.9e-6)
        profile = dataclasses.replace(profile, overhead=overhead)
    if mode == "swap":
        data = {
            "name": "swap",
            "kv": {"num_blocks": 128, "block_size": 32, "kv_bytes_per_token": 4096.0},
            "limits": {"max_num_seqs": 48, "max_num_batched_tokens": 1024, "max_model_len": 512},
            "latency": {
                "kind": "linear",
                "base_s": 1.47e-3,
                "per_prefill_token_s": 1.5e-5,
                "per_decode_seq_s": 5.8e-5,
                "per_context_token_s": 1e-7,
            },
            "preemption": {"mode": "swap", "swap_bw_gb_s": 1.0},
        }
        profile = engine_profile_from_dict(data)
    cfg = DecisionConfig(iters_per_decision=iters_per_decision)

    def run(backend_cls, backend_skips, watched):
        b = backend_cls(profile, cfg, record_token_times=True)
        b.skip_uncontested = backend_skips
        iterations = []
        if watched:
            b.on_iteration = lambda b: iterations.append(b.now_s)
        steps = drive(b, wl, env_rule=True)
        times = [b.tracker.token_times(i) for i in range(len(wl))]
        assert len(iterations) == (b.num_iterations if watched else 0)
        return b, steps, times

    ref, _, ref_times = run(SurrogateBackend, False, True)
    assert ref.finished.all() and ref.num_preemptions.sum() > 0
    for backend_skips, watched in [(False, False), (True, False), (True, True)]:
        b, _, times = run(engine, backend_skips, watched)
        assert b.now_s == ref.now_s
        assert b.num_iterations == ref.num_iterations
        assert np.array_equal(b.num_preemptions, ref.num_preemptions)
        assert all(np.array_equal(x, y) for x, y in zip(times, ref_times, strict=True))
        np.testing.assert_allclose(
            b.tracker.state.sum_delay_s, ref.tracker.state.sum_delay_s, rtol=1e-12, atol=1e-12
        )
        np.testing.assert_array_equal(b.tracker.floats, ref.tracker.floats, strict=True)


def test_first_token_comes_at_the_end_of_the_prefill_iteration(engine):
    profile = tiny()
    backend = engine(profile, record_token_times=True)
    wl = workload((0.25, 10, 3))
    drive(backend, wl, oldest_first)
    lat = backend.latency
    t1 = 0.25 + lat.iteration_s(10, 0, 10)
    t2 = t1 + lat.iteration_s(0, 1, 11)
    t3 = t2 + lat.iteration_s(0, 1, 12)
    np.testing.assert_allclose(backend.tracker.token_times(0), [t1, t2, t3], rtol=0, atol=1e-12)


def test_serving_overhead_adds_its_terms_to_each_iteration_and_decision(engine):
    overhead = {
        "per_prefill_seq_s": 0.004,
        "per_request_s": 0.0005,
        "decision_s": 0.003,
        "per_candidate_s": 0.0002,
    }
    backend = engine(tiny(overhead=overhead), record_token_times=True)
    wl = workload((0.25, 10, 2), (0.25, 6, 2))
    backend.start(wl, 0)
    cands, cap = backend.next_decision()
    # What the policies see includes the per-request cost of the two requests.
    bare = backend.latency.decode_latency_by_batch(cap.max_num_seqs, 8.0)
    np.testing.assert_allclose(cap.iter_latency_s, bare + 2 * 0.0005, rtol=0, atol=1e-15)
    backend.apply(decision_from_order([0, 1], len(cands)))
    lat = backend.latency
    decision_s = 0.003 + 0.0002 * 2
    # Iteration 1 prefills both (two prefill sequences, two requests in the engine).
    t1 = 0.25 + decision_s + lat.iteration_s(16, 0, 16) + 2 * 0.004 + 2 * 0.0005
    cands, cap = backend.next_decision()
    backend.apply(decision_from_order([0, 1], len(cands)))
    # Iteration 2 decodes both: no prefill sequence; both finish with it.
    t2 = t1 + decision_s + lat.iteration_s(0, 2, 18) + 2 * 0.0005
    assert backend.next_decision() is None
    for i in range(2):
        np.testing.assert_allclose(backend.tracker.token_times(i), [t1, t2], rtol=0, atol=1e-12)


def test_zero_overhead_section_changes_nothing(engine):
    wl = contended_workload(n=60, seed=2)
    base = load_engine_profile("cpu_tiny")
    zeros = dataclasses.replace(base, overhead=OverheadSpec(0.0, 0.0, 0.0, 0.0))
    runs = []
    for profile in (base, zeros):
        b = engine(profile, record_token_times=True)
        drive(b, wl)
        runs.append([b.tracker.token_times(i) for i in range(len(wl))])
    assert all(np.array_equal(x, y) for x, y in zip(*runs, strict=True))


def test_chunked_prefill_splits_a_long_prompt_under_the_token_budget(engine):
    backend = engine(tiny(), record_token_times=True)
    drive(backend, workload((0.0, 40, 1)), oldest_first)
    lat = backend.latency
    # 40 prompt tokens under a 16-token budget: chunks of 16, 16, 8.
    expected = lat.iteration_s(16, 0, 16) + lat.iteration_s(16, 0, 32) + lat.iteration_s(8, 0, 40)
    assert backend.tracker.token_times(0)[0] == pytest.approx(expected, abs=1e-12)
    assert backend.num_iterations == 3


def _run_then_preempt(engine, profile):
    """Request 0 (prompt 20, output 10) runs 3 iterations, is preempted, then re-admitted."""
    backend = engine(profile, record_token_times=True)
    backend.start(workload((0.0, 20, 10)), 0)
    for _ in range(3):  # prefill 16 + 4 (first token), then one decode
        cands, cap = backend.next_decision()
        backend.apply(select(np.zeros(1), cands, cap))
    assert backend.generated_tokens[0] == 2
    cands, _ = backend.next_decision()
    backend.apply(decision_from_order(np.zeros(0, dtype=np.int64), 1))  # preempt it
    assert backend.num_preemptions[0] == 1 and backend.kv_blocks_held[0] == 0
    return backend


def test_recompute_preemption_reprefills_and_delivers_nothing_meanwhile(engine):
    backend = _run_then_preempt(engine, tiny())
    assert backend.computed_tokens[0] == 0
    cands, cap = backend.next_decision()
    assert not cands.is_running[0]
    assert cands.kv_blocks_needed[0] == -(-(20 + 2 + 1) // 4)  # re-prefill 22 tokens + 1
    backend.apply(select(np.zeros(1), cands, cap))  # re-prefill chunk 1: 16 of 22 tokens
    assert backend.generated_tokens[0] == 2 and backend.computed_tokens[0] == 16
    t_before = backend.now_s
    cands, cap = backend.next_decision()
    backend.apply(select(np.zeros(1), cands, cap))  # chunk 2: 6 tokens, then token 3
    assert backend.generated_tokens[0] == 3
    assert backend.tracker.token_times(0)[-1] == backend.now_s
    assert backend.now_s - t_before == pytest.approx(backend.latency.iteration_s(6, 0, 22))
    drive_rest(backend)
    assert backend.finished[0] and backend.generated_tokens[0] == 10


def drive_rest(backend):
    while (ctx := backend.next_decision()) is not None:
        backend.apply(select(np.zeros(len(ctx[0])), *ctx))


def test_swap_preemption_resumes_decoding_at_a_transfer_cost(engine):
    profile = tiny(kv={"kv_bytes_per_token": 1e6}, preemption={"mode": "swap", "swap_bw_gb_s": 1.0})
    backend = _run_then_preempt(engine, profile)
    assert backend.computed_tokens[0] == 21  # kept (in host memory)
    cands, cap = backend.next_decision()
    assert cands.kv_blocks_needed[0] == -(-22 // 4)
    t_before = backend.now_s
    backend.apply(select(np.zeros(1), cands, cap))
    # Decoding resumes at once: one iteration, one token, plus the restore transfer.
    assert backend.generated_tokens[0] == 3
    restore_s = 6 * 4 * 1e6 / 1e9  # ceil(21 / 4) blocks of 4 tokens of 1 MB at 1 GB/s
    assert backend.now_s - t_before == pytest.approx(
        backend.latency.iteration_s(0, 1, 22) + restore_s
    )
    drive_rest(backend)
    assert backend.generated_tokens[0] == 10


def test_kv_overflow_preempts_the_lowest_priority_running_request(engine):
    profile = tiny(kv={"num_blocks": 6}, limits={"max_model_len": 24})  # 24 tokens of KV
    backend = engine(profile, DecisionConfig(iters_per_decision=40))
    backend.start(workload((0.0, 4, 12), (0.0, 4, 12)), 0)
    cands, cap = backend.next_decision()
    backend.apply(decision_from_order(np.array([1, 0]), 2))  # 1 first, then 0
    # Both grow to 16 tokens (4 blocks each): the cache overflows, so 0 is preempted.
    assert backend.num_preemptions.tolist() == [1, 0]
    assert backend.finished.tolist() == [False, True]
    drive_rest(backend)
    assert backend.finished.all()


def test_requests_that_can_never_run_are_rejected_by_name(engine):
    backend = engine(tiny())
    with pytest.raises(ValueError, match=r"request 1 .*max_model_len=64"):
        backend.start(workload((0.0, 10, 10), (0.0, 60, 10)), 0)
    # A profile built in code is not validated: the simulator still names what cannot fit.
    small_kv = dataclasses.replace(tiny(), kv=KVCacheSpec(num_blocks=3, block_size=4))
    backend = engine(small_kv)
    with pytest.raises(ValueError, match=r"request 0 .*3 blocks"):
        backend.start(workload((0.0, 10, 10)), 0)


def test_idle_engine_jumps_to_the_next_arrival(engine):
    backend = engine(tiny(), record_token_times=True)
    backend.skip_uncontested = True
    drive(backend, workload((0.0, 4, 2), (100.0, 8, 1)), oldest_first)
    first = backend.tracker.token_times(1)[0]
    assert first == pytest.approx(100.0 + backend.latency.iteration_s(8, 0, 8))
    assert backend.num_iterations == 3


def test_time_limit_stops_with_unfinished_requests(engine):
    backend = cpu_backend(engine)
    backend.time_limit_s = 0.05
    drive(backend, contended_workload(n=80))
    assert 0.05 <= backend.now_s < 0.06
    assert not backend.finished.all()
    assert backend.next_decision() is None


def test_a_decision_that_runs_nothing_still_advances_time(engine):
    backend = engine(tiny())
    backend.start(workload((0.0, 4, 2)), 0)
    backend.next_decision()
    backend.apply(decision_from_order(np.zeros(0, dtype=np.int64), 1))
    assert backend.now_s == pytest.approx(backend.latency.iteration_s(0, 0, 0))
    assert backend.generated_tokens[0] == 0


def test_deterministic_and_picklable_mid_episode(engine):
    wl = contended_workload(n=80, seed=3)
    a = cpu_backend(engine)
    a.start(wl, 0)
    for _ in range(30):
        a.apply(least_qoe_first(*a.next_decision()))
    b = pickle.loads(pickle.dumps(a))
    for backend in (a, b):
        while (ctx := backend.next_decision()) is not None:
            backend.apply(least_qoe_first(*ctx))
    assert a.now_s == b.now_s
    assert np.array_equal(a.num_preemptions, b.num_preemptions)
    assert np.array_equal(a.tracker.state.sum_delay_s, b.tracker.state.sum_delay_s)
    c = cpu_backend(engine)
    drive(c, wl)
    assert c.now_s == a.now_s
    assert np.array_equal(c.tracker.state.sum_delay_s, a.tracker.state.sum_delay_s)


def test_candidates_follow_the_documented_fields(engine):
    wl = contended_workload(n=80)
    backend = engine(load_engine_profile("cpu_tiny"), DecisionConfig(oracle=True))
    backend.start(wl, 0)
    for _ in range(25):
        cands, cap = backend.next_decision()
        ids = cands.request_id
        assert np.array_equal(
            cands.remaining_tokens, wl.output_tokens[ids] - cands.tokens_delivered
        )
        assert np.array_equal(cands.kv_blocks_held, backend.kv_blocks_held[ids])
        assert cap.free_kv_blocks == cap.total_kv_blocks - backend.kv_blocks_used
        assert np.all(cands.kv_blocks_needed >= cands.kv_blocks_held)
        assert np.all(wl.arrival_s[ids] <= cands.now_s)
        backend.apply(least_qoe_first(cands, cap))
    no_oracle = engine(load_engine_profile("cpu_tiny"))
    no_oracle.start(wl, 0)
    assert no_oracle.next_decision()[0].remaining_tokens is None
