"""Fidelity benchmark: error statistics, rank agreement, and one tiny run on both engines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from andes_gym.calibration.compare import error_summary, kendall_tau, relative_errors
from andes_gym.calibration.fidelity import markdown_table, ranking_transfer
from andes_gym.calibration.fidelity_data import RunRecord, compare_records, pooled_errors
from andes_gym.calibration.workload_specs import parse_workload_spec


def record(engine: str, ttft, qoe, preempt=None, policy="fcfs") -> RunRecord:
    ttft = np.asarray(ttft, dtype=float)
    n = len(ttft)
    return RunRecord(
        engine=engine,
        policy=policy,
        workload="w",
        seed=0,
        ttft_s=ttft,
        tbt_mean_s=np.full(n, 0.002),
        completion_s=ttft + 0.05,
        qoe=np.asarray(qoe, dtype=float),
        qoe_fixed=np.asarray(qoe, dtype=float),
        num_preemptions=np.asarray(preempt if preempt is not None else np.zeros(n), dtype=np.int64),
        finished=np.ones(n, dtype=bool),
        summary={},
    )


def test_kendall_tau_known_values():
    assert kendall_tau(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == 1.0
    assert kendall_tau(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == -1.0
    assert kendall_tau(np.array([1, 2, 3]), np.array([1, 3, 2])) == pytest.approx(1 / 3)
    # tau-b with a tie on one side (scipy.stats.kendalltau gives 0.8165).
    assert kendall_tau(np.array([1, 1, 2]), np.array([1, 2, 3])) == pytest.approx(0.81649658)
    assert np.isnan(kendall_tau(np.array([1, 1]), np.array([1, 2])))


def test_relative_errors_skip_missing_values():
    rel = relative_errors(np.array([1.1, np.nan, 2.0]), np.array([1.0, 1.0, np.nan]))
    np.testing.assert_allclose(rel, [0.1])
    assert error_summary(np.array([np.nan]), np.array([1.0]))["median_rel_error"] is None


def test_compare_records_reports_every_metric():
    live = record("live", [0.010, 0.020, 0.040, 0.080], [1.0, 0.9, 0.5, 0.2], [0, 1, 0, 2])
    surr = record("surrogate", [0.011, 0.018, 0.040, 0.100], [1.0, 0.95, 0.45, 0.2], [0, 0, 0, 2])
    err = compare_records(surr, live)
    assert err["ttft_s"]["median_rel_error"] == pytest.approx(0.1)
    assert err["ttft_s"]["p90_rel_error"] > err["ttft_s"]["median_rel_error"]
    assert err["mean_abs_qoe_error"] == pytest.approx(0.025)
    assert err["num_preemptions"] == {"mean_abs_error": 0.25, "total_surrogate": 2, "total_live": 3}
    for name in ("tbt_mean_s", "completion_s", "qoe"):
        assert err[name]["num_pairs"] == 4
    pooled = pooled_errors([(surr, live), (surr, live)])
    assert pooled["mean_abs_qoe_error"] == pytest.approx(err["mean_abs_qoe_error"])
    assert pooled["ttft_s"]["num_pairs"] == 8


def test_ranking_transfer_detects_a_swapped_pair():
    pairs = {}
    for policy, q_live, q_surr in (("a", 0.9, 0.9), ("b", 0.7, 0.5), ("c", 0.5, 0.6)):
        pairs[("w", policy)] = [
            (
                record("surrogate", [0.01], [q_surr], policy=policy),
                record("live", [0.01], [q_live], policy=policy),
            )
        ]
    rank = ranking_transfer(pairs)
    assert rank["per_workload"]["w"]["kendall_tau"] == pytest.approx(1 / 3)
    assert rank["per_workload"]["w"]["policies"] == ["a", "b", "c"]


def test_workload_spec_overrides():
    cfg = parse_workload_spec("steady_poisson_cpu@num_requests=7,arrivals.rate_rps=12.5")
    assert cfg.num_requests == 7 and cfg.arrivals.rate_rps == 12.5
    with pytest.raises(ValueError, match="key=value"):
        parse_workload_spec("steady_poisson_cpu@num_requests")


@pytest.mark.vllm
def test_fidelity_on_a_tiny_workload_writes_every_field(vllm_engine, tmp_path):
    from andes_gym.calibration.calibrate import engine_shape
    from andes_gym.calibration.fidelity import run_fidelity, write_outputs
    from andes_gym.calibration.fidelity_run import EnvArgs

    # The surrogate twin of the session engine: its limits, a plausible latency model.
    shape = engine_shape(vllm_engine)
    profile = {
        "name": "pytest_twin",
        "kv": {"num_blocks": shape.usable_kv_blocks, "block_size": shape.block_size},
        "limits": {
            "max_num_seqs": shape.max_num_seqs,
            "max_num_batched_tokens": shape.max_num_batched_tokens,
            "max_model_len": shape.max_model_len,
        },
        "latency": {
            "kind": "linear",
            "base_s": 1e-3,
            "per_prefill_token_s": 3e-6,
            "per_decode_seq_s": 2e-5,
            "per_context_token_s": 1e-8,
        },
        "preemption": {"mode": "recompute"},
    }
    path = tmp_path / "twin.yaml"
    path.write_text(yaml.safe_dump(profile))
    report, pairs = run_fidelity(
        [
            "steady_poisson_cpu@num_requests=10,lengths.max_prompt_tokens=64,"
            "lengths.max_output_tokens=48"
        ],
        None,
        ["fcfs", "andes"],
        [0],
        str(path),
        "unused",
        EnvArgs(k_slots=8),
        log=lambda m: None,
        engine_handle=vllm_engine,
    )
    out = tmp_path / "out"
    write_outputs(report, pairs, out, plot=True)
    data = json.loads((out / "fidelity.json").read_text())
    assert {"results", "ranking", "runs", "targets", "load_average_before", "noise_floor"} <= set(
        data
    )
    assert len(data["results"]) == 2
    for row in data["results"]:
        assert row["num_requests"] == 10
        for name in ("ttft_s", "tbt_mean_s", "completion_s"):
            assert {"median_rel_error", "p90_rel_error", "dist_median_rel_error"} <= set(row[name])
            assert row[name]["num_pairs"] > 0
        assert 0.0 <= row["mean_abs_qoe_error"] <= 1.0
        assert {"total_live", "total_surrogate"} <= set(row["num_preemptions"])
        assert isinstance(row["meets_qoe_target"], bool)
    assert "kendall_tau" in data["ranking"]["per_workload"][data["workloads"][0]]
    (floor,) = data["noise_floor"]  # the first policy only, by default
    assert floor["policy"] == "fcfs" and floor["ttft_s"]["num_pairs"] > 0
    by_policy = {row["policy"]: row for row in data["results"]}
    assert by_policy["andes"]["noise_floor"] is None
    fcfs_floor = by_policy["fcfs"]["noise_floor"]
    assert fcfs_floor["mean_abs_qoe_error"] == floor["mean_abs_qoe_error"]
    assert fcfs_floor["qoe_within"] == (
        by_policy["fcfs"]["mean_abs_qoe_error"] <= floor["mean_abs_qoe_error"]
    )
    assert (out / "fidelity.png").stat().st_size > 0
    assert (out / "requests.csv").read_text().count("\n") == 1 + 2 * 10
    assert "mean abs QoE err" in markdown_table(report)
    assert not vllm_engine.engine.has_unfinished_requests()


def test_a_project_trace_without_targets_becomes_a_workload():
    from pathlib import Path

    from andes_gym.calibration.workload_specs import draw_workload

    path = Path(__file__).parent / "data" / "project_no_targets.csv"
    label, wl = draw_workload(None, str(path), seed=0, time_scale=0.02)
    assert label == "project_no_targets" and len(wl) > 0
    # Reading targets scaled for the tiny engine: TDS 160+ tok/s, TTFT about 20 ms.
    assert wl.tds_tok_s.min() > 100 and wl.ttft_s.max() < 1.0
    _, again = draw_workload(None, str(path), seed=0, time_scale=0.02)
    assert wl.equals(again)
