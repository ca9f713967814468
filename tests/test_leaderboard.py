"""End-to-end leaderboard runs on the smoke suite (surrogate, tiny workloads)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_leaderboard_units import parse_tables

from andes_gym.agents.base import Policy
from andes_gym.board.cells import TIMING_FIELDS
from andes_gym.board.leaderboard import BoardOptions, run_board
from andes_gym.board.plan import make_cell, policy_entries
from andes_gym.board.suite import load_suite, resolve_workloads
from andes_gym.leaderboard import main

REQUIRED_FIELDS = (
    "policy",
    "workload",
    "seed",
    "status",
    "mean_qoe",
    "mean_qoe_fixed",
    "p10_qoe",
    "frac_qoe_ge_095",
    "ttft_p50_s",
    "ttft_p90_s",
    "throughput_tok_s",
    "preemptions_per_request",
    "decision_ms_p50",
)


class ExplodingPolicy(Policy):
    """Fails at its first decision: an injected failure for the runner."""

    name = "exploding"

    def decide(self, candidates, capacity):
        raise RuntimeError("injected failure at a decision")


def _opts(out: Path, **kw) -> BoardOptions:
    base = {"suite": "smoke", "out": str(out), "progress": False, "timelines": 2}
    base.update(kw)
    return BoardOptions(**base)


def _strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in rows]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    return run_board(_opts(out), argv=["--suite", "smoke"])


@pytest.mark.slow
def test_smoke_suite_end_to_end(smoke_run):
    out = smoke_run.out_dir
    for name in (
        "results.json",
        "episodes.csv",
        "requests.csv",
        "capacity.json",
        "capacity_points.csv",
        "board.md",
    ):
        assert (out / name).is_file(), name
    rows = json.loads((out / "results.json").read_text())
    suite = load_suite("smoke")
    names = [w.name for w in resolve_workloads(suite)]
    assert len(rows) == len(names) * len(suite.policies) * len(suite.seeds)
    for row in rows:
        assert set(REQUIRED_FIELDS) <= set(row)
        assert row["status"] == "ok", row["error"]
        assert 0.0 <= row["mean_qoe"] <= 1.0
    assert rows == sorted(rows, key=lambda r: (r["workload"], r["policy"], r["seed"]))
    # Oracle policies and only they ran with oracle information.
    assert {r["policy"] for r in rows if r["oracle"]} == {"sjf_oracle"}

    tables = parse_tables((out / "board.md").read_text())
    for name in names:
        table = tables[name]
        assert len(table) == len(suite.policies)
        assert [r["rank"] for r in table] == [str(i) for i in range(1, len(table) + 1)]
        means = [float(r["mean QoE (95% CI)"].split()[0]) for r in table]
        assert means == sorted(means, reverse=True)
        assert all("±" in r["mean QoE fixed (95% CI)"] for r in table)

    with (out / "requests.csv").open() as f:
        req_rows = list(csv.DictReader(f))
    n_req = sum(r["num_requests"] for r in rows)
    assert len(req_rows) == n_req
    cap = json.loads((out / "capacity.json").read_text())
    assert {c["policy"] for c in cap} == {"fcfs", "andes"}
    for c in cap:
        assert c["censored"] in ("within", "below_range", "above_range")
        assert len(c["evaluations"]) >= 2
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert any(p.startswith("qoe_cdf__") for p in plots)
    assert any(p.startswith("qoe_vs_load__") for p in plots)
    assert any(p.startswith("timeline__") for p in plots)


@pytest.mark.slow
def test_every_policy_sees_the_same_workload(smoke_run):
    digests: dict[tuple, set] = {}
    for rec in smoke_run.records:
        digests.setdefault((rec["workload"], rec["seed"]), set()).add(rec["workload_digest"])
    assert all(len(d) == 1 for d in digests.values())
    # Different seeds draw different workloads.
    per_workload: dict[str, set] = {}
    for (workload, _), d in digests.items():
        per_workload.setdefault(workload, set()).update(d)
    assert all(len(d) == 2 for d in per_workload.values())


def test_oracle_and_plain_envs_draw_identical_workloads():
    from andes_gym.board.cells import make_env

    suite = load_suite("smoke")
    workload = resolve_workloads(suite)[0]
    kwargs = suite.env.kwargs_for("surrogate")
    drawn = []
    for entry in policy_entries(["fcfs", "sjf_oracle"]):
        cell = make_cell(workload, entry, 3, "surrogate", kwargs)
        assert cell.env_kwargs.get("oracle", False) == entry.oracle
        env = make_env(cell)
        env.reset(seed=3)
        drawn.append(env.unwrapped.workload)
        env.close()
    assert drawn[0].equals(drawn[1])


@pytest.mark.slow
def test_results_do_not_depend_on_workers(tmp_path, smoke_run):
    two = run_board(_opts(tmp_path / "w2", workers=2, capacity=False, plots=False))
    one_rows = json.loads((smoke_run.out_dir / "results.json").read_text())
    two_rows = json.loads((two.out_dir / "results.json").read_text())
    assert _strip_timing(one_rows) == _strip_timing(two_rows)
    assert (smoke_run.out_dir / "requests.csv").read_bytes() == (
        two.out_dir / "requests.csv"
    ).read_bytes()


def test_failed_cells_are_reported_not_dropped(tmp_path, capsys):
    policies = ["fcfs", "no_such_policy", "test_leaderboard:ExplodingPolicy"]
    out = tmp_path / "fail"
    status = main(
        ["--suite", "smoke", "--out", str(out), "--no-progress", "--no-capacity",
         "--no-plots", "--seeds", "0", "--policies", *policies]
    )  # fmt: skip
    assert status == 2
    rows = json.loads((out / "results.json").read_text())
    by_policy = {}
    for row in rows:
        by_policy.setdefault(row["policy"], []).append(row)
    assert set(by_policy) == {"fcfs", "no_such_policy", "ExplodingPolicy"}
    assert all(r["status"] == "ok" for r in by_policy["fcfs"])
    assert all(
        r["status"] == "failed" and "no_such_policy" in r["error"]
        for r in by_policy["no_such_policy"]
    )
    # It fails wherever it is asked (a workload without contention never asks it).
    exploding = {r["workload"]: r for r in by_policy["ExplodingPolicy"]}
    assert exploding["burst"]["status"] == "failed"
    for r in exploding.values():
        assert (
            "injected failure" in r["error"] if r["status"] == "failed" else r["num_decisions"] == 0
        )
    board = (out / "board.md").read_text()
    assert "FAILED" in board and "Failed cells" in board and "injected failure" in board
    assert "FAILED" in capsys.readouterr().err


def test_rerun_skips_done_cells_unless_forced(tmp_path):
    opts = _opts(tmp_path / "r", capacity=False, plots=False, seeds=[0], policies=["fcfs"])
    first = run_board(opts)
    n = len(first.rows)
    assert (first.ran, first.skipped) == (n, 0)
    second = run_board(opts)
    assert (second.ran, second.skipped) == (0, n)
    assert _strip_timing(second.rows) == _strip_timing(first.rows)
    opts.force = True
    third = run_board(opts)
    assert (third.ran, third.skipped) == (n, 0)


def test_changed_cell_spec_is_rerun(tmp_path):
    suite = yaml.safe_load(Path(load_suite("smoke").source).read_text())
    suite["capacity"] = []
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(suite))
    opts = _opts(tmp_path / "c", suite=str(path), plots=False, seeds=[0], policies=["fcfs"])
    first = run_board(opts)
    suite["workloads"][0]["overrides"]["num_requests"] = 30
    path.write_text(yaml.safe_dump(suite))
    second = run_board(opts)
    assert second.ran == 1 and second.skipped == first.ran - 1


def test_trace_runs_as_one_more_workload(tmp_path):
    trace = tmp_path / "mini_trace.csv"
    rng = np.random.default_rng(0)
    with trace.open("w") as f:
        f.write("arrival_s,prompt_tokens,output_tokens\n")
        for t in np.sort(rng.uniform(0, 0.5, 20)):
            f.write(f"{float(t)!r},{rng.integers(8, 64)},{rng.integers(4, 32)}\n")
    res = run_board(
        _opts(tmp_path / "t", trace=[str(trace)], seeds=[0], policies=["fcfs"],
              capacity=False, plots=False)
    )  # fmt: skip
    rows = [r for r in res.rows if r["workload"] == "trace_mini_trace"]
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["num_requests"] == 20


@pytest.mark.vllm
@pytest.mark.slow
def test_live_engine_runs_cells_in_process(tmp_path, vllm_engine, capsys):
    suite = {
        "name": "live_mini",
        "env": {"kind": "vllm", "kwargs": {"k_slots": 64, "lookahead_s": 0.02}},
        "policies": ["fcfs", "sjf_oracle"],
        "seeds": [0],
        "workloads": [
            {"preset": "steady_poisson_cpu", "name": "p",
             "overrides": {"num_requests": 24, "arrivals.rate_rps": 400}}
        ],
    }  # fmt: skip
    path = tmp_path / "live.yaml"
    path.write_text(yaml.safe_dump(suite))
    res = run_board(_opts(tmp_path / "out", suite=str(path), workers=2), engine_handle=vllm_engine)
    assert "ignoring --workers 2" in capsys.readouterr().err
    assert [r["status"] for r in res.rows] == ["ok", "ok"], [r["error"] for r in res.rows]
    assert all(r["env_id"] == "andes_gym/VLLM-v0" for r in res.rows)
    assert {r["policy"] for r in res.rows if r["oracle"]} == {"sjf_oracle"}
    assert all(r["num_requests"] == 24 for r in res.rows)
    assert vllm_engine.closed is False  # a shared engine stays up
    digests = {rec["workload_digest"] for rec in res.records}
    assert len(digests) == 1


def _gain_policy_onnx(path: Path, k_slots: int) -> Path:
    """A hand-built exported policy: each slot's score is its q_gain_x10 feature."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from andes_gym.core.features import SLOT_FEATURES, FeatureSpec

    spec = FeatureSpec(k_slots=k_slots)
    weights = np.zeros((spec.obs_dim, k_slots), dtype=np.float32)
    gain = SLOT_FEATURES.index("q_gain_x10")
    for k in range(k_slots):
        weights[k * spec.num_slot_features + gain, k] = 0.25
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["obs", "w"], ["slot_scores"])],
        "gain",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", spec.obs_dim])],
        [helper.make_tensor_value_info("slot_scores", TensorProto.FLOAT, ["batch", k_slots])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {
        "andes_gym.format": "andes_gym.scoring_policy/1",
        "andes_gym.feature_spec": spec.to_json(),
        "andes_gym.env_id": "andes_gym/Surrogate-v0",
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


def test_exported_checkpoint_runs_beside_baselines(tmp_path):
    pytest.importorskip("onnxruntime")
    ckpt = _gain_policy_onnx(tmp_path / "gain_net.onnx", k_slots=32)
    res = run_board(
        _opts(tmp_path / "o", policies=["fcfs", str(ckpt)], seeds=[0], capacity=False,
              plots=False)
    )  # fmt: skip
    rows = [r for r in res.rows if r["policy"] == "gain_net"]
    assert rows and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert not any(r["oracle"] for r in rows)
    burst = {r["policy"]: r for r in res.rows if r["workload"] == "burst"}
    assert burst["gain_net"]["num_decisions"] > 0
    assert all(rec["cell"]["policy_digest"] for rec in res.records if rec["policy"] == "gain_net")
    assert "gain_net.onnx" in res.markdown and "andes_gym/Surrogate-v0" in res.markdown


# ------------------------------------------------------------------ concurrent writers
def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A write that fails half-way leaves the previous file whole and no temporary file."""
    import os

    from andes_gym.board import report

    path = tmp_path / "episodes.csv"
    report.write_csv(path, [{"a": 1}], ["a"])
    before = path.read_text()

    class Broken(dict):
        def get(self, key, default=None):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        report.write_csv(path, [{"a": 2}] * 100 + [Broken()], ["a"])
    assert path.read_text() == before
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b)))
    report.write_json(tmp_path / "results.json", [{"mean_qoe": 0.5}])
    report.write_requests_csv(tmp_path / "requests.csv", [])
    report.write_text(tmp_path / "board.md", "# Leaderboard\n")
    assert [Path(b).name for _, b in replaced] == ["results.json", "requests.csv", "board.md"]
    assert all(Path(a).parent == tmp_path for a, _ in replaced)
    assert json.loads((tmp_path / "results.json").read_text()) == [{"mean_qoe": 0.5}]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "board.md",
        "episodes.csv",
        "requests.csv",
        "results.json",
    ]


@pytest.mark.timeout(120)
def test_a_second_board_on_the_same_out_dir_is_refused(tmp_path, capsys):
    import os
    import subprocess
    import sys

    out = tmp_path / "board"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from andes_gym.board.report import lock_out_dir\n"
            "with lock_out_dir(Path(sys.argv[1])):\n"
            "    print('locked', flush=True); time.sleep(60)",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main(["--suite", "smoke", "--policies", "fcfs", "--seeds", "0", "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 1
        assert str(out) in err and f"pid {holder.pid}" in err, err
        assert not (out / "cells").exists()  # nothing ran
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone (killed, even), the directory is free again.
    from andes_gym.board.report import lock_out_dir

    with lock_out_dir(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())
