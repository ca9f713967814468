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
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from andes_gym.config_files import ConfigError, read_text
from andes_gym.workloads.config import TargetConfig
from andes_gym.workloads.spec import MAX_TDS_TOK_S, MAX_TIME_S, MAX_TOKENS, Workload
from andes_gym.workloads.targets import draw_tds, draw_ttft

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


class TraceError(ConfigError):
    """A malformed trace file; the message names the file, line and column.

    Attributes:
        path: The file (also `source`).
        line: The 1-based line (the header is line 1).
        column: The column at fault (also `key`), or None.
    """

    def __init__(self, path: str | Path, line: int, column: str | None, problem: str) -> None:
        where = f"{path}, line {line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {problem}")  # the message already says where
        self.path = self.source = str(path)
        self.line = line
        self.column = self.key = column


@dataclass(frozen=True, eq=False)
class TraceData:
    """Requests read from a trace, before targets are filled in.

    Attributes:
        path: The file the rows came from.
        arrival_s: Sorted arrival times in seconds after the first row (float64).
        prompt_tokens: Prompt lengths (int64, >= 1).
        output_tokens: Output lengths (int64, >= 1).
        ttft_s: TTFT targets from the file, or None when the file has none.
        tds_tok_s: TDS targets from the file, or None when the file has none.
        num_dropped: Rows skipped by the reader (0-token or filtered-out rows).
    """

    path: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray | None = None
    tds_tok_s: np.ndarray | None = None
    num_dropped: int = 0

    def __len__(self) -> int:
        return len(self.arrival_s)

    def select(self, mask_or_index: np.ndarray) -> TraceData:
        """The rows picked by a boolean mask or an index array/slice."""

        def pick(arr: np.ndarray | None) -> np.ndarray | None:
            return None if arr is None else arr[mask_or_index]

        return TraceData(
            path=self.path,
            arrival_s=self.arrival_s[mask_or_index],
            prompt_tokens=self.prompt_tokens[mask_or_index],
            output_tokens=self.output_tokens[mask_or_index],
            ttft_s=pick(self.ttft_s),
            tds_tok_s=pick(self.tds_tok_s),
            num_dropped=self.num_dropped,
        )

    def window(self, start_s: float, end_s: float) -> TraceData:
        """Rows arriving in [start_s, end_s), re-based so the window starts at 0."""
        if not 0 <= start_s < end_s:
            raise ValueError(f"window must satisfy 0 <= start_s < end_s, got [{start_s}, {end_s})")
        sub = self.select((self.arrival_s >= start_s) & (self.arrival_s < end_s))
        return _replace_arrivals(sub, sub.arrival_s - start_s)

    def scale_rate(self, factor: float) -> TraceData:
        """The same rows arriving `factor` times as fast (arrival times divided by it)."""
        if not (math.isfinite(factor) and factor > 0):
            raise ValueError(f"rate scale factor must be a positive number, got {factor}")
        return _replace_arrivals(self, self.arrival_s / factor)


def _replace_arrivals(trace: TraceData, arrival_s: np.ndarray) -> TraceData:
    return TraceData(
        path=trace.path,
        arrival_s=arrival_s,
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        ttft_s=trace.ttft_s,
        tds_tok_s=trace.tds_tok_s,
        num_dropped=trace.num_dropped,
    )


# --- cell parsing -------------------------------------------------------------------------


# Enough digits to subtract any two finite doubles' decimal texts exactly.
_EXACT = Context(prec=800)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def _parse_count(text: str) -> int:
    """A whole number in [0, MAX_TOKENS]; '12.0' is accepted (some exports write floats)."""
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{text!r} is not a whole number")
    if value < 0:
        raise ValueError(f"{text!r} is negative; a token count must be >= 0")
    if value > MAX_TOKENS:
        raise ValueError(f"a token count must be at most {MAX_TOKENS} (2**31 - 1)")
    return int(value)


def _parse_arrival(text: str) -> Decimal:
    """A finite arrival time in seconds >= 0, kept as its exact decimal value for re-basing."""
    _parse_float(text)  # the same syntax and range as a float
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if value < 0:
        raise ValueError("arrival time must be >= 0")
    return value


def _seconds_after(stamp: Decimal | datetime, first: Decimal | datetime) -> float:
    """`stamp - first` in seconds, exactly rounded once to a float."""
    if isinstance(stamp, datetime):
        return (stamp - first) / timedelta(seconds=1)
    return float(_EXACT.subtract(stamp, first))


class _Rows:
    """Iterates the data rows of a CSV file with its header mapped to column indices."""

    def __init__(
        self,
        path: Path,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
        *,
        strict: bool = False,
    ):
        self.path = path
        try:
            text = read_text(path, "trace")
        except ConfigError as exc:  # not UTF-8, or unreadable
            problem = str(exc).removeprefix(f"{path}, line {exc.line}: ").removeprefix(f"{path}: ")
            raise TraceError(path, exc.line or 1, None, problem) from None
        self._reader = csv.reader(io.StringIO(text, newline=""))
        header = self._next_row()
        while header is not None and not any(cell.strip() for cell in header):
            header = self._next_row()  # leading blank lines
        if header is None:
            raise TraceError(path, 1, None, f"empty file, expected a header {list(required)}")
        self.header_line = self._reader.line_num
        names = [cell.strip() for cell in header]
        known = required + optional
        for name in required:
            if name not in names:
                raise TraceError(
                    path, self.header_line, name, f"missing column (header is {names})"
                )
        for name in names:
            if strict and name not in known:
                raise TraceError(
                    path, self.header_line, name, f"unknown column; expected {list(known)}"
                )
            if name in known and names.count(name) > 1:
                raise TraceError(path, self.header_line, name, "duplicate column")
        self.index = {name: names.index(name) for name in known if name in names}
        self.names = names

    def _next_row(self) -> list[str] | None:
        """The next CSV row (None at the end); a CSV syntax error names its line."""
        try:
            return next(self._reader, None)
        except csv.Error as exc:
            raise TraceError(self.path, self._reader.line_num, None, f"bad CSV: {exc}") from None

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        while (row := self._next_row()) is not None:
            if not any(cell.strip() for cell in row):
                continue  # blank line
            line = self._reader.line_num
            if len(row) != len(self.names):
                raise TraceError(
                    self.path,
                    line,
                    None,
                    f"{len(row)} cells, expected {len(self.names)} (header {self.names})",
                )
            yield line, row

    def cell(self, line: int, row: list[str], column: str, parse: Callable[[str], object]):
        """Parses one cell, turning any failure into a TraceError at (line, column)."""
        text = row[self.index[column]].strip()
        try:
            return parse(text)
        except ValueError as exc:
            raise TraceError(self.path, line, column, f"bad value {text!r}: {exc}") from None


def _check_sorted(path: Path, lines: list[int], times: list, column: str) -> None:
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            raise TraceError(
                path,
                lines[i],
                column,
                f"time {times[i]} is earlier than the previous row's {times[i - 1]}; "
                "rows must be sorted by time",
            )


def _rebase(
    path: Path, lines: Sequence[int], stamps: Sequence[Decimal | datetime], column: str
) -> np.ndarray:
    """Seconds after the first stamp; a row more than `MAX_TIME_S` after it is an error."""
    arrivals = np.zeros(len(stamps), dtype=np.float64)
    for i in range(1, len(stamps)):
        arrivals[i] = _seconds_after(stamps[i], stamps[0])
        if arrivals[i] > MAX_TIME_S:
            raise TraceError(
                path,
                lines[i],
                column,
                f"{arrivals[i]:.6g} s after the first row (line {lines[0]}): more than the "
                f"{MAX_TIME_S:g} s a trace may span",
            )
    return arrivals


def _finish(
    path: Path,
    arrival_s: np.ndarray,
    prompt: Sequence[int],
    output: Sequence[int],
    *,
    dropped: int,
    ttft_s: Sequence[float] | None = None,
    tds_tok_s: Sequence[float] | None = None,
) -> TraceData:
    arrivals = np.asarray(arrival_s, dtype=np.float64)
    return TraceData(
        path=str(path),
        arrival_s=arrivals,
        prompt_tokens=np.asarray(prompt, dtype=np.int64),
        output_tokens=np.asarray(output, dtype=np.int64),
        ttft_s=None if ttft_s is None else np.asarray(ttft_s, dtype=np.float64),
        tds_tok_s=None if tds_tok_s is None else np.asarray(tds_tok_s, dtype=np.float64),
        num_dropped=dropped,
    )


# --- readers ------------------------------------------------------------------------------


def _parse_positive_count(text: str) -> int:
    value = _parse_count(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _parse_target(text: str) -> float:
    value = _parse_float(text)
    if value < 0:
        raise ValueError("target must be >= 0")
    if value > MAX_TIME_S:
        raise ValueError(f"a TTFT target must be at most {MAX_TIME_S:g} s")
    return value


def _parse_speed(text: str) -> float:
    value = _parse_float(text)
    if value <= 0:
        raise ValueError("speed must be > 0")
    if value > MAX_TDS_TOK_S:
        raise ValueError(f"a TDS target must be at most {MAX_TDS_TOK_S:g} tok/s")
    return value


def _read_columns(
    rows: _Rows, parse_row: Callable[[_Rows, int, list[str]], tuple]
) -> tuple[list[int], list[tuple]]:
    """Parses every data row of `rows`; returns the line numbers and the parsed columns."""
    parsed = [(line, parse_row(rows, line, row)) for line, row in rows]
    lines = [line for line, _ in parsed]
    width = len(parsed[0][1]) if parsed else 0
    return lines, [tuple(values[k] for _, values in parsed) for k in range(width)]


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
    rows = _Rows(path, PROJECT_COLUMNS, PROJECT_TARGET_COLUMNS, strict=True)
    has_ttft = "ttft_s" in rows.index
    has_tds = "tds_tok_s" in rows.index

    def parse_row(rows: _Rows, line: int, row: list[str]) -> tuple:
        return (
            rows.cell(line, row, "arrival_s", _parse_arrival),
            rows.cell(line, row, "prompt_tokens", _parse_positive_count),
            rows.cell(line, row, "output_tokens", _parse_positive_count),
            rows.cell(line, row, "ttft_s", _parse_target) if has_ttft else 0.0,
            rows.cell(line, row, "tds_tok_s", _parse_speed) if has_tds else 0.0,
        )

    lines, columns = _read_columns(rows, parse_row)
    stamps, prompt, output, ttft, tds = columns or ([], [], [], [], [])
    _check_sorted(path, lines, stamps, "arrival_s")
    return _finish(
        path,
        _rebase(path, lines, stamps, "arrival_s"),
        prompt,
        output,
        dropped=0,
        ttft_s=ttft if has_ttft else None,
        tds_tok_s=tds if has_tds else None,
    )


def _parse_datetime(text: str) -> datetime:
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected a datetime like '2023-11-16 18:15:46.6805900'") from None
    # Naive stamps are read as UTC so that differences never depend on the local zone.
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


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

    def parse_row(rows: _Rows, line: int, row: list[str]) -> tuple:
        return (
            rows.cell(line, row, "TIMESTAMP", _parse_datetime),
            rows.cell(line, row, "ContextTokens", _parse_count),
            rows.cell(line, row, "GeneratedTokens", _parse_count),
            True,
        )

    lines, columns = _read_columns(_Rows(path, AZURE_COLUMNS), parse_row)
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

    def parse_row(rows: _Rows, line: int, row: list[str]) -> tuple:
        wanted = (model is None or row[rows.index["Model"]].strip() == model) and (
            log_type is None or row[rows.index["Log Type"]].strip() == log_type
        )
        return (
            rows.cell(line, row, "Timestamp", _parse_arrival),
            rows.cell(line, row, "Request tokens", _parse_count),
            rows.cell(line, row, "Response tokens", _parse_count),
            wanted,
        )

    lines, columns = _read_columns(_Rows(path, BURSTGPT_COLUMNS), parse_row)
    return _external_trace(path, lines, columns, "Timestamp")


def _external_trace(path: Path, lines: list[int], columns: list[tuple], time_column: str):
    """Checks order, drops unwanted/0-token rows and re-bases times to the first kept row."""
    stamps, prompt, output, wanted = columns or ([], [], [], [])
    # Order is checked over every row, dropped ones too: it is a property of the file.
    _check_sorted(path, lines, stamps, time_column)
    prompt_arr = np.asarray(prompt, dtype=np.int64)
    output_arr = np.asarray(output, dtype=np.int64)
    keep = np.asarray(wanted, dtype=bool) & (prompt_arr > 0) & (output_arr > 0)
    kept = np.flatnonzero(keep)
    return _finish(
        path,
        _rebase(path, [lines[i] for i in kept], [stamps[i] for i in kept], time_column),
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
