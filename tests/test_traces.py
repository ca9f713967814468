"""Trace readers and writer: project, Azure and BurstGPT formats, and their errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from andes_gym.workloads import (
    ArrivalConfig,
    LengthConfig,
    TargetConfig,
    TraceError,
    WorkloadConfig,
    make_workload,
    read_azure_trace,
    read_burstgpt_trace,
    read_project_trace,
    read_trace,
    read_trace_workload,
    trace_to_workload,
    write_trace_csv,
)

DATA = Path(__file__).parent / "data"


def test_write_read_round_trip(tmp_path: Path) -> None:
    cfg = WorkloadConfig(
        name="rt",
        num_requests=300,
        arrivals=ArrivalConfig(kind="gamma", rate_rps=7.0, cv=2.0),
        targets=TargetConfig(kind="mixed", time_scale=0.013),
    )
    original = make_workload(cfg, 5)
    path = tmp_path / "rt.csv"
    write_trace_csv(original, path)
    again = read_trace_workload(path)
    # The reader re-bases times to the first arrival; everything else reads back exactly.
    assert again.arrival_s[0] == 0.0
    rebased = original.arrival_s - original.arrival_s[0]
    np.testing.assert_allclose(again.arrival_s, rebased, rtol=1e-15, atol=1e-15)
    assert again.replace(arrival_s=rebased).equals(original.replace(arrival_s=rebased))
    assert again.name == "rt"


def test_project_trace_without_targets_draws_them() -> None:
    path = DATA / "project_no_targets.csv"
    trace = read_project_trace(path)
    assert trace.ttft_s is None and trace.tds_tok_s is None
    assert trace.arrival_s.tolist() == [0.0, 0.5, 0.5, 2.25]
    with pytest.raises(ValueError, match="no ttft_s column"):
        trace_to_workload(trace)
    w = trace_to_workload(trace, np.random.default_rng(0), TargetConfig(kind="listening"))
    assert w.ttft_s.tolist() == [1.0, 1.2, 1.0, 2.4]
    assert set(w.tds_tok_s.tolist()) <= {5.1, 4.3, 4.2, 4.0, 3.8}


def test_trace_targets_are_kept_and_time_scaled(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,tds_tok_s\n0,10,5,4.0\n1,10,5,8.0\n")
    w = read_trace_workload(path, np.random.default_rng(0), TargetConfig(time_scale=0.5))
    assert w.tds_tok_s.tolist() == [8.0, 16.0]
    assert w.ttft_s.tolist() == [0.5, 0.5]  # drawn: max(10/5000, 1) * 0.5


def test_azure_reader_converts_timestamps_and_drops_empty_outputs() -> None:
    trace = read_azure_trace(DATA / "azure_small.csv")
    assert np.allclose(trace.arrival_s, [0.0, 3.31941, 14.56941, 120.0], atol=1e-6)
    assert trace.prompt_tokens.tolist() == [374, 396, 91, 1500]
    assert trace.output_tokens.tolist() == [44, 109, 3, 250]
    assert trace.num_dropped == 1
    assert trace.ttft_s is None


def test_burstgpt_reader_drops_failed_rows_and_filters() -> None:
    path = DATA / "burstgpt_small.csv"
    trace = read_burstgpt_trace(path)
    assert trace.arrival_s.tolist() == [0.0, 42.5, 113.0, 195.0]
    assert trace.prompt_tokens.tolist() == [472, 417, 1360, 93]
    assert trace.output_tokens.tolist() == [18, 276, 107, 35]
    assert trace.num_dropped == 1
    gpt4 = read_trace(path, "burstgpt", model="GPT-4")
    assert gpt4.arrival_s.tolist() == [0.0, 152.5]
    assert gpt4.num_dropped == 3
    api = read_burstgpt_trace(path, log_type="API log")
    assert api.output_tokens.tolist() == [276, 107]
    with pytest.raises(ValueError, match="burstgpt"):
        read_trace(path, "azure", model="GPT-4")


def test_window_and_rate_scale() -> None:
    trace = read_burstgpt_trace(DATA / "burstgpt_small.csv")
    window = trace.window(40.0, 150.0)
    assert window.arrival_s.tolist() == [2.5, 73.0]
    assert window.scale_rate(2.0).arrival_s.tolist() == [1.25, 36.5]


def trace_config(**arrival_changes) -> WorkloadConfig:
    arrival = dict(
        kind="trace", trace_path=str(DATA / "burstgpt_small.csv"), trace_format="burstgpt"
    )
    return WorkloadConfig(
        name="bg",
        arrivals=ArrivalConfig(**(arrival | arrival_changes)),
        lengths=LengthConfig(kind="trace", scale=0.1, max_prompt_tokens=100),
        targets=TargetConfig(kind="reading", time_scale=0.01),
    )


def test_make_workload_from_trace() -> None:
    w = make_workload(trace_config(trace_window_s=(40.0, 250.0), rate_scale=2.0), 0)
    assert w.arrival_s.tolist() == [1.25, 36.5, 77.5]
    assert w.prompt_tokens.tolist() == [42, 100, 9]  # 0.1x, clipped at 100
    assert w.output_tokens.tolist() == [28, 11, 4]
    assert np.array_equal(w.ttft_s, np.full(3, 0.01))
    assert set(np.round(w.tds_tok_s * 0.01, 9)) <= {3.2, 5.3, 5.9, 6.5, 7.1, 7.7}
    first_two = make_workload(dataclasses.replace(trace_config(), num_requests=2), 0)
    assert len(first_two) == 2
    with pytest.raises(ValueError, match="holds only 4 requests"):
        make_workload(dataclasses.replace(trace_config(), num_requests=9), 0)
    with pytest.raises(ValueError, match="no requests in window"):
        make_workload(trace_config(trace_window_s=(1000.0, 2000.0)), 0)


def test_make_workload_with_azure_trace_and_generated_lengths() -> None:
    cfg = WorkloadConfig(
        name="az",
        arrivals=ArrivalConfig(
            kind="trace", trace_path=str(DATA / "azure_small.csv"), trace_format="azure"
        ),
        lengths=LengthConfig(kind="fixed", prompt_tokens=7, output_tokens=3),
    )
    w = make_workload(cfg, 0)
    assert len(w) == 4
    assert w.prompt_tokens.tolist() == [7] * 4


# --- malformed files: every error names file, line and column -----------------------------

PROJECT_HEADER = "arrival_s,prompt_tokens,output_tokens\n"
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
BURST_HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"


@pytest.mark.parametrize(
    ("fmt", "text", "line", "column", "needle"),
    [
        ("project", "arrival_s,prompt_tokens\n0,5\n", 1, "output_tokens", "missing column"),
        ("project", PROJECT_HEADER + "0,5,5\n-1,5,5\n", 3, "arrival_s", ">= 0"),
        ("project", PROJECT_HEADER + "0,5,5\n2,5,5\n\n1,5,5\n", 5, "arrival_s", "sorted"),
        ("project", PROJECT_HEADER + "0,5,5\n1,five,5\n", 3, "prompt_tokens", "bad value 'five'"),
        ("project", PROJECT_HEADER + "0,5,0\n", 2, "output_tokens", ">= 1"),
        ("project", PROJECT_HEADER + "0,5,2.5\n", 2, "output_tokens", "whole number"),
        ("project", PROJECT_HEADER + "nan,5,5\n", 2, "arrival_s", "finite"),
        ("project", "arrival_s,prompt_tokens,output_tokens,ttft\n", 1, "ttft", "unknown column"),
        ("azure", "TIMESTAMP,ContextTokens\n", 1, "GeneratedTokens", "missing column"),
        ("azure", AZURE_HEADER + "2023-11-16 18:15:46.68,5,5\nyesterday,5,5\n", 3, "TIMESTAMP", "datetime"),
        ("azure", AZURE_HEADER + "2023-11-16 18:15:46,5,5\n2023-11-16 18:15:45,5,5\n", 3, "TIMESTAMP", "sorted"),
        ("azure", AZURE_HEADER + "2023-11-16 18:15:46,-5,5\n", 2, "ContextTokens", "negative"),
        ("burstgpt", BURST_HEADER.replace("Response tokens,", ""), 1, "Response tokens", "missing column"),
        ("burstgpt", BURST_HEADER + "-3,ChatGPT,5,5,10,API log\n", 2, "Timestamp", ">= 0"),
        ("burstgpt", BURST_HEADER + "3,ChatGPT,5,5,10,API log\n2,ChatGPT,5,5,10,API log\n", 3, "Timestamp", "sorted"),
        ("burstgpt", BURST_HEADER + "3,ChatGPT,5,n/a,10,API log\n", 2, "Response tokens", "bad value"),
    ],
)  # fmt: skip
def test_bad_files_name_file_line_and_column(
    tmp_path: Path, fmt: str, text: str, line: int, column: str, needle: str
) -> None:
    path = tmp_path / f"bad_{fmt}.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as info:
        read_trace(path, fmt)
    message = str(info.value)
    assert str(path) in message
    assert f"line {line}," in message or message.split(": ")[0].endswith(f"line {line}")
    assert f"column {column!r}" in message
    assert needle in message
    assert info.value.line == line and info.value.column == column
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("fmt", ["project", "azure", "burstgpt"])
def test_empty_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(TraceError) as info:
        read_trace(path, fmt)
    assert str(path) in str(info.value) and "line 1" in str(info.value)
    assert "empty file" in str(info.value)


def test_ragged_row_names_line(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text(PROJECT_HEADER + "0,5,5\n1,5\n")
    with pytest.raises(TraceError, match=r"line 3: 2 cells, expected 3"):
        read_project_trace(path)


def test_header_only_gives_empty_trace(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_text(PROJECT_HEADER)
    assert len(read_project_trace(path)) == 0
