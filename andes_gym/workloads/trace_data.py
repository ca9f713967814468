"""What a trace reader returns (`TraceData`: the rows, before QoE targets are filled in)
and the error every malformed trace raises (`TraceError`).

The readers themselves, and the formats they read, are in `andes_gym.workloads.traces`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from andes_gym.config_files import ConfigError


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
