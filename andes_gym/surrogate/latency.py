"""Iteration-latency models: how long one engine iteration takes.

One interface, swappable implementations (like Vidur's execution-time predictors):

- `LinearLatencyModel`: coefficients in (prefill tokens, decode sequences, context tokens),
  from a profile; the form the calibration helper fits to the live engine.
- `RooflineLatencyModel`: analytic, from model and hardware specs.

Each is a formula of `andes_gym.surrogate.costs` (where every cost formula of the engine
is written once) with coefficients from the profile; both are pure functions of their
inputs (no state), so a simulator that holds one pickles. A model also carries the
profile's serving overhead (`OverheadSpec`: per prefill sequence, per request in the
engine, per decision); the engines add those terms to the model's forward-pass latency,
and `serving_latency_by_batch` adds them to what the policies are told
(`Capacity.iter_latency_s`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from andes_gym.surrogate.costs import linear_latency_s, roofline_latency_s, serving_overhead_s
from andes_gym.surrogate.profile import (
    EngineProfile,
    HardwareSpec,
    LinearLatencySpec,
    ModelSpec,
    OverheadSpec,
    RooflineLatencySpec,
)


class LatencyModel:
    """Predicts the wall time of one engine iteration (a forward pass of the batch).

    A model is a formula of `andes_gym.surrogate.costs` with its coefficients:
    `formula(*coefficients, p, d, ctx)`, elementwise over arrays. The compiled engine
    compiles the same formula and reads the same coefficients.

    Attributes:
        formula: The cost function (`costs.linear_latency_s` or `costs.roofline_latency_s`).
        coefficients: Its leading arguments, from the profile.
        overhead: Serving costs around the forward pass (`make_latency_model` sets the
            profile's; zero by default).
    """

    formula: Callable[..., Any]
    coefficients: tuple[float, ...]
    overhead: OverheadSpec = OverheadSpec()

    def iteration_s(
        self, num_prefill_tokens: float, num_decode_seqs: float, total_context_tokens: float
    ) -> float:
        """Seconds for one iteration.

        Args:
            num_prefill_tokens: Prefill tokens computed in the iteration (all chunks).
            num_decode_seqs: Sequences that decode one token.
            total_context_tokens: KV entries the iteration attends to: the sum over its
                requests of their context after the iteration (computed + new tokens).
        """
        return float(
            self.formula(
                *self.coefficients, num_prefill_tokens, num_decode_seqs, total_context_tokens
            )
        )

    def prefill_s_per_token(self, chunk_tokens: int) -> float:
        """Marginal seconds per prefill token, for a chunk of `chunk_tokens` fresh tokens.

        What re-prefilling a recompute-preempted request costs per token of its context;
        engines put it in `Capacity.prefill_s_per_token` for the policies.
        """
        chunk = max(int(chunk_tokens), 1)
        extra_s = self.iteration_s(chunk, 0, chunk) - self.iteration_s(0, 0, 0)
        return max(extra_s / chunk, 1e-12)

    def decode_latency_by_batch(self, max_num_seqs: int, mean_context_tokens: float) -> np.ndarray:
        """Pure-decode iteration latency for batch sizes 0..max_num_seqs (the Capacity field).

        Args:
            max_num_seqs: Largest batch.
            mean_context_tokens: Context per sequence.

        Returns:
            float64 array of shape `(max_num_seqs + 1,)`.
        """
        batch = self._batch_sizes(max_num_seqs)
        return self.formula(*self.coefficients, 0, batch, batch * mean_context_tokens)

    def serving_latency_by_batch(
        self, max_num_seqs: int, mean_context_tokens: float, num_requests: int
    ) -> np.ndarray:
        """`decode_latency_by_batch` plus the serving overhead of a decode iteration with
        `num_requests` requests in the engine: the `Capacity.iter_latency_s` the policies
        see."""
        latency = self.decode_latency_by_batch(max_num_seqs, mean_context_tokens)
        ov = self.overhead
        if ov.per_request_s > 0.0:
            latency = latency + serving_overhead_s(
                ov.per_prefill_seq_s, ov.per_request_s, 0, num_requests
            )
        return latency

    def _batch_sizes(self, max_num_seqs: int) -> np.ndarray:
        """`0.0, 1.0, ..., max_num_seqs`, kept between calls (every decision point asks)."""
        batch = getattr(self, "_batch_cache", None)
        if batch is None or len(batch) != max_num_seqs + 1:
            batch = np.arange(max_num_seqs + 1, dtype=np.float64)
            batch.flags.writeable = False
            self._batch_cache = batch
        return batch


class LinearLatencyModel(LatencyModel):
    """`base + a p + a2 p^2 + b d + c ctx` (see `LinearLatencySpec` for the fields).

    Args:
        spec: The coefficients.
    """

    formula = staticmethod(linear_latency_s)

    def __init__(self, spec: LinearLatencySpec) -> None:
        self.spec = spec
        self.coefficients = (
            spec.base_s,
            spec.per_prefill_token_s,
            spec.per_prefill_token_sq_s,
            spec.per_decode_seq_s,
            spec.per_context_token_s,
        )


class RooflineLatencyModel(LatencyModel):
    """Analytic roofline: an iteration is bound by memory traffic or by compute.

    - Memory: the weights are read once per iteration, and every attended context token's
      K and V are read once: `bytes = weight_bytes + kv_bytes_per_token * ctx`, at
      `mem_bandwidth * bandwidth_efficiency`.
    - Compute: `2 * num_params` FLOPs per processed token (prefill or decode) plus
      attention, `4 * layers * hidden` FLOPs per (query, key) pair, with pairs
      `ctx + p^2 / 2` (decode queries attend to their context; the prefill term treats all
      prefill tokens as one causal sequence, an upper bound that is a few percent of the
      total at ShareGPT lengths), at `peak_tflops * compute_efficiency`.
    - `iteration = overhead + max(memory, compute)`. Max, not sum: one fused forward pass
      streams the weights while the tensor cores work on the batched tokens, so the slower
      of the two sets the pace (decode-heavy batches are memory bound, prefill chunks of a
      few hundred tokens or more are compute bound). This matches the usual observation
      that piggybacking decodes on a prefill chunk is almost free.

    Args:
        model: Model spec.
        hardware: Hardware spec.
    """

    formula = staticmethod(roofline_latency_s)

    def __init__(self, model: ModelSpec, hardware: HardwareSpec) -> None:
        self.model = model
        self.hardware = hardware
        bw = hardware.mem_bandwidth_gb_s * 1e9 * hardware.bandwidth_efficiency
        flops = hardware.peak_tflops * 1e12 * hardware.compute_efficiency
        self.coefficients = (
            model.weight_bytes / bw,
            model.kv_bytes_per_token / bw,
            2.0 * model.num_params / flops,
            4.0 * model.num_layers * model.hidden_size / flops,
            hardware.overhead_s,
        )


def make_latency_model(profile: EngineProfile) -> LatencyModel:
    """The latency model a profile describes, with the profile's serving overhead."""
    spec = profile.latency
    if isinstance(spec, LinearLatencySpec):
        model: LatencyModel = LinearLatencyModel(spec)
    elif isinstance(spec, RooflineLatencySpec):
        model = RooflineLatencyModel(spec.model, spec.hardware)
    else:
        raise TypeError(f"unknown latency spec {type(spec).__name__} in profile {profile.name!r}")
    model.overhead = profile.overhead
    return model
