"""Calibration: the non-negative fitter, the profiling plan, and the profiles it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from andes_gym.calibration.calibrate import profile_yaml, sidecar_path, write_profile
from andes_gym.calibration.fit import fit_nonneg, fit_stats, nnls
from andes_gym.calibration.latency_fit import (
    COEF_FIELDS,
    coef_from_spec,
    design_matrix,
    fit_linear_latency,
)
from andes_gym.calibration.profiler import (
    EngineShape,
    StepSample,
    aggregate,
    default_plan,
    preemption_scenario,
)
from andes_gym.surrogate.latency import LinearLatencyModel
from andes_gym.surrogate.profile import LinearLatencySpec, load_engine_profile

REPO = Path(__file__).resolve().parents[1]
SHAPE = EngineShape(
    usable_kv_blocks=128,
    block_size=32,
    max_num_seqs=48,
    max_num_batched_tokens=1024,
    max_model_len=512,
)
TRUE = LinearLatencySpec(
    base_s=9e-4,
    per_prefill_token_s=3e-6,
    per_prefill_token_sq_s=1e-9,
    per_decode_seq_s=2e-5,
    per_context_token_s=1e-8,
)


def synthetic_samples(spec: LinearLatencySpec, n: int, noise: float, seed: int) -> list[StepSample]:
    """Steps of random composition timed by `spec` with multiplicative noise."""
    rng = np.random.default_rng(seed)
    model = LinearLatencyModel(spec)
    out = []
    for i in range(n):
        kind = i % 3
        p = int(rng.integers(1, 1025)) if kind != 0 else 0
        d = int(rng.integers(1, 49)) if kind != 1 else 0
        c = p + d * int(rng.integers(16, 480))
        lat = model.iteration_s(p, d, c) * (1 + noise * rng.standard_normal())
        out.append(StepSample("synthetic", p, d, c, 0, 0, int(p > 0), float(lat)))
    return out


def test_nnls_solves_exact_system_and_clips_negative_directions():
    rng = np.random.default_rng(0)
    a = rng.random((60, 4))
    x_true = np.array([1.0, 0.0, 2.0, 0.5])
    np.testing.assert_allclose(nnls(a, a @ x_true), x_true, atol=1e-9)
    # A target that an unconstrained fit explains with a negative weight.
    b = a @ np.array([1.0, -3.0, 0.0, 0.0])
    x = nnls(a, b)
    assert (x >= 0).all()
    assert x[1] == 0.0


def test_nnls_matches_best_nonnegative_subset():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 5))
    b = rng.normal(size=40)
    x = nnls(a, b)
    best = np.inf
    for mask in range(1, 2**5):
        cols = [j for j in range(5) if mask >> j & 1]
        z = np.linalg.lstsq(a[:, cols], b, rcond=None)[0]
        if (z >= 0).all():
            best = min(best, np.linalg.norm(a[:, cols] @ z - b))
    assert np.linalg.norm(a @ x - b) == pytest.approx(best, rel=1e-9)


def test_fitter_recovers_known_coefficients():
    samples = synthetic_samples(TRUE, n=600, noise=0.0, seed=2)
    spec, stats = fit_linear_latency(samples)
    np.testing.assert_allclose(coef_from_spec(spec), coef_from_spec(TRUE), rtol=1e-6, atol=1e-14)
    assert stats.median_rel_error < 1e-9
    assert stats.r2 == pytest.approx(1.0)


def test_fitter_is_close_under_noise_and_reports_it():
    samples = synthetic_samples(TRUE, n=900, noise=0.05, seed=3)
    spec, stats = fit_linear_latency(samples)
    for field in ("base_s", "per_prefill_token_s", "per_decode_seq_s"):
        assert getattr(spec, field) == pytest.approx(getattr(TRUE, field), rel=0.1), field
    assert 0.02 < stats.median_rel_error < 0.06  # ~ the noise's median |N(0, 0.05)|
    assert stats.r2 > 0.9


def test_fitter_without_quadratic_term_keeps_it_zero():
    samples = synthetic_samples(TRUE, n=300, noise=0.0, seed=4)
    spec, _ = fit_linear_latency(samples, quadratic=False)
    assert spec.per_prefill_token_sq_s == 0.0
    assert min(coef_from_spec(spec)) >= 0.0


def test_fit_nonneg_rejects_bad_latencies():
    x = design_matrix(np.array([1, 2, 3, 4, 5, 6]), np.zeros(6), np.zeros(6))
    with pytest.raises(ValueError, match="positive"):
        fit_nonneg(x, np.array([1.0, 2.0, 0.0, 1.0, 1.0, 1.0]))


def test_fit_stats_of_a_perfect_and_a_biased_model():
    y = np.array([1.0, 2.0, 4.0])
    assert fit_stats(y, y).median_rel_error == 0.0
    biased = fit_stats(1.1 * y, y)
    assert biased.median_rel_error == pytest.approx(0.1)
    assert biased.p90_rel_error == pytest.approx(0.1)


def test_default_plan_respects_engine_limits():
    plan = default_plan(SHAPE)
    names = [s.name for s in plan]
    assert any(n.startswith("decode_") for n in names)
    assert any(n.startswith("prefill_") for n in names)
    assert any(n.startswith("mixed_") for n in names)
    assert any(n.startswith("preempt_") for n in names)
    for s in plan:
        lengths = [p + o for p, o in zip(s.prompt_tokens, s.output_tokens, strict=True)]
        assert max(lengths) <= SHAPE.max_model_len, s.name
        assert len(s.prompt_tokens) <= SHAPE.max_num_seqs, s.name
        if not s.name.startswith("preempt_"):
            blocks = sum(SHAPE.blocks(n) for n in lengths)
            blocks += sum(SHAPE.blocks(p + 1) for p in s.inject_prompt_tokens)
            assert blocks <= SHAPE.usable_kv_blocks, s.name


def test_preemption_scenario_overflows_the_cache_only_while_decoding():
    s = preemption_scenario(SHAPE)
    prompt_blocks = sum(SHAPE.blocks(p) for p in s.prompt_tokens)
    final_blocks = sum(
        SHAPE.blocks(p + o) for p, o in zip(s.prompt_tokens, s.output_tokens, strict=True)
    )
    assert prompt_blocks <= SHAPE.usable_kv_blocks < final_blocks
    # A cache that holds a full batch of the longest requests cannot overflow: no scenario.
    huge = EngineShape(
        usable_kv_blocks=100_000,
        block_size=16,
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        max_model_len=4096,
    )
    assert preemption_scenario(huge) is None
    assert not any(s.name.startswith("preempt_") for s in default_plan(huge))


def test_aggregate_takes_the_median_per_distinct_step():
    steps = [StepSample("a", 0, 4, 100, 0, 0, 0, t) for t in (1.0, 9.0, 2.0)]
    steps.append(StepSample("a", 64, 0, 64, 0, 0, 1, 5.0))
    agg = {s.key: s for s in aggregate(steps)}
    assert agg[("a", 0, 4, 100, 0, 0, 0)].latency_s == 2.0
    assert agg[("a", 0, 4, 100, 0, 0, 0)].num_repeats == 3
    assert agg[("a", 64, 0, 64, 0, 0, 1)].latency_s == 5.0


def test_written_profile_loads_in_the_surrogate(tmp_path):
    samples = synthetic_samples(TRUE, n=120, noise=0.02, seed=5)
    spec, _ = fit_linear_latency(samples)
    meta = {
        "engine": "unit",
        "date": "today",
        "num_samples": len(samples),
        "repeats": 1,
        "load_before": [0.1],
        "load_after": [0.2],
    }
    out = tmp_path / "fitted.yaml"
    sidecar = write_profile(out, "fitted", SHAPE, spec, samples, meta)
    profile = load_engine_profile(out)
    assert profile.name == "fitted"
    assert profile.kv.num_blocks == SHAPE.usable_kv_blocks
    assert profile.limits.max_num_seqs == SHAPE.max_num_seqs
    np.testing.assert_allclose(coef_from_spec(profile.latency), coef_from_spec(spec), rtol=1e-5)
    data = json.loads(sidecar_path(out).read_text())
    assert set(data["coefficients"]) == set(COEF_FIELDS)
    assert data["fit"]["all"]["num_samples"] == len(samples)
    assert sidecar["fit"]["all"]["median_rel_error"] == data["fit"]["all"]["median_rel_error"]
    assert "median" in profile_yaml("x", SHAPE, spec, data["fit"], meta)


def test_shipped_fitted_profile_loads():
    path = REPO / "andes_gym" / "configs" / "engines" / "cpu_tiny_fitted.yaml"
    profile = load_engine_profile(path)
    assert profile.latency_kind == "linear"
    assert profile.latency.base_s > 0 and profile.latency.per_decode_seq_s > 0
    live = load_engine_profile("cpu_tiny")
    assert profile.kv == live.kv and profile.limits == live.limits
    assert sidecar_path(path).is_file()
