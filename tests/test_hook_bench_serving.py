"""The serving benchmark's arithmetic, without servers: loads, priorities, the trace, CIs."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_serving  # noqa: E402


def test_loads_are_names_or_multiples_of_the_capacity():
    assert bench_serving.parse_loads(["under", "near", "1.3x", "2"]) == [
        ("under", 0.6),
        ("near", 1.0),
        ("1.3x", 1.3),
        ("2x", 2.0),
    ]
    for bad in ("heavy", "0", "-1x"):
        with pytest.raises(argparse.ArgumentTypeError, match=bad):
            bench_serving.parse_loads([bad])


def test_t_interval_matches_the_t_distribution():
    mean, half = bench_serving.t_interval([0.5, 0.7, 0.6])
    # t(0.975, 2) = 4.303; stdev 0.1; n = 3
    assert mean == pytest.approx(0.6) and half == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert math.isnan(bench_serving.t_interval([0.4])[1])
    assert bench_serving.fmt([0.4, float("nan")]) == "0.400"
    assert bench_serving.fmt([]) == "n/a"


def test_tight_targets_get_the_higher_priority():
    ttft = np.array([0.02, 0.02, 0.1, 0.1])
    tds = np.array([160.0, 60.0, 160.0, 60.0])
    np.testing.assert_array_equal(bench_serving.request_priority(ttft, tds), [0, 1, 1, 2])


def test_the_trace_mixes_readers_listeners_and_long_prompts_at_the_asked_rate():
    trace = bench_serving.make_trace(rate_rps=100.0, duration_s=20.0, seed=3)
    assert abs(len(trace) - 2000) <= 2
    assert len(np.unique(trace.tds_tok_s.round(3))) >= 2  # readers and listeners
    assert trace.prompt_tokens.max() > 200  # summarization prompts
    assert trace.arrival_s[-1] == pytest.approx(20.0, rel=0.25)
    settings = bench_serving.build_parser().parse_args([]).settings
    assert settings == list(bench_serving.SETTINGS)
