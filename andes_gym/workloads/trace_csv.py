"""The CSV layer under the trace readers of `andes_gym.workloads.traces`: a file's rows
with their header checked, one parser per kind of cell, and the checks and re-basing of
the time column.

Every failure is a `TraceError` naming the file, the line (1-based, the header is line 1)
and, when one cell or column is at fault, the column. The bounds are those of
`andes_gym.workloads.spec` (see the `traces` module docstring).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, InvalidOperation
from pathlib import Path

import numpy as np

from andes_gym.config_files import ConfigError, read_text
from andes_gym.workloads.spec import MAX_TDS_TOK_S, MAX_TIME_S, MAX_TOKENS
from andes_gym.workloads.trace_data import TraceData, TraceError

# --- cell parsing -------------------------------------------------------------------------


# Enough digits to subtract any two finite doubles' decimal texts exactly.
_EXACT = Context(prec=800)


def parse_float(text: str) -> float:
    """A finite float."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return value


def parse_count(text: str) -> int:
    """A whole number in [0, MAX_TOKENS]; '12.0' is accepted (some exports write floats)."""
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{text!r} is not a whole number")
    if value < 0:
        raise ValueError(f"{text!r} is negative; a token count must be >= 0")
    if value > MAX_TOKENS:
        raise ValueError(f"a token count must be at most {MAX_TOKENS} (2**31 - 1)")
    return int(value)


def parse_positive_count(text: str) -> int:
    """A token count of at least 1."""
    value = parse_count(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def parse_arrival(text: str) -> Decimal:
    """A finite arrival time in seconds >= 0, kept as its exact decimal value for re-basing."""
    parse_float(text)  # the same syntax and range as a float
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if value < 0:
        raise ValueError("arrival time must be >= 0")
    return value


def parse_datetime(text: str) -> datetime:
    """An ISO-like datetime (Azure's TIMESTAMP); a naive one is read as UTC."""
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("expected a datetime like '2023-11-16 18:15:46.6805900'") from None
    # Naive stamps are read as UTC so that differences never depend on the local zone.
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def parse_target(text: str) -> float:
    """A TTFT target in seconds, in [0, MAX_TIME_S]."""
    value = parse_float(text)
    if value < 0:
        raise ValueError("target must be >= 0")
    if value > MAX_TIME_S:
        raise ValueError(f"a TTFT target must be at most {MAX_TIME_S:g} s")
    return value


def parse_speed(text: str) -> float:
    """A TDS target in tokens per second, in (0, MAX_TDS_TOK_S]."""
    value = parse_float(text)
    if value <= 0:
        raise ValueError("speed must be > 0")
    if value > MAX_TDS_TOK_S:
        raise ValueError(f"a TDS target must be at most {MAX_TDS_TOK_S:g} tok/s")
    return value


# --- rows ---------------------------------------------------------------------------------


class TraceRows:
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
        self._reader = csv.reader(io.StringIO(_read_trace_text(path), newline=""))
        header = self._next_row()
        while header is not None and not any(cell.strip() for cell in header):
            header = self._next_row()  # leading blank lines
        if header is None:
            raise TraceError(path, 1, None, f"empty file, expected a header {list(required)}")
        self.header_line = self._reader.line_num
        self.names = [cell.strip() for cell in header]
        self._check_header(required, optional, strict)
        known = required + optional
        self.index = {name: self.names.index(name) for name in known if name in self.names}

    def _check_header(
        self, required: tuple[str, ...], optional: tuple[str, ...], strict: bool
    ) -> None:
        """Every required column present; none twice; with `strict`, none unknown."""
        names = self.names
        known = required + optional
        for name in required:
            if name not in names:
                raise TraceError(
                    self.path, self.header_line, name, f"missing column (header is {names})"
                )
        for name in names:
            if strict and name not in known:
                raise TraceError(
                    self.path, self.header_line, name, f"unknown column; expected {list(known)}"
                )
            if name in known and names.count(name) > 1:
                raise TraceError(self.path, self.header_line, name, "duplicate column")

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


def _read_trace_text(path: Path) -> str:
    """The file's text; not UTF-8 or unreadable is a TraceError."""
    try:
        return read_text(path, "trace")
    except ConfigError as exc:
        problem = str(exc).removeprefix(f"{path}, line {exc.line}: ").removeprefix(f"{path}: ")
        raise TraceError(path, exc.line or 1, None, problem) from None


def read_columns(
    rows: TraceRows, parse_row: Callable[[TraceRows, int, list[str]], tuple]
) -> tuple[list[int], list[tuple]]:
    """Parses every data row of `rows`; returns the line numbers and the parsed columns."""
    parsed = [(line, parse_row(rows, line, row)) for line, row in rows]
    lines = [line for line, _ in parsed]
    width = len(parsed[0][1]) if parsed else 0
    return lines, [tuple(values[k] for _, values in parsed) for k in range(width)]


# --- times --------------------------------------------------------------------------------


def check_sorted(path: Path, lines: list[int], times: list, column: str) -> None:
    """Raises at the first row whose time is earlier than the previous row's."""
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            raise TraceError(
                path,
                lines[i],
                column,
                f"time {times[i]} is earlier than the previous row's {times[i - 1]}; "
                "rows must be sorted by time",
            )


def _seconds_after(stamp: Decimal | datetime, first: Decimal | datetime) -> float:
    """`stamp - first` in seconds, exactly rounded once to a float."""
    if isinstance(stamp, datetime):
        return (stamp - first) / timedelta(seconds=1)
    return float(_EXACT.subtract(stamp, first))


def rebase(
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


def trace_from_columns(
    path: Path,
    arrival_s: np.ndarray,
    prompt: Sequence[int],
    output: Sequence[int],
    *,
    dropped: int,
    ttft_s: Sequence[float] | None = None,
    tds_tok_s: Sequence[float] | None = None,
) -> TraceData:
    """The parsed columns as a `TraceData` of typed arrays."""
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
