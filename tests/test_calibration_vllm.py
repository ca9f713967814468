"""Calibration against the real (tiny, in-process) vLLM engine of the session."""

from __future__ import annotations

import json

import pytest

from andes_gym.calibration.calibrate import calibrate, engine_shape, sidecar_path
from andes_gym.calibration.profiler import (
    Scenario,
    StepRecorder,
    preemption_scenario,
    run_scenario,
)
from andes_gym.surrogate.profile import load_engine_profile

pytestmark = pytest.mark.vllm


def test_recorder_sees_prefill_decode_and_reprefill(vllm_engine):
    import numpy as np

    handle = vllm_engine
    shape = engine_shape(handle)
    recorder = StepRecorder(handle.scheduler)
    rng = np.random.default_rng(0)
    try:
        plain = run_scenario(
            handle.engine,
            recorder,
            Scenario("d", (40,) * 3, (5,) * 3),
            handle.vocab_size,
            rng,
            tag="-t1",
        )
        overflow = run_scenario(
            handle.engine, recorder, preemption_scenario(shape), handle.vocab_size, rng, tag="-t2"
        )
    finally:
        recorder.detach()
    assert handle.scheduler.schedule.__func__ is type(handle.scheduler).schedule
    # 3 prompts of 40 in one step, then 4 decode steps of the batch of 3.
    assert [(s.prefill_tokens, s.decode_seqs) for s in plain] == [(120, 0)] + [(0, 3)] * 4
    assert [s.context_tokens for s in plain] == [120, 123, 126, 129, 132]
    assert sum(s.num_preempted for s in overflow) > 0
    assert any(s.reprefill_tokens > 0 for s in overflow)
    assert all(s.latency_s > 0 for s in plain + overflow)


def test_calibrate_writes_a_profile_the_surrogate_loads(vllm_engine, tmp_path):
    plan = [
        Scenario("decode", (24,) * 4, (6,) * 4),
        Scenario("prefill", (200,), (1,)),
        Scenario("prefill_small", (20,), (1,)),
        Scenario("mixed", (24,) * 2, (6,) * 2, inject_after_steps=3, inject_prompt_tokens=(90,)),
    ]
    out = tmp_path / "fitted.yaml"
    spec, stats, sidecar = calibrate(
        "pytest_tiny",
        out,
        repeats=1,
        warmup=0,
        handle=vllm_engine,
        plan=plan,
        verbose=False,
    )
    profile = load_engine_profile(out)
    shape = engine_shape(vllm_engine)
    assert profile.kv.num_blocks == shape.usable_kv_blocks
    assert profile.limits.max_num_seqs == shape.max_num_seqs
    assert profile.latency.base_s == pytest.approx(spec.base_s, rel=1e-5)
    assert stats.num_samples == len(sidecar["samples"]) > 0
    data = json.loads(sidecar_path(out).read_text())
    assert {"decode", "all"} <= set(data["fit"])
    assert data["engine_shape"]["usable_kv_blocks"] == shape.usable_kv_blocks
    assert not vllm_engine.engine.has_unfinished_requests()


def test_environment_overhead_is_measured_written_and_can_be_folded_into_base(
    vllm_engine, tmp_path
):
    plan = [Scenario("decode", (24,) * 4, (6,) * 4), Scenario("prefill", (120,), (1,))]
    out = tmp_path / "fitted_env.yaml"
    # A burst that overflows the session engine's 24 blocks: contested decisions happen.
    burst = (
        "steady_poisson_cpu@num_requests=30,arrivals.rate_rps=5000,"
        "lengths.max_prompt_tokens=64,lengths.max_output_tokens=48"
    )
    spec, _, sidecar = calibrate(
        "pytest_tiny",
        out,
        repeats=1,
        warmup=0,
        handle=vllm_engine,
        plan=plan,
        verbose=False,
        env_workloads=[burst],
        env_policies=("fcfs",),
        fold_env_overhead=True,
    )
    env = sidecar["env_overhead"]
    assert set(env["coefficients"]) == {
        "per_iteration_s",
        "per_prefill_seq_s",
        "per_request_s",
        "decision_s",
        "per_candidate_s",
    }
    assert all(v >= 0 for v in env["coefficients"].values())
    assert env["num_samples"] > 10 and env["num_decided"] > 0
    assert spec.base_s == pytest.approx(env["engine_base_s"] + env["added_to_base_s"])
    assert load_engine_profile(out).latency.base_s == pytest.approx(spec.base_s, rel=1e-5)
    assert "Live-environment overhead" in out.read_text()
    # The serving terms are written into the profile the surrogate loads.
    overhead = load_engine_profile(out).overhead
    for term in ("per_prefill_seq_s", "per_request_s", "decision_s", "per_candidate_s"):
        assert getattr(overhead, term) == pytest.approx(env["coefficients"][term], rel=1e-5)
