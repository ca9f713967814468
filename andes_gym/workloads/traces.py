"""Reading and writing request traces (CSV, with the standard library's csv module).

Formats:

- project: header `arrival_s,prompt_tokens,output_tokens` plus optional `ttft_s` and
  `tds_tok_s`; no other columns. Arrival times are seconds (>= 0, sorted); every token
  count must be a whole number >= 1. A target column that is absent is drawn from a
  `TargetConfig`.
- azure (Azure LLM inference trace): `TIMESTAMP,ContextTokens,GeneratedTokens`, TIMESTAMP
  an ISO-like datetime such as `2023-11-16 18:15:46.6805900` (parsed to microseconds).
- burstgpt: `Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`,
  Timestamp in seconds. Optional filters on Model and Log Type.

In every format, times are re-based to seconds after the first (kept) row, so the trace
starts at 0 and the same requests give the same episode whatever clock the file was
logged with (epoch seconds, say). The subtraction is done on the decimal text (on the
datetimes for Azure), so it is exact: a file shifted by 1e15 s reads to the same floats.

For the two public formats, extra columns are ignored, and rows with 0 prompt or 0
response tokens are dropped and counted in `TraceData.num_dropped`: BurstGPT logs failed
requests with 0 response tokens, and a request that streams nothing has no QoE to
schedule for.

Bounds (those of `andes_gym.workloads.spec`): a token count is at most `MAX_TOKENS`
(2**31 - 1), a time at most `MAX_TIME_S` (1e9 s) after the first row, a TTFT target at
most `MAX_TIME_S` and a TDS target in (0, `MAX_TDS_TOK_S`]. Files are UTF-8 (a leading
byte-order mark is dropped).

Every problem in a file raises `TraceError` naming the file, the line number (1-based,
the header is line 1) and, when one cell or column is at fault, the column.

This module holds the formats (a reader each, `read_trace` to pick one) and the
conversion to and from `Workload`; `trace_data` holds `TraceData` and `TraceError`, and
`trace_csv` the CSV rows, cell parsers and time checks every reader shares.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from andes_gym.config_files import ConfigError
from andes_gym.workloads.config import TargetConfig
from andes_gym.workloads.spec import Workload
from andes_gym.workloads.targets import draw_tds, draw_ttft
from andes_gym.workloads.trace_csv import (
    TraceRows,
    check_sorted,
    parse_arrival,
    parse_count,
    parse_datetime,
    parse_positive_count,
    parse_speed,
    parse_target,
    read_columns,
    rebase,
    trace_from_columns,
)
from andes_gym.workloads.trace_data import TraceData
from andes_gym.workloads.trace_data import TraceError as TraceError  # re-exported

PROJECT_COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens")
PROJECT_TARGET_COLUMNS = ("ttft_s", "tds_tok_s")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = (
    "Timestamp",
    "Model",
    "Request tokens",
    "Response tokens",
    "Total tokens",
    "Log Type",
)


# --- readers ------------------------------------------------------------------------------


def read_project_trace(path: str | Path) -> TraceData:
    """Reads a trace in the project's CSV format.

    Args:
        path: CSV file with columns arrival_s, prompt_tokens, output_tokens and optionally
            ttft_s, tds_tok_s.

    Returns:
        The rows; `ttft_s` / `tds_tok_s` are None when their column is absent.

    Raises:
        TraceError: On a file that is not UTF-8 CSV, an empty file, a missing, unknown or
            duplicate column, a non-numeric cell, a value out of range (see the module
            docstring), a zero token count, or unsorted arrival times.
    """
    path = Path(path)
    rows = TraceRows(path, PROJECT_COLUMNS, PROJECT_TARGET_COLUMNS, strict=True)
    has_ttft = "ttft_s" in rows.index
    has_tds = "tds_tok_s" in rows.index

    def parse_row(rows: TraceRows, line: int, row: list[str]) -> tuple:
        return (
            rows.cell(line, row, "arrival_s", parse_arrival),
            rows.cell(line, row, "prompt_tokens", parse_positive_count),
            rows.cell(line, row, "output_tokens", parse_positive_count),
            rows.cell(line, row, "ttft_s", parse_target) if has_ttft else 0.0,
            rows.cell(line, row, "tds_tok_s", parse_speed) if has_tds else 0.0,
        )

    lines, columns = read_columns(rows, parse_row)
    stamps, prompt, output, ttft, tds = columns or ([], [], [], [], [])
    check_sorted(path, lines, stamps, "arrival_s")
    return trace_from_columns(
        path,
        rebase(path, lines, stamps, "arrival_s"),
        prompt,
        output,
        dropped=0,
        ttft_s=ttft if has_ttft else None,
        tds_tok_s=tds if has_tds else None,
    )


def read_azure_trace(path: str | Path) -> TraceData:
    """Reads an Azure LLM inference trace (TIMESTAMP, ContextTokens, GeneratedTokens).

    Args:
        path: The CSV file.

    Returns:
        The rows, timed in seconds from the first kept row; rows with 0 context or
        generated tokens are dropped and counted.

    Raises:
        TraceError: On a file that is not UTF-8 CSV, an empty file, a missing or
            duplicate column, a bad or out-of-range cell, or unsorted times.
    """
    path = Path(path)

    def parse_row(rows: TraceRows, line: int, row: list[str]) -> tuple:
        return (
            rows.cell(line, row, "TIMESTAMP", parse_datetime),
            rows.cell(line, row, "ContextTokens", parse_count),
            rows.cell(line, row, "GeneratedTokens", parse_count),
            True,
        )

    lines, columns = read_columns(TraceRows(path, AZURE_COLUMNS), parse_row)
    return _external_trace(path, lines, columns, "TIMESTAMP")


def read_burstgpt_trace(
    path: str | Path, *, model: str | None = None, log_type: str | None = None
) -> TraceData:
    """Reads a BurstGPT trace.

    Args:
        path: The CSV file (Timestamp, Model, Request tokens, Response tokens, Total
            tokens, Log Type).
        model: Keep only rows whose Model equals this (None: all).
        log_type: Keep only rows whose Log Type equals this (None: all).

    Returns:
        The rows, timed in seconds from the first kept row; failed rows (0 response
        tokens), 0-prompt rows and filtered-out rows are dropped and counted.

    Raises:
        TraceError: On a file that is not UTF-8 CSV, an empty file, a missing or
            duplicate column, a bad or out-of-range cell, a negative time, or unsorted
            times.
    """
    path = Path(path)

    def parse_row(rows: TraceRows, line: int, row: list[str]) -> tuple:
        wanted = (model is None or row[rows.index["Model"]].strip() == model) and (
            log_type is None or row[rows.index["Log Type"]].strip() == log_type
        )
        return (
            rows.cell(line, row, "Timestamp", parse_arrival),
            rows.cell(line, row, "Request tokens", parse_count),
            rows.cell(line, row, "Response tokens", parse_count),
            wanted,
        )

    lines, columns = read_columns(TraceRows(path, BURSTGPT_COLUMNS), parse_row)
    return _external_trace(path, lines, columns, "Timestamp")


def _external_trace(path: Path, lines: list[int], columns: list[tuple], time_column: str):
    """Checks order, drops unwanted/0-token rows and re-bases times to the first kept row."""
    stamps, prompt, output, wanted = columns or ([], [], [], [])
    # Order is checked over every row, dropped ones too: it is a property of the file.
    check_sorted(path, lines, stamps, time_column)
    prompt_arr = np.asarray(prompt, dtype=np.int64)
    output_arr = np.asarray(output, dtype=np.int64)
    keep = np.asarray(wanted, dtype=bool) & (prompt_arr > 0) & (output_arr > 0)
    kept = np.flatnonzero(keep)
    return trace_from_columns(
        path,
        rebase(path, [lines[i] for i in kept], [stamps[i] for i in kept], time_column),
        prompt_arr[keep],
        output_arr[keep],
        dropped=int(len(keep) - keep.sum()),
    )


def read_trace(
    path: str | Path,
    trace_format: str = "project",
    *,
    model: str | None = None,
    log_type: str | None = None,
) -> TraceData:
    """Reads a trace in one of the formats "project", "azure", "burstgpt".

    Args:
        path: The CSV file.
        trace_format: Its format.
        model: BurstGPT only: Model filter.
        log_type: BurstGPT only: Log Type filter.

    Returns:
        The rows.

    Raises:
        ValueError: On an unknown format, or filters given for a format without them.
        TraceError: On a malformed file.
    """
    if trace_format != "burstgpt" and (model is not None or log_type is not None):
        raise ValueError(f"model/log_type filters apply to burstgpt traces, not {trace_format!r}")
    if trace_format == "project":
        return read_project_trace(path)
    if trace_format == "azure":
        return read_azure_trace(path)
    if trace_format == "burstgpt":
        return read_burstgpt_trace(path, model=model, log_type=log_type)
    raise ValueError(f"unknown trace format {trace_format!r}; expected project, azure or burstgpt")


# --- workloads ----------------------------------------------------------------------------


def write_trace_csv(workload: Workload, path: str | Path) -> None:
    """Writes a workload in the project format, with both target columns.

    Floats are written with `repr`, the shortest text that reads back to the same double,
    so `read_trace_workload(path)` returns `workload` with every arrival time moved back by
    the first one (the reader re-bases; times are equal to within a rounding of the
    subtraction, every other field is equal).

    Args:
        workload: The workload to write.
        path: Destination file (overwritten).
    """
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(PROJECT_COLUMNS + PROJECT_TARGET_COLUMNS)
        for i in range(len(workload)):
            writer.writerow(
                (
                    repr(float(workload.arrival_s[i])),
                    int(workload.prompt_tokens[i]),
                    int(workload.output_tokens[i]),
                    repr(float(workload.ttft_s[i])),
                    repr(float(workload.tds_tok_s[i])),
                )
            )


def trace_to_workload(
    trace: TraceData,
    rng: np.random.Generator | None = None,
    targets: TargetConfig | None = None,
    *,
    name: str = "workload",
) -> Workload:
    """Turns trace rows into a workload, drawing any targets the trace lacks.

    A target column present in the trace is kept and scaled by `targets.time_scale`
    (when `targets` is given); a missing one is drawn from `targets` with `rng`.

    Args:
        trace: The rows.
        rng: Source of randomness for missing targets.
        targets: A `TargetConfig`; required when the trace lacks a target column.
        name: Name of the workload.

    Returns:
        The workload.

    Raises:
        ValueError: If targets are missing and no `targets`/`rng` was given.
    """
    if (trace.ttft_s is None or trace.tds_tok_s is None) and (targets is None or rng is None):
        raise ValueError(
            f"{trace.path}: the trace has no "
            f"{'ttft_s' if trace.ttft_s is None else 'tds_tok_s'} column; "
            "pass a TargetConfig and an rng to draw the missing targets"
        )
    time_scale = 1.0 if targets is None else targets.time_scale
    if trace.ttft_s is None:
        ttft_s = draw_ttft(trace.prompt_tokens, targets)
    else:
        ttft_s = trace.ttft_s * time_scale
    if trace.tds_tok_s is None:
        tds_tok_s = draw_tds(rng, len(trace), targets)
    else:
        tds_tok_s = trace.tds_tok_s / time_scale
    return Workload(
        arrival_s=trace.arrival_s,
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        ttft_s=ttft_s,
        tds_tok_s=tds_tok_s,
        name=name,
    )


def read_trace_workload(
    path: str | Path,
    rng: np.random.Generator | None = None,
    targets: TargetConfig | None = None,
    *,
    name: str | None = None,
) -> Workload:
    """Reads a project-format CSV as a workload (the inverse of `write_trace_csv`).

    Args:
        path: The CSV file.
        rng: Source of randomness for targets the file lacks.
        targets: A `TargetConfig` for targets the file lacks.
        name: Workload name (default: the file's stem).

    Returns:
        The workload.

    Raises:
        TraceError: On a malformed file.
        ConfigError: If the file holds no request (a header only).
        ValueError: If the file lacks targets and no `targets`/`rng` was given.
    """
    trace = read_project_trace(path)
    if len(trace) == 0:
        raise ConfigError("the trace holds no requests (a header only)", source=path)
    return trace_to_workload(trace, rng, targets, name=name or Path(path).stem)
