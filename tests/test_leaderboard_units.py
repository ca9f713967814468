"""Leaderboard pieces that need no environment: statistics, bisection, suites, tables."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from andes_gym.board.bisection import ABOVE_RANGE, BELOW_RANGE, WITHIN, Bisection, bisect_capacity
from andes_gym.board.capacity import CapacityOutcome
from andes_gym.board.publish import replace_section
from andes_gym.board.report import capacity_markdown, ranking_markdown
from andes_gym.board.stats import mean_ci, t_quantile
from andes_gym.board.suite import (
    SuiteError,
    capacity_workload,
    load_suite,
    resolve_workloads,
    suite_from_dict,
)

SUITES = ("paper", "cpu-live", "smoke")


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)]
)
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_mean_ci_uses_t_and_sample_std():
    ci = mean_ci([1.0, 2.0, 3.0])
    # s = 1, sem = 1/sqrt(3), t(0.975, 2) = 4.3027
    assert ci.mean == pytest.approx(2.0)
    assert ci.half_width == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    single = mean_ci([0.5])
    assert single.mean == 0.5 and math.isnan(single.half_width)
    assert mean_ci([]).n == 0


# ---------------------------------------------------------------------------- bisection
def test_bisection_finds_known_threshold():
    # QoE falls linearly from 1.0 at load 0; it crosses 0.95 at load 1.25.
    calls = []

    def qoe_at(load):
        calls.append(load)
        return 1.0 - 0.04 * load

    res = bisect_capacity(qoe_at, low=0.5, high=4.0, tolerance=0.01)
    assert res.censored == WITHIN
    assert res.low <= 1.25 < res.high
    assert res.high - res.low <= 0.01
    assert res.capacity == res.low and qoe_at(res.capacity) >= 0.95
    # ~log2(3.5 / 0.01) midpoints plus the two ends, not a grid scan
    assert len(calls) <= 2 + math.ceil(math.log2(3.5 / 0.01)) + 1


def test_bisection_step_function_threshold():
    res = bisect_capacity(lambda x: 1.0 if x <= 2.3 else 0.5, 1.0, 3.0, 0.05)
    assert res.low <= 2.3 < res.high


def test_bisection_censored_ends():
    assert bisect_capacity(lambda x: 0.5, 1.0, 2.0, 0.1).censored == BELOW_RANGE
    assert bisect_capacity(lambda x: 0.5, 1.0, 2.0, 0.1).capacity is None
    res = bisect_capacity(lambda x: 0.99, 1.0, 2.0, 0.1)
    assert res.censored == ABOVE_RANGE and res.capacity == 2.0


def test_bisection_rejects_missing_values_and_bad_ranges():
    b = Bisection(1.0, 2.0, 0.1)
    with pytest.raises(KeyError, match="pending"):
        b.update({1.0: 1.0})
    with pytest.raises(ValueError, match="high > low"):
        Bisection(2.0, 1.0, 0.1)
    with pytest.raises(RuntimeError, match="not finished"):
        Bisection(1.0, 2.0, 0.1).result()


# ------------------------------------------------------------------------------- suites
def _minimal(**extra) -> dict:
    data = {
        "name": "t",
        "policies": ["fcfs"],
        "seeds": [0],
        "workloads": [{"preset": "steady_poisson", "overrides": {"num_requests": 10}}],
    }
    data.update(extra)
    return data


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"polices": ["fcfs"]}, "polices"),
        ({"env": {"kind": "surrogate", "kwarg": {}}}, "kwarg"),
        ({"workloads": [{"preset": "text", "overide": {}}]}, "overide"),
        (
            {
                "capacity": [
                    {
                        "name": "c",
                        "workload": "text",
                        "parameter": "rate_rps",
                        "low": 1,
                        "high": 2,
                        "tolerence": 0.1,
                    }
                ]
            },
            "tolerence",
        ),
    ],
)
def test_unknown_suite_key_names_key_and_file(tmp_path, patch, key):
    path = _write(tmp_path, _minimal(**patch))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert repr(key) in str(err.value) and str(path) in str(err.value)


def test_bad_override_names_the_file(tmp_path):
    data = _minimal(workloads=[{"preset": "text", "overrides": {"arrivals.rate_rpz": 3}}])
    path = _write(tmp_path, data)
    with pytest.raises(SuiteError, match="rate_rpz") as err:
        load_suite(path)
    assert str(path) in str(err.value)


def test_sweep_and_overrides_resolve():
    suite = suite_from_dict(
        _minimal(
            workloads=[
                {"preset": "text", "name": "t1", "overrides": {"arrivals.rate_rps": 7.5}},
                {
                    "preset": "steady_poisson",
                    "name": "p",
                    "overrides": {"num_requests": 20},
                    "sweep": {"parameter": "rate_rps", "values": [1, 2.5]},
                },
            ]
        )
    )
    resolved = resolve_workloads(suite)
    assert [w.name for w in resolved] == ["t1", "p@rate_rps=1", "p@rate_rps=2.5"]
    assert resolved[0].config["arrivals"]["rate_rps"] == 7.5
    assert [w.config["arrivals"]["rate_rps"] for w in resolved[1:]] == [1, 2.5]
    assert all(w.config["num_requests"] == 20 for w in resolved[1:])
    assert resolved[2].group == "p" and resolved[2].value == 2.5


def test_capacity_workload_sets_parameter():
    suite = suite_from_dict(
        _minimal(
            capacity=[
                {
                    "name": "burst",
                    "workload": {"preset": "bursty_2x", "overrides": {"num_requests": 10}},
                    "parameter": "intensity",
                    "low": 1.0,
                    "high": 2.5,
                    "tolerance": 0.1,
                }
            ]
        )
    )
    w = capacity_workload(suite, suite.capacity[0], 1.75)
    assert w.name == "burst@intensity=1.75"
    assert w.config["arrivals"]["intensity"] == 1.75 and w.config["num_requests"] == 10


def test_capacity_range_must_be_valid_workloads():
    # intensity 3 x duty 0.35 > 1: the bursty generator rejects the range's high end.
    data = _minimal(
        capacity=[
            {
                "name": "burst",
                "workload": "bursty_2x",
                "parameter": "intensity",
                "low": 1.0,
                "high": 3.0,
                "tolerance": 0.1,
            }
        ]
    )
    with pytest.raises(SuiteError, match="intensity"):
        suite_from_dict(data)


def test_capacity_policies_must_be_suite_policies():
    search = {
        "name": "rate",
        "workload": "steady_poisson",
        "parameter": "rate_rps",
        "low": 1.0,
        "high": 2.0,
        "tolerance": 0.5,
    }
    # A checkpoint may be listed by its path or by its label (the file's stem).
    policies = ["fcfs", "ckpts/mine.onnx"]
    for listed in (["ckpts/mine.onnx"], ["mine"]):
        data = _minimal(policies=policies, capacity=[{**search, "policies": listed}])
        assert suite_from_dict(data).capacity[0].policies == tuple(listed)
    data = _minimal(policies=policies, capacity=[{**search, "policies": ["andes"]}])
    with pytest.raises(SuiteError, match=r"capacity\[0\]\.policies names 'andes'"):
        suite_from_dict(data)


@pytest.mark.parametrize("name", SUITES)
def test_shipped_suites_load(name):
    suite = load_suite(name)
    assert suite.name == name
    assert resolve_workloads(suite)


# ------------------------------------------------------------------------------- tables
def _row(policy, workload, seed, q, status="ok", oracle=False):
    return {
        "policy": policy,
        "workload": workload,
        "seed": seed,
        "status": status,
        "oracle": oracle,
        "mean_qoe": q,
        "mean_qoe_fixed": None if q is None else q - 0.01,
        "p10_qoe": None if q is None else q - 0.2,
        "frac_qoe_ge_095": 0.5,
        "ttft_p50_s": 1.0,
        "ttft_p90_s": 2.0,
        "throughput_tok_s": 100.0,
        "preemptions_per_request": 0.1,
        "decision_ms_p50": 0.2,
        "error": "" if status == "ok" else "RuntimeError: boom",
    }


def parse_tables(markdown: str) -> dict[str, list[dict]]:
    """Ranking tables by workload heading, as lists of {header: cell} dicts."""
    tables: dict[str, list[dict]] = {}
    current = None
    header = None
    for line in markdown.splitlines():
        if line.startswith("#"):
            current, header = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not set("".join(cells)) <= set("-: "):
                tables.setdefault(current, []).append(dict(zip(header, cells, strict=True)))
    return tables


def test_ranking_table_orders_by_mean_qoe_and_reports_failures():
    rows = [
        _row("fcfs", "w", 0, 0.6),
        _row("fcfs", "w", 1, 0.7),
        _row("andes", "w", 0, 0.9),
        _row("andes", "w", 1, 0.95),
        _row("sjf_oracle", "w", 0, 0.97, oracle=True),
        _row("sjf_oracle", "w", 1, 0.99, oracle=True),
        _row("broken", "w", 0, None, status="failed"),
        _row("broken", "w", 1, None, status="failed"),
    ]
    md = ranking_markdown(rows, ["w"])
    table = parse_tables(md)["w"]
    assert [r["policy"] for r in table] == ["sjf_oracle †", "andes", "fcfs", "broken"]
    assert [r["rank"] for r in table] == ["1", "2", "3", "-"]
    assert table[1]["mean QoE (95% CI)"].startswith("0.925 ± ")
    assert "FAILED (2/2 seeds)" in table[3]["mean QoE (95% CI)"]
    assert "oracle" in md


def test_capacity_table_marks_censoring():
    outs = [
        CapacityOutcome("s", "a", False, "rate_rps", 0.95, "mean_qoe", 3.2, 3.2, 3.3, WITHIN),
        CapacityOutcome("s", "b", False, "rate_rps", 0.95, "mean_qoe", None, 1.0, 4.0, BELOW_RANGE),
        CapacityOutcome(
            "s",
            "c",
            False,
            "rate_rps",
            0.95,
            "mean_qoe",
            None,
            censored="failed",
            error="KeyError: x",
        ),
    ]
    md = capacity_markdown(outs)
    assert "| 3.2 |" in md and "< 1" in md and "FAILED" in md


def test_publish_replaces_only_its_section():
    text = "# Board\n\nintro\n\n## Submitting an entry\n\ntemplate\n"
    once = replace_section(text, "paper", "table v1")
    assert once.index("table v1") < once.index("## Submitting")
    twice = replace_section(replace_section(once, "smoke", "s1"), "paper", "table v2")
    assert "table v1" not in twice and "table v2" in twice and "s1" in twice
    assert twice.count("BEGIN GENERATED: paper") == 1 and "template" in twice
