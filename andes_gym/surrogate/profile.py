"""Engine profiles: the KV cache, limits, latency model and preemption of a simulated engine.

A profile is a YAML file in `configs/engines/` (or anywhere, by path)::

    name: cpu_tiny
    kv:         {num_blocks: 128, block_size: 32}
    limits:     {max_num_seqs: 48, max_num_batched_tokens: 1024, max_model_len: 512}
    latency:    {kind: linear, base_s: 1.5e-3, per_prefill_token_s: 2.0e-5,
                 per_decode_seq_s: 5.8e-5, per_context_token_s: 0.0}
    preemption: {mode: recompute}
    overhead:   {per_prefill_seq_s: 2.5e-4, per_request_s: 3.9e-6}   # optional

Every key is checked: a missing required field, an unknown key or a bad value raises a
`ProfileError` (a `ConfigError`) naming the file it came from and the field
(`latency.per_decode_seq_s`, also in `ProfileError.key`). Beyond each field's domain
(integers at most 2**31 - 1, finite numbers), a profile must be consistent:
`limits.max_model_len` fits the KV cache (`kv.num_blocks * kv.block_size` tokens), and the
latency model predicts a positive, finite time for every iteration the limits allow (an
all-zero latency block would make every request's QoE 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from andes_gym.config_files import ConfigError, read_yaml, resolve_config

LATENCY_KINDS = ("linear", "roofline")
PREEMPTION_MODES = ("recompute", "swap")


class ProfileError(ConfigError):
    """An engine profile with a missing, unknown or invalid field."""


@dataclass(frozen=True)
class KVCacheSpec:
    """The paged KV cache.

    Attributes:
        num_blocks: KV blocks in the cache (vLLM's `num_gpu_blocks`).
        block_size: Tokens per block.
        kv_bytes_per_token: Bytes of K and V per token over all layers; needed only to
            price swap preemption with a linear latency model (a roofline profile derives
            it from the model spec).
    """

    num_blocks: int
    block_size: int
    kv_bytes_per_token: float | None = None


@dataclass(frozen=True)
class EngineLimits:
    """Scheduler limits, named as in vLLM.

    Attributes:
        max_num_seqs: Most requests one iteration runs (the batch limit).
        max_num_batched_tokens: Per-iteration token budget shared by the decode tokens
            and the prefill chunks (chunked prefill).
        max_model_len: Most tokens (prompt + output) one request may hold.
    """

    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int


@dataclass(frozen=True)
class LinearLatencySpec:
    """Coefficients of the linear iteration-latency model (seconds).

    `iteration_s = base_s + per_prefill_token_s * p + per_prefill_token_sq_s * p**2
    + per_decode_seq_s * d + per_context_token_s * c` for p prefill tokens, d decode
    sequences and c context tokens (KV entries attended) in the iteration. These field
    names are stable: the calibration helper writes fitted profiles in this form.

    Attributes:
        base_s: Fixed cost of an iteration (scheduling, launch, sampling).
        per_prefill_token_s: Cost per prefill token.
        per_decode_seq_s: Cost per decoding sequence.
        per_context_token_s: Cost per context token attended.
        per_prefill_token_sq_s: Optional quadratic prefill term (attention within a chunk).
    """

    base_s: float
    per_prefill_token_s: float
    per_decode_seq_s: float
    per_context_token_s: float
    per_prefill_token_sq_s: float = 0.0


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, for the roofline model.

    Attributes:
        num_params: Parameters (weights read once per iteration).
        num_layers: Transformer layers.
        hidden_size: Model width (query heads x head dim).
        num_kv_heads: Key/value heads (fewer than query heads under GQA).
        head_dim: Dimension of one head.
        dtype_bytes: Bytes per weight and per KV element (2 for bf16/fp16).
    """

    num_params: float
    num_layers: int
    hidden_size: int
    num_kv_heads: int
    head_dim: int
    dtype_bytes: float

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of one token over all layers."""
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True)
class HardwareSpec:
    """An accelerator, for the roofline model.

    Attributes:
        mem_bandwidth_gb_s: Peak memory bandwidth, GB/s (1e9 bytes).
        peak_tflops: Peak dense throughput at the model's dtype, TFLOP/s.
        bandwidth_efficiency: Fraction of peak bandwidth that decode kernels reach.
        compute_efficiency: Fraction of peak FLOPs that prefill GEMMs reach.
        overhead_s: Fixed per-iteration cost (scheduler, kernel launches, sampling).
    """

    mem_bandwidth_gb_s: float
    peak_tflops: float
    bandwidth_efficiency: float
    compute_efficiency: float
    overhead_s: float


@dataclass(frozen=True)
class RooflineLatencySpec:
    """Model and hardware specs of the analytic roofline latency model."""

    model: ModelSpec
    hardware: HardwareSpec


@dataclass(frozen=True)
class PreemptionSpec:
    """How the engine preempts.

    Attributes:
        mode: "recompute" (drop the KV, re-prefill later; vLLM V1's only mode) or "swap"
            (move the KV blocks to host memory and back).
        swap_bw_gb_s: Host-device bandwidth for swap, GB/s (required for "swap").
    """

    mode: str = "recompute"
    swap_bw_gb_s: float | None = None


@dataclass(frozen=True)
class OverheadSpec:
    """Serving-system costs outside the model's forward pass (seconds; all default 0).

    A real engine spends time around each step that a latency model of the forward pass
    does not see: preparing the inputs of each request that starts, resumes or continues a
    prefill, walking its queues, and (with a learned or analytical scheduler) building the
    decision. `python -m andes_gym.calibrate --env-workloads ...` fits these on the live
    engine (docs/CALIBRATION.md); roofline profiles of GPUs leave them at 0.

    Attributes:
        per_prefill_seq_s: Per request that computes prefill tokens in an iteration.
        per_request_s: Per request in the engine (running or waiting), every iteration.
        decision_s: Per scheduling decision handed to a policy (candidates, predictions).
        per_candidate_s: Per candidate of such a decision.
    """

    per_prefill_seq_s: float = 0.0
    per_request_s: float = 0.0
    decision_s: float = 0.0
    per_candidate_s: float = 0.0

    @property
    def per_iteration(self) -> bool:
        """Whether any per-iteration term is set."""
        return self.per_prefill_seq_s > 0.0 or self.per_request_s > 0.0

    @property
    def per_decision(self) -> bool:
        """Whether any per-decision term is set."""
        return self.decision_s > 0.0 or self.per_candidate_s > 0.0


@dataclass(frozen=True)
class EngineProfile:
    """Everything the surrogate needs to know about an engine.

    Attributes:
        name: Profile name.
        kv: The KV cache.
        limits: Scheduler limits.
        latency: Coefficients of the latency model (linear or roofline).
        preemption: Preemption mode.
        description: Free text (where the numbers come from).
        overhead: Serving-system costs around the forward pass (zero unless calibrated).
    """

    name: str
    kv: KVCacheSpec
    limits: EngineLimits
    latency: LinearLatencySpec | RooflineLatencySpec
    preemption: PreemptionSpec = PreemptionSpec()
    description: str = ""
    overhead: OverheadSpec = OverheadSpec()

    @property
    def latency_kind(self) -> str:
        return "linear" if isinstance(self.latency, LinearLatencySpec) else "roofline"

    @property
    def kv_bytes_per_token(self) -> float | None:
        """K and V bytes of one token (from the KV spec, else from the roofline model)."""
        if self.kv.kv_bytes_per_token is not None:
            return self.kv.kv_bytes_per_token
        if isinstance(self.latency, RooflineLatencySpec):
            return self.latency.model.kv_bytes_per_token
        return None

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv.num_blocks * self.kv.block_size


# ------------------------------------------------------------------------------ loading
MAX_PROFILE_INT = 2**31 - 1
"""Largest integer field (block counts, limits, model sizes): what int32 arrays hold."""

_INT_FIELDS = {
    "kv.num_blocks",
    "kv.block_size",
    "limits.max_num_seqs",
    "limits.max_num_batched_tokens",
    "limits.max_model_len",
    "latency.model.num_layers",
    "latency.model.hidden_size",
    "latency.model.num_kv_heads",
    "latency.model.head_dim",
}
# Fields that must be > 0 (the rest of the numbers must be >= 0).
_POSITIVE_FIELDS = _INT_FIELDS | {
    "kv.kv_bytes_per_token",
    "latency.model.num_params",
    "latency.model.dtype_bytes",
    "latency.hardware.mem_bandwidth_gb_s",
    "latency.hardware.peak_tflops",
    "latency.hardware.bandwidth_efficiency",
    "latency.hardware.compute_efficiency",
    "preemption.swap_bw_gb_s",
}
_AT_MOST_ONE = {"latency.hardware.bandwidth_efficiency", "latency.hardware.compute_efficiency"}


def _check_number(name: str, value: Any, source: str) -> float | int:
    if isinstance(value, str) and name not in _INT_FIELDS:
        # PyYAML reads exponents without a sign (6.7e9) as strings (a YAML 1.1 quirk).
        with contextlib.suppress(ValueError):
            value = float(value)
    is_num = isinstance(value, int | float) and not isinstance(value, bool)
    if name in _INT_FIELDS:
        if not (isinstance(value, int) and not isinstance(value, bool)) or value <= 0:
            raise ProfileError(
                f"{name} must be a positive integer, got {value!r}", source=source, key=name
            )
        if value > MAX_PROFILE_INT:
            raise ProfileError(
                f"{name} must be at most {MAX_PROFILE_INT}, got {value!r}", source=source, key=name
            )
        return value
    if is_num and isinstance(value, int) and abs(value) > 1e300:
        is_num = False  # an int beyond the float range
    if not (is_num and math.isfinite(value)):
        raise ProfileError(
            f"{name} must be a finite number, got {value!r}", source=source, key=name
        )
    if name in _POSITIVE_FIELDS and value <= 0:
        raise ProfileError(f"{name} must be positive, got {value!r}", source=source, key=name)
    if value < 0:
        raise ProfileError(f"{name} must be >= 0, got {value!r}", source=source, key=name)
    if name in _AT_MOST_ONE and value > 1:
        raise ProfileError(f"{name} must lie in (0, 1], got {value!r}", source=source, key=name)
    return float(value)


def _build(cls: type, data: Any, prefix: str, source: str, nested: dict | None = None) -> Any:
    """A dataclass from a mapping, naming any missing, unknown or invalid field."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{prefix} must be a mapping, got {data!r}", source=source, key=prefix)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ProfileError(
            f"unknown key {prefix}.{unknown[0]}; expected one of {sorted(fields)}",
            source=source,
            key=f"{prefix}.{unknown[0]}",
        )
    kwargs = {}
    for name, f in fields.items():
        full = f"{prefix}.{name}"
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if name not in data or data[name] is None:
            if required:
                raise ProfileError(f"missing required field {full}", source=source, key=full)
            continue
        value = data[name]
        if nested and name in nested:
            kwargs[name] = _build(nested[name], value, full, source)
        elif name == "mode":
            if not (isinstance(value, str) and value in PREEMPTION_MODES):
                raise ProfileError(
                    f"{full} must be one of {list(PREEMPTION_MODES)}, got {value!r}",
                    source=source,
                    key=full,
                )
            kwargs[name] = value
        else:
            kwargs[name] = _check_number(full, value, source)
    return cls(**kwargs)


def _build_latency(data: Any, source: str) -> LinearLatencySpec | RooflineLatencySpec:
    if not isinstance(data, Mapping):
        raise ProfileError(f"latency must be a mapping, got {data!r}", source=source, key="latency")
    kind = data.get("kind")
    if not (isinstance(kind, str) and kind in LATENCY_KINDS):
        raise ProfileError(
            f"latency.kind must be one of {list(LATENCY_KINDS)}, got {kind!r}",
            source=source,
            key="latency.kind",
        )
    body = {k: v for k, v in data.items() if k != "kind"}
    if kind == "linear":
        return _build(LinearLatencySpec, body, "latency", source)
    return _build(
        RooflineLatencySpec,
        body,
        "latency",
        source,
        nested={"model": ModelSpec, "hardware": HardwareSpec},
    )


_TOP_LEVEL = ("name", "description", "kv", "limits", "latency", "preemption", "overhead")


def engine_profile_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> EngineProfile:
    """Builds and validates a profile from plain data (a parsed YAML file).

    Args:
        data: The profile's fields.
        source: Where the data came from, quoted in errors.

    Raises:
        ProfileError: Naming the first missing, unknown or invalid field.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(
            f"an engine profile must be a mapping, got {type(data).__name__}", source=source
        )
    unknown = sorted(set(data) - set(_TOP_LEVEL), key=str)
    if unknown:
        raise ProfileError(
            f"unknown key {unknown[0]!r}; expected one of {list(_TOP_LEVEL)}",
            source=source,
            key=str(unknown[0]),
        )
    for key in ("name", "kv", "limits", "latency"):
        if key not in data:
            raise ProfileError(f"missing required field {key}", source=source, key=key)
    if not isinstance(data["name"], str) or not data["name"]:
        raise ProfileError(
            f"name must be a non-empty string, got {data['name']!r}", source=source, key="name"
        )
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise ProfileError(
            f"description must be a string, got {description!r}", source=source, key="description"
        )
    kv = _build(KVCacheSpec, data["kv"], "kv", source)
    limits = _build(EngineLimits, data["limits"], "limits", source)
    latency = _build_latency(data["latency"], source)
    preemption = _build(PreemptionSpec, data.get("preemption") or {}, "preemption", source)
    overhead = _build(OverheadSpec, data.get("overhead") or {}, "overhead", source)
    profile = EngineProfile(
        name=data["name"],
        kv=kv,
        limits=limits,
        latency=latency,
        preemption=preemption,
        description=description or "",
        overhead=overhead,
    )
    _check_consistency(profile, source)
    return profile


def _check_consistency(profile: EngineProfile, source: str) -> None:
    lim = profile.limits
    if lim.max_num_batched_tokens < lim.max_num_seqs:
        # Every running request must be able to decode in one iteration.
        raise ProfileError(
            f"limits.max_num_batched_tokens ({lim.max_num_batched_tokens}) must be >= "
            f"limits.max_num_seqs ({lim.max_num_seqs})",
            source=source,
            key="limits.max_num_batched_tokens",
        )
    if lim.max_model_len > profile.kv_capacity_tokens:
        # A request of max_model_len tokens must fit the cache, or it could never finish.
        raise ProfileError(
            f"limits.max_model_len ({lim.max_model_len}) exceeds the KV cache "
            f"(kv.num_blocks x kv.block_size = {profile.kv.num_blocks} x "
            f"{profile.kv.block_size} = {profile.kv_capacity_tokens} tokens)",
            source=source,
            key="limits.max_model_len",
        )
    if profile.preemption.mode == "swap":
        if profile.preemption.swap_bw_gb_s is None:
            raise ProfileError(
                "preemption.swap_bw_gb_s is required when preemption.mode is 'swap'",
                source=source,
                key="preemption.swap_bw_gb_s",
            )
        if profile.kv_bytes_per_token is None:
            raise ProfileError(
                "kv.kv_bytes_per_token is required for swap preemption with a linear latency model",
                source=source,
                key="kv.kv_bytes_per_token",
            )
    _check_latency_is_positive(profile, source)


def _check_latency_is_positive(profile: EngineProfile, source: str) -> None:
    """Every iteration the limits allow must take a positive, finite time.

    Both latency models grow with each of their inputs, so the extremes are the
    smallest iterations (one prefill token, or one decoding sequence, with one token of
    context) and the largest (a full token budget and batch over a full KV cache).
    """
    from andes_gym.surrogate.latency import make_latency_model  # imports this module

    lim = profile.limits
    iterations = {
        "one prefill token": (1, 0, 1),
        "one decode step": (0, 1, 1),
        "the largest batch": (
            lim.max_num_batched_tokens,
            lim.max_num_seqs,
            profile.kv_capacity_tokens,
        ),
    }
    try:
        model = make_latency_model(profile)
        times = {what: model.iteration_s(*shape) for what, shape in iterations.items()}
    except (ArithmeticError, ValueError) as exc:
        raise ProfileError(
            f"the latency model cannot be evaluated: {exc}", source=source, key="latency"
        ) from None
    for what, seconds in times.items():
        if not (math.isfinite(seconds) and seconds > 0):
            raise ProfileError(
                f"the latency model predicts {seconds!r} s for {what} (p, d, ctx = "
                f"{iterations[what]}); every iteration must take a positive, finite time",
                source=source,
                key="latency",
            )


def load_engine_profile(spec: str | Path | Mapping | EngineProfile) -> EngineProfile:
    """An engine profile from a name (`configs/engines/<name>.yaml`), a path or a dict.

    Args:
        spec: A bare name such as `"llama7b_a100"`, a YAML path, a mapping of fields, or a
            profile (returned unchanged).

    Raises:
        FileNotFoundError: No such profile.
        ProfileError: A missing, unknown or invalid field, named with the file.
    """
    if isinstance(spec, EngineProfile):
        return spec
    if isinstance(spec, Mapping):
        return engine_profile_from_dict(spec)
    if not isinstance(spec, str | Path):
        raise TypeError(
            f"engine must be a profile name, a path, a dict or an EngineProfile; "
            f"got {type(spec).__name__}"
        )
    path = resolve_config("engines", spec)
    data = read_yaml(path, "engine profile")
    return engine_profile_from_dict(data, source=str(path))
