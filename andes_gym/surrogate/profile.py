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
`ProfileError` (a `ConfigError`) naming the file it came from, the field
(`latency.per_decode_seq_s`, also in `ProfileError.key`) and its line. Beyond each field's
domain (integers at most 2**31 - 1, finite numbers), a profile must be consistent:
`limits.max_model_len` fits the KV cache (`kv.num_blocks * kv.block_size` tokens), and the
latency model predicts a positive, finite time for every iteration the limits allow (an
all-zero latency block would make every request's QoE 1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Gt, Interval, Le
from pydantic import AfterValidator

from andes_gym.config_files import ConfigError, read_yaml_lines, resolve_config
from andes_gym.config_schema import (
    Int,
    NoneIsEmpty,
    Str,
    Text,
    YamlNumber,
    none_means,
    one_of,
    section,
    validate,
)

LATENCY_KINDS = ("linear", "roofline")
PREEMPTION_MODES = ("recompute", "swap")

MAX_PROFILE_INT = 2**31 - 1
"""Largest integer field (block counts, limits, model sizes): what int32 arrays hold."""

# The domains of the fields. Numbers are finite; a number written as a string that YAML 1.1
# leaves unread (`6.7e9`) is read as a number.
Count = Annotated[Int, Gt(0), Le(MAX_PROFILE_INT)]
Positive = Annotated[YamlNumber, Gt(0)]
NonNegative = Annotated[YamlNumber, Interval(ge=0)]
Efficiency = Annotated[YamlNumber, Interval(gt=0, le=1)]


class ProfileError(ConfigError):
    """An engine profile with a missing, unknown or invalid field."""


@section
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

    num_blocks: Count
    block_size: Count
    kv_bytes_per_token: Positive | None = None


@section
@dataclass(frozen=True)
class EngineLimits:
    """Scheduler limits, named as in vLLM.

    Attributes:
        max_num_seqs: Most requests one iteration runs (the batch limit).
        max_num_batched_tokens: Per-iteration token budget shared by the decode tokens
            and the prefill chunks (chunked prefill).
        max_model_len: Most tokens (prompt + output) one request may hold.
    """

    max_num_seqs: Count
    max_num_batched_tokens: Count
    max_model_len: Count


@section
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

    base_s: NonNegative
    per_prefill_token_s: NonNegative
    per_decode_seq_s: NonNegative
    per_context_token_s: NonNegative
    per_prefill_token_sq_s: NonNegative = 0.0


@section
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

    num_params: Positive
    num_layers: Count
    hidden_size: Count
    num_kv_heads: Count
    head_dim: Count
    dtype_bytes: Positive

    @property
    def weight_bytes(self) -> float:
        return self.num_params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V of one token over all layers."""
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes


@section
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

    mem_bandwidth_gb_s: Positive
    peak_tflops: Positive
    bandwidth_efficiency: Efficiency
    compute_efficiency: Efficiency
    overhead_s: NonNegative


@section
@dataclass(frozen=True)
class RooflineLatencySpec:
    """Model and hardware specs of the analytic roofline latency model."""

    model: ModelSpec
    hardware: HardwareSpec


@section
@dataclass(frozen=True)
class PreemptionSpec:
    """How the engine preempts.

    Attributes:
        mode: "recompute" (drop the KV, re-prefill later; vLLM V1's only mode) or "swap"
            (move the KV blocks to host memory and back).
        swap_bw_gb_s: Host-device bandwidth for swap, GB/s (required for "swap").
    """

    mode: Literal[PREEMPTION_MODES] = "recompute"
    swap_bw_gb_s: Positive | None = None


@section
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

    per_prefill_seq_s: NonNegative = 0.0
    per_request_s: NonNegative = 0.0
    decision_s: NonNegative = 0.0
    per_candidate_s: NonNegative = 0.0

    @property
    def per_iteration(self) -> bool:
        """Whether any per-iteration term is set."""
        return self.per_prefill_seq_s > 0.0 or self.per_request_s > 0.0

    @property
    def per_decision(self) -> bool:
        """Whether any per-decision term is set."""
        return self.decision_s > 0.0 or self.per_candidate_s > 0.0


Latency = one_of(dict(zip(LATENCY_KINDS, (LinearLatencySpec, RooflineLatencySpec), strict=True)))
"""`latency`: the model named by its `kind` key, with that model's fields."""


@section
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

    name: Text
    kv: KVCacheSpec
    limits: EngineLimits
    latency: Latency
    preemption: Annotated[PreemptionSpec, NoneIsEmpty] = PreemptionSpec()
    description: Annotated[Str, none_means("")] = ""
    overhead: Annotated[OverheadSpec, NoneIsEmpty] = OverheadSpec()

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
def engine_profile_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> EngineProfile:
    """Builds and validates a profile from plain data (a parsed YAML file).

    Args:
        data: The profile's fields.
        source: Where the data came from, quoted in errors.

    Raises:
        ProfileError: Naming the first missing, unknown or invalid field.
    """
    return validate(_SCHEMA, data, source=source, error=ProfileError)


def _check_consistency(profile: EngineProfile) -> EngineProfile:
    """The rules across sections (each field's own domain is in its type)."""
    lim = profile.limits
    if lim.max_num_batched_tokens < lim.max_num_seqs:
        # Every running request must be able to decode in one iteration.
        raise ProfileError(
            f"limits.max_num_batched_tokens ({lim.max_num_batched_tokens}) must be >= "
            f"limits.max_num_seqs ({lim.max_num_seqs})",
            key="limits.max_num_batched_tokens",
        )
    if lim.max_model_len > profile.kv_capacity_tokens:
        # A request of max_model_len tokens must fit the cache, or it could never finish.
        raise ProfileError(
            f"limits.max_model_len ({lim.max_model_len}) exceeds the KV cache "
            f"(kv.num_blocks x kv.block_size = {profile.kv.num_blocks} x "
            f"{profile.kv.block_size} = {profile.kv_capacity_tokens} tokens)",
            key="limits.max_model_len",
        )
    if profile.preemption.mode == "swap":
        if profile.preemption.swap_bw_gb_s is None:
            raise ProfileError(
                "preemption.swap_bw_gb_s is required when preemption.mode is 'swap'",
                key="preemption.swap_bw_gb_s",
            )
        if profile.kv_bytes_per_token is None:
            raise ProfileError(
                "kv.kv_bytes_per_token is required for swap preemption with a linear latency model",
                key="kv.kv_bytes_per_token",
            )
    _check_latency_is_positive(profile)
    return profile


_SCHEMA = Annotated[EngineProfile, AfterValidator(_check_consistency)]


def _check_latency_is_positive(profile: EngineProfile) -> None:
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
        raise ProfileError(f"the latency model cannot be evaluated: {exc}", key="latency") from None
    for what, seconds in times.items():
        if not (math.isfinite(seconds) and seconds > 0):
            raise ProfileError(
                f"the latency model predicts {seconds!r} s for {what} (p, d, ctx = "
                f"{iterations[what]}); every iteration must take a positive, finite time",
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
    data, lines = read_yaml_lines(path, "engine profile")
    return validate(_SCHEMA, data, source=str(path), lines=lines, error=ProfileError)
