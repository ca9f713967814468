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

Every value is checked against its domain, declared in the field's type, when the config
is built (directly, or by `andes_gym.config_schema.validate`, the loader of every config):
counts are integers (a bool is not one), numbers are finite (NaN and infinity are refused)
and kept as written, and each lies in the range given by the constants below, chosen so
that a config that validates also draws requests within `Workload`'s bounds (lengths at
most `MAX_TOKENS`). Every error is a `ConfigError` naming the source, the dotted key
(`arrivals.rate_rps`) and, for a file, the line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Gt, Interval, MinLen

from andes_gym.config_files import (
    ConfigError,
    available_configs,
    is_config_path,
    packaged_config_dir,
    read_yaml_lines,
    resolve_config,
)
from andes_gym.config_schema import Int, Text, as_one_value, config_dataclass, validate
from andes_gym.config_schema import WrittenNumber as Number
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


def _within(bounds: tuple[float, float]) -> Interval:
    return Interval(ge=bounds[0], le=bounds[1])


Tokens = Annotated[Int, Interval(ge=1, le=MAX_TOKENS)]
Duration = Annotated[Number, Interval(ge=0, le=MAX_TIME_S)]
Window = Annotated[tuple[Number, Number], as_one_value("a pair of finite numbers [start, end]")]
TokenRange = Annotated[
    tuple[Tokens, Tokens], as_one_value(f"a pair of integers [lo, hi] in [1, {MAX_TOKENS}]")
]


def _fail(key: str, message: str) -> None:
    """Breaks a rule between fields; `key` is relative to the section that checks it."""
    raise ConfigError(message, key=key)


@config_dataclass
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

    kind: Literal[ARRIVAL_KINDS]
    rate_rps: Annotated[Number, _within(RATE_RPS_RANGE)] | None = None
    cv: Annotated[Number, _within(CV_RANGE)] | None = None
    intensity: Annotated[Number, Gt(0)] = 2.0
    duty: Annotated[Number, Interval(gt=0, lt=1)] = 0.35
    period_s: Annotated[Number, _within(PERIOD_S_RANGE)] | None = None
    trace_path: Text | None = None
    trace_format: Literal[TRACE_FORMATS] = "project"
    trace_window_s: Window | None = None
    trace_model: Text | None = None
    trace_log_type: Text | None = None
    rate_scale: Annotated[Number, _within(RATE_SCALE_RANGE)] = 1.0

    def __post_init__(self) -> None:
        window = self.trace_window_s
        if window is not None and not 0 <= window[0] < window[1] <= MAX_TIME_S:
            _fail(
                "trace_window_s",
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
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            _fail(
                missing[0],
                f"arrivals.kind={self.kind!r} requires "
                + ", ".join(f"arrivals.{n}" for n in missing),
            )
        if self.kind == "bursty" and self.intensity * self.duty > 1:
            _fail(
                "intensity",
                f"arrivals.intensity * arrivals.duty = {self.intensity} * {self.duty} exceeds 1:"
                " the off-peak rate would be negative",
            )


@config_dataclass
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

    kind: Literal[LENGTH_KINDS] = "sharegpt"
    scale: Annotated[Number, _within(LENGTH_SCALE_RANGE)] = 1.0
    max_prompt_tokens: Tokens | None = None
    max_output_tokens: Tokens | None = None
    prompt_tokens: Tokens = 128
    output_tokens: Tokens = 128
    prompt_range: TokenRange = (32, 512)
    output_range: TokenRange = (32, 512)

    def __post_init__(self) -> None:
        for name in ("prompt_range", "output_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                _fail(name, f"lengths.{name} must satisfy lo <= hi, got {[lo, hi]}")
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
                    "scale",
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
                    "scale",
                    f"lengths.scale = {self.scale!r} makes {what} lengths of up to {final:.4g} "
                    f"tokens, more than {MAX_TOKENS}",
                )


@config_dataclass
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

    kind: Literal[TARGET_KINDS] = "reading"
    time_scale: Annotated[Number, _within(TIME_SCALE_RANGE)] = 1.0
    voice_fraction: Annotated[Number, Interval(ge=0, le=1)] = 0.5
    tds_tok_s: Annotated[Number, Interval(gt=0, le=MAX_TDS_TOK_S)] = 4.8
    ttft_s: Duration | None = None
    prefill_tok_s: Annotated[Number, _within(PREFILL_TOK_S_RANGE)] = 5000.0
    min_ttft_s: Duration = 1.0


@config_dataclass
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

    name: Text
    arrivals: ArrivalConfig
    num_requests: Annotated[Int, Interval(ge=1, le=MAX_NUM_REQUESTS)] | None = None
    lengths: LengthConfig = field(default_factory=LengthConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)

    def __post_init__(self) -> None:
        if self.num_requests is None and self.arrivals.kind != "trace":
            _fail("num_requests", f"arrivals.kind={self.arrivals.kind!r} requires num_requests")
        if self.lengths.kind == "trace" and self.arrivals.kind != "trace":
            _fail("lengths.kind", "lengths.kind='trace' requires arrivals.kind='trace'")


@config_dataclass
class StreamsConfig:
    """Independent request streams merged into one workload by arrival time.

    Real services mix populations (listeners and readers, chat and long prompts, traffic
    with several rhythms). Each stream is an ordinary workload config; `make_workload`
    draws every stream from its own seed and merges them::

        name: chat_long_prompt_cpu
        streams:
          - {name: chat, num_requests: 800, arrivals: {...}, lengths: {...}, targets: {...}}
          - {name: summaries, num_requests: 250, arrivals: {...}, lengths: {...}}

    A preset with a `streams` key works everywhere a workload preset does.

    Attributes:
        name: Name of the merged workload.
        streams: The streams (at least 2; none replays a trace: merge trace files instead).
    """

    name: Text
    streams: Annotated[tuple[WorkloadConfig, ...], MinLen(2)]

    def __post_init__(self) -> None:
        for i, stream in enumerate(self.streams):
            if stream.arrivals.kind == "trace":
                _fail(f"streams[{i}].arrivals.kind", "a stream cannot replay a trace")

    @property
    def num_requests(self) -> int:
        """Requests of one draw (every stream's together)."""
        return sum(stream.num_requests for stream in self.streams)


AnyWorkloadConfig = WorkloadConfig | StreamsConfig


def workload_config_from_dict(
    data: Mapping[str, Any], source: str = "<dict>", lines: Any = None
) -> AnyWorkloadConfig:
    """Builds a `WorkloadConfig` from a (YAML-shaped) mapping.

    Args:
        data: The mapping; sections `arrivals`, `lengths`, `targets` are nested mappings.
        source: Where the mapping came from, used in error messages.

    Returns:
        The validated config: a `StreamsConfig` when the mapping has a `streams` key.

    Raises:
        ConfigError: On an unknown key (named with its section), a missing required key,
            or an invalid value; the message starts with `source` and names the key (also
            in `ConfigError.key`).
    """
    schema = StreamsConfig if isinstance(data, Mapping) and "streams" in data else WorkloadConfig
    return validate(schema, data, source=source, lines=lines)


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
) -> AnyWorkloadConfig:
    """Loads a workload config from a YAML file or a preset name.

    Args:
        path_or_name: A path to a YAML file, or a bare preset name such as "bursty_2x"
            (resolved to `<preset_dir>/bursty_2x.yaml`).
        preset_dir: Directory of presets; default the repository's configs/workloads.

    Returns:
        The validated config (a `StreamsConfig` for a file with a `streams` key). A
        relative `arrivals.trace_path` is made absolute against the YAML file's directory.

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
    data, lines = read_yaml_lines(path, "workload config")
    cfg = workload_config_from_dict(data, source=str(path), lines=lines)
    if isinstance(cfg, StreamsConfig):
        return cfg
    trace_path = cfg.arrivals.trace_path
    if trace_path is not None and not Path(trace_path).is_absolute():
        absolute = str((path.parent / trace_path).resolve())
        cfg = dataclasses.replace(
            cfg, arrivals=dataclasses.replace(cfg.arrivals, trace_path=absolute)
        )
    return cfg
