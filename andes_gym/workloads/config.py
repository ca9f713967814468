"""Workload configuration: dataclasses (the single source of defaults) and YAML loading.

A workload config has four parts::

    name: bursty_2x
    num_requests: 1000
    arrivals: {kind: bursty, rate_rps: 3.0, intensity: 2.0, duty: 0.35, period_s: 60}
    lengths:  {kind: sharegpt, scale: 1.0}
    targets:  {kind: reading, time_scale: 1.0}

Fields without a default are required; kind-specific fields without a default (e.g.
`rate_rps`, `cv` for gamma, `period_s` for bursty) are required for that kind. Unknown
keys anywhere are errors, so a typo never silently falls back to a default.

Every value is checked against its domain when the config is built: counts are integers
(a bool is not one), numbers are finite (NaN and infinity are refused), and each lies in
the range given by the constants below, chosen so that a config that validates also draws
requests within `Workload`'s bounds (lengths at most `MAX_TOKENS`). Every error is a
`ConfigError` naming the source and the dotted key (`arrivals.rate_rps`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from andes_gym.config_files import (
    ConfigError,
    available_configs,
    is_config_path,
    packaged_config_dir,
    read_yaml,
    resolve_config,
)
from andes_gym.workloads import lengths as length_models
from andes_gym.workloads.spec import MAX_TDS_TOK_S, MAX_TIME_S, MAX_TOKENS

ARRIVAL_KINDS = ("poisson", "gamma", "bursty", "trace")
TRACE_FORMATS = ("project", "azure", "burstgpt")
LENGTH_KINDS = ("sharegpt", "summarization", "fixed", "uniform", "trace")
TARGET_KINDS = ("reading", "listening", "mixed", "fixed")

# The workload presets shipped inside the package.
PRESET_DIR = packaged_config_dir("workloads")

# Domains of the numbers (inclusive). They are generous: each keeps the generators' float
# arithmetic finite (a cv below 1e-3 squares towards 0, a rate of 1e-300 puts arrivals at
# 1e300 s) while allowing any load a benchmark could mean.
MAX_NUM_REQUESTS = 10_000_000
"""Most requests of one workload (its arrays take ~50 bytes per request)."""
RATE_RPS_RANGE = (1e-6, 1e9)
RATE_SCALE_RANGE = (1e-6, 1e6)
CV_RANGE = (1e-3, 1e3)
PERIOD_S_RANGE = (1e-3, MAX_TIME_S)
LENGTH_SCALE_RANGE = (1e-6, 1e6)
TIME_SCALE_RANGE = (1e-6, 1e6)
PREFILL_TOK_S_RANGE = (1.0, 1e12)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fail(key: str, message: str) -> None:
    raise ConfigError(message, key=key)


def _as_finite(value: Any) -> float | None:
    """`value` as a finite float, or None when it is not a finite (non-bool) number."""
    if not _is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond the float range
        return None
    return number if math.isfinite(number) else None


def _check_range(
    name: str,
    value: Any,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    allow_none: bool = False,
) -> None:
    """A finite number in [lo, hi] (or (lo, hi] when `lo_open`)."""
    if value is None and allow_none:
        return
    number = _as_finite(value)
    above_lo = number is not None and (number > lo if lo_open else number >= lo)
    if not (above_lo and number <= hi):
        bracket = "(" if lo_open else "["
        raise ConfigError(
            f"{name} must be a finite number in {bracket}{lo:g}, {hi:g}], got {value!r}", key=name
        )


def _check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    number = _as_finite(value)
    if number is None or number <= 0:
        _fail(name, f"{name} must be a positive finite number, got {value!r}")


def _check_int(
    name: str, value: Any, *, minimum: int, maximum: int = MAX_TOKENS, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    if not (_is_int(value) and minimum <= value <= maximum):
        _fail(name, f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")


def _check_kind(name: str, value: Any, kinds: tuple[str, ...]) -> None:
    if not (isinstance(value, str) and value in kinds):
        _fail(name, f"{name} must be one of {list(kinds)}, got {value!r}")


def _check_text(name: str, value: Any) -> None:
    if value is not None and not (isinstance(value, str) and value):
        _fail(name, f"{name} must be a non-empty string or null, got {value!r}")


def _as_pair(obj: Any, name: str, value: Any, *, allow_none: bool = True) -> tuple | None:
    """Coerces a YAML list to a tuple of two finite numbers (frozen dataclasses need tuples)."""
    if value is None and allow_none:
        return None
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_as_finite(v) is not None for v in value)
    ):
        _fail(name, f"{name} must be a pair of finite numbers [lo, hi], got {value!r}")
    pair = tuple(value)
    object.__setattr__(obj, name.rsplit(".", 1)[-1], pair)
    return pair


@dataclass(frozen=True)
class ArrivalConfig:
    """When requests arrive.

    Attributes:
        kind: "poisson", "gamma" (renewal process with gamma gaps), "bursty" (cyclic
            bursts, docs/ANDES.md §3) or "trace" (arrival times read from a trace file).
        rate_rps: Mean arrival rate in requests/s (required unless kind is "trace").
        cv: Coefficient of variation of the gamma inter-arrival gap (required for gamma;
            1 is Poisson, larger is burstier).
        intensity: Bursty: peak rate as a multiple of `rate_rps` (paper: 1.5-2.5).
        duty: Bursty: fraction of each period at the peak rate (paper: 0.25-0.45).
        period_s: Bursty: length of one burst cycle in seconds (required for bursty).
        trace_path: Trace file (required for kind "trace"); a relative path in a YAML file
            is resolved against that file's directory.
        trace_format: "project" (arrival_s,prompt_tokens,output_tokens[,ttft_s,tds_tok_s]),
            "azure" (Azure LLM inference trace) or "burstgpt".
        trace_window_s: Optional (start_s, end_s) window of the trace's times, in seconds
            after the trace's first (kept) request (every format is re-based to start at
            0); the window is re-based to start at 0 too.
        trace_model: BurstGPT only: keep only rows whose Model equals this (e.g. "ChatGPT").
        trace_log_type: BurstGPT only: keep only rows whose Log Type equals this.
        rate_scale: Multiplies the arrival rate after generation / windowing (arrival times
            are divided by it); the knob for sweeping load on a fixed shape.
    """

    kind: str
    rate_rps: float | None = None
    cv: float | None = None
    intensity: float = 2.0
    duty: float = 0.35
    period_s: float | None = None
    trace_path: str | None = None
    trace_format: str = "project"
    trace_window_s: tuple[float, float] | None = None
    trace_model: str | None = None
    trace_log_type: str | None = None
    rate_scale: float = 1.0

    def __post_init__(self) -> None:
        _check_kind("arrivals.kind", self.kind, ARRIVAL_KINDS)
        _check_range("arrivals.rate_scale", self.rate_scale, *RATE_SCALE_RANGE)
        _check_range("arrivals.rate_rps", self.rate_rps, *RATE_RPS_RANGE, allow_none=True)
        _check_range("arrivals.cv", self.cv, *CV_RANGE, allow_none=True)
        _check_positive("arrivals.intensity", self.intensity)
        _check_range("arrivals.period_s", self.period_s, *PERIOD_S_RANGE, allow_none=True)
        duty = _as_finite(self.duty)
        if duty is None or not 0 < duty < 1:
            _fail("arrivals.duty", f"arrivals.duty must lie in (0, 1), got {self.duty!r}")
        _check_kind("arrivals.trace_format", self.trace_format, TRACE_FORMATS)
        _check_text("arrivals.trace_path", self.trace_path)
        _check_text("arrivals.trace_model", self.trace_model)
        _check_text("arrivals.trace_log_type", self.trace_log_type)
        window = _as_pair(self, "arrivals.trace_window_s", self.trace_window_s)
        if window is not None and not 0 <= window[0] < window[1] <= MAX_TIME_S:
            _fail(
                "arrivals.trace_window_s",
                f"arrivals.trace_window_s must satisfy 0 <= start < end <= {MAX_TIME_S:g}, "
                f"got {list(window)}",
            )
        self._check_required_for_kind()

    def _check_required_for_kind(self) -> None:
        needs = {
            "poisson": ("rate_rps",),
            "gamma": ("rate_rps", "cv"),
            "bursty": ("rate_rps", "period_s"),
            "trace": ("trace_path",),
        }[self.kind]
        missing = [f"arrivals.{n}" for n in needs if getattr(self, n) is None]
        if missing:
            _fail(missing[0], f"arrivals.kind={self.kind!r} requires {', '.join(missing)}")
        if self.kind == "bursty" and self.intensity * self.duty > 1:
            _fail(
                "arrivals.intensity",
                f"arrivals.intensity * arrivals.duty = {self.intensity} * {self.duty} exceeds 1:"
                " the off-peak rate would be negative",
            )


@dataclass(frozen=True)
class LengthConfig:
    """How long prompts and outputs are.

    Attributes:
        kind: "sharegpt", "summarization", "fixed", "uniform", or "trace" (the lengths of
            the trace file; requires arrivals.kind "trace").
        scale: Multiplies every length before rounding (0.1 for the tiny CPU engine).
        max_prompt_tokens: Clip of the final prompt lengths; None means the kind's default
            (sharegpt 1024, summarization 4096, otherwise no clip).
        max_output_tokens: Clip of the final output lengths; None means the kind's default
            (sharegpt 1024, summarization 1024, otherwise no clip).
        prompt_tokens: Fixed: the prompt length (before scaling).
        output_tokens: Fixed: the output length (before scaling).
        prompt_range: Uniform: inclusive [lo, hi] of prompt lengths (before scaling).
        output_range: Uniform: inclusive [lo, hi] of output lengths (before scaling).
    """

    kind: str = "sharegpt"
    scale: float = 1.0
    max_prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    prompt_tokens: int = 128
    output_tokens: int = 128
    prompt_range: tuple[int, int] = (32, 512)
    output_range: tuple[int, int] = (32, 512)

    def __post_init__(self) -> None:
        _check_kind("lengths.kind", self.kind, LENGTH_KINDS)
        _check_range("lengths.scale", self.scale, *LENGTH_SCALE_RANGE)
        _check_int("lengths.max_prompt_tokens", self.max_prompt_tokens, minimum=1, allow_none=True)
        _check_int("lengths.max_output_tokens", self.max_output_tokens, minimum=1, allow_none=True)
        _check_int("lengths.prompt_tokens", self.prompt_tokens, minimum=1)
        _check_int("lengths.output_tokens", self.output_tokens, minimum=1)
        for name in ("prompt_range", "output_range"):
            lo, hi = _as_pair(self, f"lengths.{name}", getattr(self, name), allow_none=False)
            if not (_is_int(lo) and _is_int(hi) and 1 <= lo <= hi <= MAX_TOKENS):
                _fail(
                    f"lengths.{name}",
                    f"lengths.{name} must be integers with 1 <= lo <= hi <= {MAX_TOKENS}, "
                    f"got {[lo, hi]}",
                )
        for what in ("prompt", "output"):
            self._check_final_lengths(what)

    def _check_final_lengths(self, what: str) -> None:
        """The lengths this kind draws, after scaling and clipping, must be drawable."""
        clip = getattr(self, f"max_{what}_tokens")
        if self.kind in ("sharegpt", "summarization"):
            family = self.kind.upper()
            mean = getattr(length_models, f"{family}_{what.upper()}_MEAN") * self.scale
            if clip is None:
                clip = getattr(length_models, f"{family}_MAX_{what.upper()}_TOKENS")
            if not 1.0 < mean < clip:
                _fail(
                    "lengths.scale",
                    f"lengths.scale = {self.scale!r} gives a mean {what} of {mean:.4g} tokens, "
                    f"which must lie strictly between 1 and the clip "
                    f"lengths.max_{what}_tokens = {clip}",
                )
        elif self.kind in ("fixed", "uniform"):
            longest = (
                getattr(self, f"{what}_tokens")
                if self.kind == "fixed"
                else getattr(self, f"{what}_range")[1]
            )
            final = min(round(longest * self.scale), clip or math.inf)
            if final > MAX_TOKENS:
                _fail(
                    "lengths.scale",
                    f"lengths.scale = {self.scale!r} makes {what} lengths of up to {final:.4g} "
                    f"tokens, more than {MAX_TOKENS}",
                )


@dataclass(frozen=True)
class TargetConfig:
    """The QoE targets (TTFT and token delivery speed) of each request.

    TTFT target = max(prompt_tokens / prefill_tok_s, min_ttft_s) * time_scale, or
    `ttft_s * time_scale` when `ttft_s` is set. TDS = a draw from `kind` / time_scale.
    `time_scale` = s < 1 models an engine s times the GPU's step time (the tiny CPU
    engine is ~100x faster per step, so s ~ 0.01-0.02 keeps the contention shape).
    Trace-supplied targets are scaled the same way.

    Attributes:
        kind: "reading" (text), "listening" (voice), "mixed" (a share of each) or "fixed".
        time_scale: Multiplies TTFT targets and divides TDS targets (> 0).
        voice_fraction: Mixed: probability that a request is a voice (listening) one.
        tds_tok_s: Fixed: the delivery speed for every request (before time_scale).
        ttft_s: If set, a constant TTFT target (before time_scale) instead of the formula.
        prefill_tok_s: Prefill speed assumed by the TTFT formula (paper: 5000 tok/s).
        min_ttft_s: Floor of the TTFT formula in seconds (paper: 1 s).
    """

    kind: str = "reading"
    time_scale: float = 1.0
    voice_fraction: float = 0.5
    tds_tok_s: float = 4.8
    ttft_s: float | None = None
    prefill_tok_s: float = 5000.0
    min_ttft_s: float = 1.0

    def __post_init__(self) -> None:
        _check_kind("targets.kind", self.kind, TARGET_KINDS)
        _check_range("targets.time_scale", self.time_scale, *TIME_SCALE_RANGE)
        _check_range("targets.voice_fraction", self.voice_fraction, 0.0, 1.0)
        _check_range("targets.tds_tok_s", self.tds_tok_s, 0.0, MAX_TDS_TOK_S, lo_open=True)
        _check_range("targets.prefill_tok_s", self.prefill_tok_s, *PREFILL_TOK_S_RANGE)
        _check_range("targets.ttft_s", self.ttft_s, 0.0, MAX_TIME_S, allow_none=True)
        _check_range("targets.min_ttft_s", self.min_ttft_s, 0.0, MAX_TIME_S)


@dataclass(frozen=True)
class WorkloadConfig:
    """A complete, seedable description of a workload.

    Attributes:
        name: Name of the workload (carried into `Workload.name`).
        arrivals: When requests arrive.
        num_requests: Number of requests (required unless arrivals come from a trace;
            for a trace, None keeps every request of the window, a number keeps the first
            that many).
        lengths: Prompt and output lengths.
        targets: QoE targets.
    """

    name: str
    arrivals: ArrivalConfig
    num_requests: int | None = None
    lengths: LengthConfig = field(default_factory=LengthConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name):
            _fail("name", f"name must be a non-empty string, got {self.name!r}")
        _check_int(
            "num_requests", self.num_requests, minimum=1, maximum=MAX_NUM_REQUESTS, allow_none=True
        )
        if self.num_requests is None and self.arrivals.kind != "trace":
            _fail("num_requests", f"arrivals.kind={self.arrivals.kind!r} requires num_requests")
        if self.lengths.kind == "trace" and self.arrivals.kind != "trace":
            _fail("lengths.kind", "lengths.kind='trace' requires arrivals.kind='trace'")


_SECTIONS: dict[str, type] = {
    "arrivals": ArrivalConfig,
    "lengths": LengthConfig,
    "targets": TargetConfig,
}


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    """Builds dataclass `cls` from a mapping, rejecting unknown and missing keys."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, Mapping):
        shown = repr(data) if len(repr(data)) <= 80 else f"{repr(data)[:77]}..."
        raise ConfigError(
            f"{where} must be a mapping, got {shown}",
            source=source,
            key=prefix.rstrip(".") or None,
        )
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} (known keys of {where}: {', '.join(fields)})",
            source=source,
            key=f"{prefix}{unknown[0]!s}",
        )
    required = [
        name
        for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [f"{prefix}{name}" for name in required if name not in data]
    if missing:
        raise ConfigError(
            f"missing required key(s) {', '.join(missing)}", source=source, key=missing[0]
        )
    kwargs = dict(data)
    if cls is WorkloadConfig:
        for name, section_cls in _SECTIONS.items():
            if name in kwargs:
                kwargs[name] = _build(section_cls, kwargs[name], f"{name}.", source)
    try:
        return cls(**kwargs)
    except ConfigError as exc:  # a field check: it names the key
        raise ConfigError(str(exc), source=source, key=exc.key) from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc), source=source) from exc


def workload_config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> WorkloadConfig:
    """Builds a `WorkloadConfig` from a (YAML-shaped) mapping.

    Args:
        data: The mapping; sections `arrivals`, `lengths`, `targets` are nested mappings.
        source: Where the mapping came from, used in error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: On an unknown key (named with its section), a missing required key,
            or an invalid value; the message starts with `source` and names the key (also
            in `ConfigError.key`).
    """
    return _build(WorkloadConfig, data, "", source)


def workload_config_to_dict(cfg: WorkloadConfig) -> dict[str, Any]:
    """A plain, YAML-safe dict of `cfg` (round-trips through `workload_config_from_dict`)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))


def list_presets(preset_dir: Path | None = None) -> list[str]:
    """Names of the workload presets in `preset_dir`, or every name `load_workload_config` finds
    (`./configs/workloads`, then the packaged presets) when it is None."""
    if preset_dir is None:
        return available_configs("workloads")
    return sorted(p.stem for p in Path(preset_dir).glob("*.yaml"))


def _resolve_path(path_or_name: str | Path, preset_dir: Path | None) -> Path:
    if preset_dir is None or is_config_path(path_or_name):
        return resolve_config("workloads", path_or_name)
    candidate = Path(preset_dir) / f"{path_or_name}.yaml"
    if candidate.is_file():
        return candidate
    raise FileNotFoundError(
        f"no workload preset named {str(path_or_name)!r} in {preset_dir} "
        f"(presets: {', '.join(list_presets(preset_dir)) or 'none'})"
    )


def load_workload_config(
    path_or_name: str | Path, preset_dir: Path | None = None
) -> WorkloadConfig:
    """Loads a workload config from a YAML file or a preset name.

    Args:
        path_or_name: A path to a YAML file, or a bare preset name such as "bursty_2x"
            (resolved to `<preset_dir>/bursty_2x.yaml`).
        preset_dir: Directory of presets; default the repository's configs/workloads.

    Returns:
        The validated config. A relative `arrivals.trace_path` is made absolute against
        the YAML file's directory.

    Raises:
        FileNotFoundError: If neither a file nor a preset of that name exists.
        ValueError: If the YAML is empty or invalid, or has an unknown, missing or bad key
            (the message names the key and the file).
    """
    path = _resolve_path(path_or_name, preset_dir)
    if path.suffix.lower() == ".csv":
        raise ConfigError(
            "a CSV trace is not a workload config: name it in one (arrivals: {kind: trace, "
            "trace_path: ...}) or read it with andes_gym.workloads.read_trace_workload",
            source=path,
        )
    data = read_yaml(path, "workload config")
    cfg = workload_config_from_dict(data, source=str(path))
    trace_path = cfg.arrivals.trace_path
    if trace_path is not None and not Path(trace_path).is_absolute():
        absolute = str((path.parent / trace_path).resolve())
        cfg = dataclasses.replace(
            cfg, arrivals=dataclasses.replace(cfg.arrivals, trace_path=absolute)
        )
    return cfg
