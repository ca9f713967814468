"""Boards and training sweeps on Ray (one local 2-CPU Ray for the session, `ray_support`)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from ray_support import ray_local  # noqa: F401 (the session fixture)

from andes_gym.board.cells import TIMING_FIELDS
from andes_gym.board.leaderboard import BoardOptions, run_board
from andes_gym.board.plan import make_cell, policy_entries
from andes_gym.board.runner import CellRunner
from andes_gym.board.suite import load_suite, resolve_workloads
from andes_gym.leaderboard import main as board_main
from andes_gym.scale.cluster import RAY_EXTRA_HINT
from andes_gym.scale.sweep import SweepSpec, make_trials, parse_grid_item, run_sweep

pytestmark = pytest.mark.ray

BOARD_POLICIES = ["fcfs", "andes", "no_such_policy"]
OUTPUTS = ("results.json", "capacity.json", "requests.csv", "capacity_points.csv")


def _board(out: Path, **kw) -> BoardOptions:
    base = {
        "suite": "smoke",
        "out": str(out),
        "progress": False,
        "plots": False,
        "timelines": 2,
        "seeds": [0],
        "policies": list(BOARD_POLICIES),
    }
    base.update(kw)
    return BoardOptions(**base)


def _untimed(path: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k not in TIMING_FIELDS}
        for row in json.loads(path.read_text())
    ]


@pytest.mark.usefixtures("ray_local")
def test_board_on_ray_equals_local_runner_with_failures_and_skip_done(tmp_path):
    local = run_board(_board(tmp_path / "local"))
    on_ray = run_board(_board(tmp_path / "ray", ray="local"))
    # The same cells, failed ones included, merged in the same order.
    assert _untimed(local.out_dir / "results.json") == _untimed(on_ray.out_dir / "results.json")
    for name in OUTPUTS[1:]:
        assert (local.out_dir / name).read_bytes() == (on_ray.out_dir / name).read_bytes(), name
    failed = [r for r in on_ray.rows if r["status"] != "ok"]
    assert {r["policy"] for r in failed} == {"no_such_policy"}
    assert all("unknown policy 'no_such_policy'" in r["error"] for r in failed)
    assert {o.policy: o.censored for o in on_ray.capacity}["no_such_policy"] == "failed"
    assert on_ray.num_failed == local.num_failed > 0
    assert "Failed cells" in (on_ray.out_dir / "board.md").read_text()

    # Rerun on Ray: every OK cell (board and capacity probes) is reused, failed ones re-run.
    again = run_board(_board(tmp_path / "ray", ray="local"))
    num_failed_cells = len(failed) + sum(p["status"] != "ok" for p in on_ray.capacity_points)
    assert (again.ran, again.skipped) == (num_failed_cells, on_ray.ran - num_failed_cells)
    assert _untimed(again.out_dir / "results.json") == _untimed(on_ray.out_dir / "results.json")


@pytest.mark.usefixtures("ray_local")
def test_a_dead_ray_worker_fails_its_cell_only(tmp_path):
    from andes_gym.scale.cluster import RayConnection
    from andes_gym.scale.ray_boards import RayCellBackend

    suite = load_suite("smoke")
    workload = resolve_workloads(suite)[0]
    kwargs = suite.env.kwargs_for("surrogate")
    cells = [
        make_cell(workload, entry, 0, "surrogate", kwargs)
        for entry in policy_entries(["fcfs", "ray_support:CrashingPolicy"])
    ]
    backend = RayCellBackend(RayConnection("local"), max_retries=0)
    runner = CellRunner(tmp_path / "cells", progress=False, backend=backend)
    records = {r["policy"]: r for r in runner.run(cells)}
    assert records["fcfs"]["status"] == "ok"
    crashed = records["CrashingPolicy"]
    assert crashed["status"] == "failed" and crashed["error"].startswith("Ray task failed")
    assert "WorkerCrashedError" in crashed["error"], crashed["error"]
    assert json.loads((tmp_path / "cells" / cells[1].file_name()).read_text())["status"] == "failed"


def test_live_engine_board_is_refused_on_ray(tmp_path, capsys):
    status = board_main(
        ["--suite", "smoke", "--env", "vllm", "--ray", "--out", str(tmp_path / "live"),
         "--no-progress"]
    )  # fmt: skip
    assert status == 1
    assert "live-engine (--env vllm)" in capsys.readouterr().err


def test_missing_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    from andes_gym.sweep import main as sweep_main

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    assert board_main(["--suite", "smoke", "--ray", "--out", str(tmp_path / "b")]) == 1
    assert RAY_EXTRA_HINT in capsys.readouterr().err
    assert sweep_main(["--config", "smoke", "--ray", "auto", "--out", str(tmp_path / "s")]) == 1
    assert RAY_EXTRA_HINT in capsys.readouterr().err


def test_grid_items_and_trial_order():
    assert parse_grid_item("algo.learning_rate=[1e-4,3e-4]") == (
        "algo.learning_rate",
        [1e-4, 3e-4],
    )
    assert parse_grid_item("algo.n_epochs=4") == ("algo.n_epochs", [4])
    with pytest.raises(ValueError, match="key=\\[v1,v2\\]"):
        parse_grid_item("algo.learning_rate")
    trials = make_trials({"algo.learning_rate": [1e-4, 3e-4], "algo.n_epochs": [2]}, [0, 1])
    assert [(t.grid, t.seed) for t in trials] == [
        (("algo.learning_rate=0.0001", "algo.n_epochs=2"), 0),
        (("algo.learning_rate=0.0001", "algo.n_epochs=2"), 1),
        (("algo.learning_rate=0.0003", "algo.n_epochs=2"), 0),
        (("algo.learning_rate=0.0003", "algo.n_epochs=2"), 1),
    ]
    assert trials[3].name == "t003__learning_rate=0.0003_n_epochs=2__seed1"


def _fake_train(config_path: str, overrides: list[str]) -> int:
    """Stands in for the sweep's training run: a run directory whose eval.csv follows the lr."""
    sets = dict(a.split("=", 1) for a in overrides)
    lr = float(sets["algo.learning_rate"])
    run_dir = Path(sets["run_root"]) / f"andes_gym-Surrogate-v0__smoke__{sets['seed']}__now"
    run_dir.mkdir(parents=True)
    if lr >= 0.05:
        print("error: the fake run refuses this rate", file=sys.stderr)
        return 2
    learned = 0.9 + lr + 0.001 * int(sets["seed"])
    rows = [("learned", 1, learned), ("andes", 1, 0.9), ("learned", "mean", learned)]
    rows.append(("andes", "mean", 0.9))
    text = "policy,seed,mean_qoe\n" + "".join(f"{p},{s},{q}\n" for p, s, q in rows)
    (run_dir / "eval.csv").write_text(text)
    return 0


def test_sweep_in_process_ranks_trials_and_reports_failures(tmp_path, monkeypatch):
    monkeypatch.setattr("andes_gym.scale.sweep._train_main", _fake_train)
    spec = SweepSpec(
        config="smoke", grid={"algo.learning_rate": [0.01, 0.03, 0.05]}, seeds=[0, 1],
        out=str(tmp_path / "s"),
    )  # fmt: skip
    result = run_sweep(spec)
    assert result.num_failed == 2
    ok = [r for r in result.rows if r["status"] == "ok"]
    assert [r["rank"] for r in ok] == [1, 2, 3, 4]
    assert [(r["grid"], r["seed"]) for r in ok] == [
        ("algo.learning_rate=0.03", 1),
        ("algo.learning_rate=0.03", 0),
        ("algo.learning_rate=0.01", 1),
        ("algo.learning_rate=0.01", 0),
    ]
    assert ok[0]["qoe_vs_andes"] == pytest.approx(0.931 / 0.9)
    assert ok[0]["seeds_won"] == ok[0]["num_seeds"] == 1
    failed = result.rows[4:]
    assert all(r["status"] == "failed" for r in failed)
    assert all("status 2: error: the fake run refuses this rate" in r["error"] for r in failed)
    table = (result.out_dir / "sweep.md").read_text()
    assert "## Failed trials" in table and "## Grid points (mean over seeds)" in table


@pytest.mark.usefixtures("ray_local")
def test_sweep_on_tune_trains_two_runs_and_ranks_them(tmp_path):
    # Two trials that train (two engine profiles) and one that fails (an unknown engine,
    # which the environment rejects when the training starts).
    engines = ["cpu_tiny", "cpu_tiny_fitted", "no_such_engine"]
    spec = SweepSpec(
        config="smoke",
        grid={"env.kwargs.engine": engines},
        seeds=[0],
        overrides=["total_timesteps=128"],
        out=str(tmp_path / "sweep"),
        ray="local",
        cpus_per_trial=1,
    )
    result = run_sweep(spec)
    assert result.num_failed == 1
    rows = [r for r in result.rows if r["status"] == "ok"]
    assert [r["rank"] for r in rows] == [1, 2]
    assert rows[0]["qoe_vs_andes"] >= rows[1]["qoe_vs_andes"]
    assert {r["grid"] for r in rows} == {f"env.kwargs.engine={e}" for e in engines[:2]}
    for row in rows:
        run_dir = Path(row["run_dir"])
        # The run directory `python -m andes_gym.train` makes, under the trial's folder.
        assert run_dir.parent.parent == result.out_dir / "trials"
        assert run_dir.name.startswith("andes_gym-Surrogate-v0__smoke__0__")
        for name in ("config.yaml", "command.txt", "feature_spec.json", "eval.csv"):
            assert (run_dir / name).is_file(), name
        assert "andes_gym.train" in (run_dir / "command.txt").read_text()
        with (run_dir / "eval.csv").open() as fh:
            means = {r["policy"]: float(r["mean_qoe"]) for r in csv.DictReader(fh)
                     if r["seed"] == "mean"}  # fmt: skip
        assert row["learned_mean_qoe"] == means["learned"]
        assert row["andes_mean_qoe"] == means["andes"]
        engine = row["grid"].split("=")[1]
        assert f"engine: {engine}\n" in (run_dir / "config.yaml").read_text()
    (failed,) = [r for r in result.rows if r["status"] != "ok"]
    assert failed["error"].startswith("RuntimeError: andes_gym.train exited with status")
    assert "no_such_engine" in failed["error"]
    table = (result.out_dir / "sweep.md").read_text()
    assert "Trials ranked by held-out mean QoE against andes" in table
    assert (
        table.index(rows[0]["trial"])
        < table.index(rows[1]["trial"])
        < table.index("## Failed trials")
    )
    assert (result.out_dir / "tune").is_dir()
    assert len(json.loads((result.out_dir / "trials.json").read_text())) == 3
