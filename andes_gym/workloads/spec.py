"""Request specs and workloads: what arrives, when, how long, and what its user expects."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Bounds of a request, checked by `Workload` and by every reader and config that makes one.
# They keep every count and time far inside what the engines' arrays and clocks can hold.
MAX_TOKENS = 2**31 - 1
"""Most tokens in one prompt or one output: what an int32 token array holds (the live
engine's positions), so the int64 sums over a batch or a workload never overflow."""
MAX_TIME_S = 1e9
"""Latest arrival (after the start of the workload) and largest TTFT target, in seconds
(~32 years): at 1e9 s a float64 clock still resolves ~0.1 us, far below one iteration."""
MAX_TDS_TOK_S = 1e9
"""Largest token delivery speed target, tokens per second."""


@dataclass(frozen=True)
class RequestSpec:
    """One request of a workload.

    Attributes:
        request_id: Index of the request in its workload (arrival order).
        arrival_s: Arrival time in seconds from the start of the workload.
        prompt_tokens: Prompt length in tokens.
        output_tokens: Number of output tokens the request generates (its true length).
        ttft_s: Target time to first token, in seconds.
        tds_tok_s: Target token delivery speed (the user's reading/listening speed), tokens/s.
    """

    request_id: int
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    tds_tok_s: float


_FIELDS = ("arrival_s", "prompt_tokens", "output_tokens", "ttft_s", "tds_tok_s")


@dataclass(frozen=True, eq=False)
class Workload:
    """A workload as a struct of arrays, sorted by arrival; request ids are 0..n-1.

    Raises:
        ValueError: When arrays differ in length, arrivals are unsorted, negative or not
            finite, a length is not a whole number, or a length or target is not positive
            or beyond its bound (`MAX_TOKENS`, `MAX_TIME_S`, `MAX_TDS_TOK_S`).
    """

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    tds_tok_s: np.ndarray
    name: str = field(default="workload")

    def __post_init__(self) -> None:
        casts = {
            "arrival_s": np.float64,
            "prompt_tokens": np.int64,
            "output_tokens": np.int64,
            "ttft_s": np.float64,
            "tds_tok_s": np.float64,
        }
        for name, dtype in casts.items():
            raw = np.asarray(getattr(self, name))
            if dtype is np.int64 and raw.dtype.kind not in "iub":
                _check_whole(name, raw)
            arr = np.ascontiguousarray(raw, dtype=dtype)
            if arr.ndim != 1:
                raise ValueError(f"Workload.{name} must be 1-D, got shape {arr.shape}")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        n = len(self.arrival_s)
        for name in _FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"Workload.{name} has {len(getattr(self, name))} entries, expected {n}"
                )
        for name in ("arrival_s", "ttft_s", "tds_tok_s"):
            bad = ~np.isfinite(getattr(self, name))
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"Workload.{name}[{i}] = {getattr(self, name)[i]} is not finite")
        _check(self.arrival_s >= 0, "arrival_s", self.arrival_s, ">= 0")
        _check(self.arrival_s <= MAX_TIME_S, "arrival_s", self.arrival_s, f"<= {MAX_TIME_S:g}")
        _check(np.diff(self.arrival_s) >= 0, "arrival_s", self.arrival_s[1:], "sorted")
        _check(self.prompt_tokens >= 1, "prompt_tokens", self.prompt_tokens, ">= 1")
        _check(self.output_tokens >= 1, "output_tokens", self.output_tokens, ">= 1")
        for name in ("prompt_tokens", "output_tokens"):
            values = getattr(self, name)
            _check(values <= MAX_TOKENS, name, values, f"<= {MAX_TOKENS}")
        _check(self.ttft_s >= 0, "ttft_s", self.ttft_s, ">= 0")
        _check(self.ttft_s <= MAX_TIME_S, "ttft_s", self.ttft_s, f"<= {MAX_TIME_S:g}")
        _check(self.tds_tok_s > 0, "tds_tok_s", self.tds_tok_s, "> 0")
        _check(
            self.tds_tok_s <= MAX_TDS_TOK_S, "tds_tok_s", self.tds_tok_s, f"<= {MAX_TDS_TOK_S:g}"
        )

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __getitem__(self, i: int) -> RequestSpec:
        return RequestSpec(
            request_id=int(i),
            arrival_s=float(self.arrival_s[i]),
            prompt_tokens=int(self.prompt_tokens[i]),
            output_tokens=int(self.output_tokens[i]),
            ttft_s=float(self.ttft_s[i]),
            tds_tok_s=float(self.tds_tok_s[i]),
        )

    @property
    def duration_s(self) -> float:
        """Time of the last arrival (0 for an empty workload)."""
        return float(self.arrival_s[-1]) if len(self) else 0.0

    def select(self, mask: np.ndarray, name: str | None = None) -> Workload:
        """The sub-workload of the requests where `mask` is true."""
        return Workload(**{f: getattr(self, f)[mask] for f in _FIELDS}, name=name or self.name)

    def scale_rate(self, factor: float) -> Workload:
        """The same requests arriving `factor` times as fast (arrival times divided by it)."""
        if not (np.isfinite(factor) and factor > 0):
            raise ValueError(f"scale_rate: factor must be a positive number, got {factor}")
        return self.replace(arrival_s=self.arrival_s / factor)

    def replace(self, **changes) -> Workload:
        """A copy with some arrays (or the name) replaced."""
        kwargs = {f: getattr(self, f) for f in _FIELDS}
        kwargs["name"] = self.name
        kwargs.update(changes)
        return Workload(**kwargs)

    def equals(self, other: Workload) -> bool:
        """True when both workloads hold identical requests."""
        return len(self) == len(other) and all(
            np.array_equal(getattr(self, f), getattr(other, f)) for f in _FIELDS
        )


def _check_whole(name: str, raw: np.ndarray) -> None:
    """Token counts given as floats must be whole and fit int64 before the cast."""
    try:
        values = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"Workload.{name} must hold whole numbers, got dtype {raw.dtype}"
        ) from None
    ok = np.isfinite(values) & (np.abs(values) <= MAX_TOKENS)
    ok[ok] = values[ok] == np.round(values[ok])
    _check(ok, name, values, f"a whole number of tokens in [1, {MAX_TOKENS}]")


def _check(ok: np.ndarray, name: str, values: np.ndarray, expected: str) -> None:
    if not np.all(ok):
        i = int(np.argmin(ok))
        raise ValueError(f"Workload.{name}[{i}] = {values[i]} violates: expected {expected}")
