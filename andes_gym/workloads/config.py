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

ARRIVAL_KINDS = ("poisson", "gamma", "bursty", "trace")
TRACE_FORMATS = ("project", "azure", "burstgpt")
LENGTH_KINDS = ("sharegpt", "summarization", "fixed", "uniform", "trace")
TARGET_KINDS = ("reading", "listening", "mixed", "fixed")

# The workload presets shipped inside the package.
PRESET_DIR = packaged_config_dir("workloads")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number, got {value!r}")


def _check_int(name: str, value: Any, *, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_kind(name: str, value: Any, kinds: tuple[str, ...]) -> None:
    if value not in kinds:
        raise ValueError(f"{name} must be one of {list(kinds)}, got {value!r}")


def _as_pair(obj: Any, name: str, value: Any) -> tuple | None:
    """Coerces a YAML list to a tuple of two numbers (frozen dataclasses need tuples)."""
    if value is None:
        return None
    if not (isinstance(value, list | tuple) and len(value) == 2 and all(map(_is_number, value))):
        raise ValueError(f"{name} must be a pair of numbers [lo, hi], got {value!r}")
    pair = tuple(value)
    object.__setattr__(obj, name.rsplit(".", 1)[-1], pair)
    return pair


@dataclass(frozen=True)
class ArrivalConfig:
    """When requests arrive.

    Attributes:
        kind: "poisson", "gamma" (renewal process with gamma gaps), "bursty" (cyclic
            bursts, ANDES_SPEC §3) or "trace" (arrival times read from a trace file).
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
        trace_window_s: Optional (start_s, end_s) window of the trace's times (for azure
            and burstgpt, seconds after the first kept request; for project files, the
            file's own arrival_s); the window is re-based to start at 0.
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
        _check_positive("arrivals.rate_scale", self.rate_scale)
        _check_positive("arrivals.rate_rps", self.rate_rps, allow_none=True)
        _check_positive("arrivals.cv", self.cv, allow_none=True)
        _check_positive("arrivals.intensity", self.intensity)
        _check_positive("arrivals.period_s", self.period_s, allow_none=True)
        if not (_is_number(self.duty) and 0 < self.duty < 1):
            raise ValueError(f"arrivals.duty must lie in (0, 1), got {self.duty!r}")
        _check_kind("arrivals.trace_format", self.trace_format, TRACE_FORMATS)
        window = _as_pair(self, "arrivals.trace_window_s", self.trace_window_s)
        if window is not None and not 0 <= window[0] < window[1]:
            raise ValueError(
                f"arrivals.trace_window_s must satisfy 0 <= start < end, got {list(window)}"
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
            raise ValueError(f"arrivals.kind={self.kind!r} requires {', '.join(missing)}")
        if self.kind == "bursty" and self.intensity * self.duty > 1:
            raise ValueError(
                f"arrivals.intensity * arrivals.duty = {self.intensity} * {self.duty} exceeds 1:"
                " the off-peak rate would be negative"
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
        _check_positive("lengths.scale", self.scale)
        _check_int("lengths.max_prompt_tokens", self.max_prompt_tokens, minimum=1, allow_none=True)
        _check_int("lengths.max_output_tokens", self.max_output_tokens, minimum=1, allow_none=True)
        _check_int("lengths.prompt_tokens", self.prompt_tokens, minimum=1)
        _check_int("lengths.output_tokens", self.output_tokens, minimum=1)
        for name in ("prompt_range", "output_range"):
            lo, hi = _as_pair(self, f"lengths.{name}", getattr(self, name))
            if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
                raise ValueError(
                    f"lengths.{name} must be integers with 1 <= lo <= hi, got {[lo, hi]}"
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
        _check_positive("targets.time_scale", self.time_scale)
        if not (_is_number(self.voice_fraction) and 0 <= self.voice_fraction <= 1):
            raise ValueError(
                f"targets.voice_fraction must lie in [0, 1], got {self.voice_fraction!r}"
            )
        _check_positive("targets.tds_tok_s", self.tds_tok_s)
        _check_positive("targets.prefill_tok_s", self.prefill_tok_s)
        if self.ttft_s is not None and not (_is_number(self.ttft_s) and self.ttft_s >= 0):
            raise ValueError(f"targets.ttft_s must be a number >= 0 or null, got {self.ttft_s!r}")
        if not (_is_number(self.min_ttft_s) and self.min_ttft_s >= 0):
            raise ValueError(f"targets.min_ttft_s must be a number >= 0, got {self.min_ttft_s!r}")


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
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        _check_int("num_requests", self.num_requests, minimum=1, allow_none=True)
        if self.num_requests is None and self.arrivals.kind != "trace":
            raise ValueError(f"arrivals.kind={self.arrivals.kind!r} requires num_requests")
        if self.lengths.kind == "trace" and self.arrivals.kind != "trace":
            raise ValueError("lengths.kind='trace' requires arrivals.kind='trace'")


_SECTIONS: dict[str, type] = {
    "arrivals": ArrivalConfig,
    "lengths": LengthConfig,
    "targets": TargetConfig,
}


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    """Builds dataclass `cls` from a mapping, rejecting unknown and missing keys."""
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {data!r}", source=source)
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
        raise ConfigError(f"missing required key(s) {', '.join(missing)}", source=source)
    kwargs = dict(data)
    if cls is WorkloadConfig:
        for name, section_cls in _SECTIONS.items():
            if name in kwargs:
                kwargs[name] = _build(section_cls, kwargs[name], f"{name}.", source)
    try:
        return cls(**kwargs)
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
        ValueError: On an unknown key (named with its section), a missing required key,
            or an invalid value; the message starts with `source`.
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
    data = read_yaml(path, "workload config")
    cfg = workload_config_from_dict(data, source=str(path))
    trace_path = cfg.arrivals.trace_path
    if trace_path is not None and not Path(trace_path).is_absolute():
        absolute = str((path.parent / trace_path).resolve())
        cfg = dataclasses.replace(
            cfg, arrivals=dataclasses.replace(cfg.arrivals, trace_path=absolute)
        )
    return cfg
