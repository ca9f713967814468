"""Iteration-latency models: how long one engine iteration takes.

One interface, swappable implementations (like Vidur's execution-time predictors):

- `LinearLatencyModel`: coefficients in (prefill tokens, decode sequences, context tokens),
  from a profile; the form the calibration helper fits to the live engine.
- `RooflineLatencyModel`: analytic, from model and hardware specs.

Both are pure functions of their inputs (no state), so a simulator that holds one pickles.
A model also carries the profile's serving overhead (`OverheadSpec`: per prefill sequence,
per request in the engine, per decision); the simulator adds those terms to the model's
forward-pass latency, and `serving_latency_by_batch` adds the per-request term to what the
policies are told (`Capacity.iter_latency_s`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from andes_gym.surrogate.profile import (
    EngineProfile,
    HardwareSpec,
    LinearLatencySpec,
    ModelSpec,
    OverheadSpec,
    RooflineLatencySpec,
)


class LatencyModel(ABC):
    """Predicts the wall time of one engine iteration (a forward pass of the batch).

    Attributes:
        overhead: Serving costs around the forward pass (`make_latency_model` sets the
            profile's; zero by default).
    """

    overhead: OverheadSpec = OverheadSpec()

    @abstractmethod
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

    def prefill_s_per_token(self, chunk_tokens: int) -> float:
        """Marginal seconds per prefill token, for a chunk of `chunk_tokens` fresh tokens.

        What re-prefilling a recompute-preempted request costs per token of its context;
        engines put it in `Capacity.prefill_s_per_token` for the policies.
        """
        chunk = max(int(chunk_tokens), 1)
        extra_s = self.iteration_s(chunk, 0, chunk) - self.iteration_s(0, 0, 0)
        return max(extra_s / chunk, 1e-12)

    def decode_run_s(
        self, num_decode_seqs: int, first_context_tokens: float, num_iters: int
    ) -> np.ndarray:
        """Latencies of `num_iters` consecutive pure-decode iterations of one batch.

        Iteration j (0-based) attends to `first_context_tokens + j * num_decode_seqs`
        tokens. Implementations vectorize this; the results equal `iteration_s` called
        per iteration (the simulator's fast path relies on that).
        """
        return np.array(
            [
                self.iteration_s(0, num_decode_seqs, first_context_tokens + j * num_decode_seqs)
                for j in range(num_iters)
            ],
            dtype=np.float64,
        )

    def iteration_s_array(
        self,
        num_prefill_tokens: np.ndarray,
        num_decode_seqs: np.ndarray,
        total_context_tokens: np.ndarray,
    ) -> np.ndarray:
        """`iteration_s` element-wise over arrays (implementations vectorize it; the
        results equal `iteration_s` called per element)."""
        return np.array(
            [
                self.iteration_s(p, d, c)
                for p, d, c in zip(
                    np.asarray(num_prefill_tokens).tolist(),
                    np.asarray(num_decode_seqs).tolist(),
                    np.asarray(total_context_tokens).tolist(),
                    strict=True,
                )
            ],
            dtype=np.float64,
        )

    def _batch_sizes(self, max_num_seqs: int) -> np.ndarray:
        """`0.0, 1.0, ..., max_num_seqs`, kept between calls (every decision point asks)."""
        batch = getattr(self, "_batch_cache", None)
        if batch is None or len(batch) != max_num_seqs + 1:
            batch = np.arange(max_num_seqs + 1, dtype=np.float64)
            batch.flags.writeable = False
            self._batch_cache = batch
        return batch

    def decode_latency_by_batch(self, max_num_seqs: int, mean_context_tokens: float) -> np.ndarray:
        """Pure-decode iteration latency for batch sizes 0..max_num_seqs (the Capacity field).

        Args:
            max_num_seqs: Largest batch.
            mean_context_tokens: Context per sequence.

        Returns:
            float64 array of shape `(max_num_seqs + 1,)`.
        """
        batch = np.arange(max_num_seqs + 1, dtype=np.float64)
        return np.array(
            [self.iteration_s(0, b, b * mean_context_tokens) for b in batch], dtype=np.float64
        )

    def serving_latency_by_batch(
        self, max_num_seqs: int, mean_context_tokens: float, num_requests: int
    ) -> np.ndarray:
        """`decode_latency_by_batch` plus the per-request overhead of `num_requests`
        requests in the engine: the `Capacity.iter_latency_s` the policies see."""
        latency = self.decode_latency_by_batch(max_num_seqs, mean_context_tokens)
        per_request_s = self.overhead.per_request_s
        return latency + per_request_s * num_requests if per_request_s > 0.0 else latency


class _ClosedFormLatencyModel(LatencyModel):
    """A latency model given by one vectorized formula `_vec(prefill, decode_seqs, context)`.

    The array methods evaluate that formula on whole arrays at once; `iteration_s` uses the
    same operation order, so both give bit-identical results (the simulator relies on it).
    """

    @abstractmethod
    def _vec(self, p, d, ctx) -> np.ndarray:
        """The iteration latency, elementwise over broadcastable arrays."""

    def iteration_s_array(self, num_prefill_tokens, num_decode_seqs, total_context_tokens):
        return self._vec(
            np.asarray(num_prefill_tokens, dtype=np.float64),
            np.asarray(num_decode_seqs, dtype=np.float64),
            np.asarray(total_context_tokens, dtype=np.float64),
        )

    def decode_run_s(self, num_decode_seqs, first_context_tokens, num_iters) -> np.ndarray:
        ctx = first_context_tokens + np.arange(num_iters, dtype=np.float64) * num_decode_seqs
        return self._vec(0, num_decode_seqs, ctx)

    def decode_latency_by_batch(self, max_num_seqs, mean_context_tokens) -> np.ndarray:
        batch = self._batch_sizes(max_num_seqs)
        return self._vec(0, batch, batch * mean_context_tokens)


class LinearLatencyModel(_ClosedFormLatencyModel):
    """`base + a p + a2 p^2 + b d + c ctx` (see `LinearLatencySpec` for the fields).

    Args:
        spec: The coefficients.
    """

    def __init__(self, spec: LinearLatencySpec) -> None:
        self.spec = spec
        self._base = spec.base_s
        self._a = spec.per_prefill_token_s
        self._a2 = spec.per_prefill_token_sq_s
        self._b = spec.per_decode_seq_s
        self._c = spec.per_context_token_s

    def iteration_s(self, num_prefill_tokens, num_decode_seqs, total_context_tokens) -> float:
        p = num_prefill_tokens
        return float(
            self._base
            + self._a * p
            + self._a2 * p * p
            + self._b * num_decode_seqs
            + self._c * total_context_tokens
        )

    def _vec(self, p, d, ctx) -> np.ndarray:
        # Same operation order as iteration_s, so both give bit-identical results.
        return self._base + self._a * p + self._a2 * p * p + self._b * d + self._c * ctx


class RooflineLatencyModel(_ClosedFormLatencyModel):
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

    def __init__(self, model: ModelSpec, hardware: HardwareSpec) -> None:
        self.model = model
        self.hardware = hardware
        bw = hardware.mem_bandwidth_gb_s * 1e9 * hardware.bandwidth_efficiency
        flops = hardware.peak_tflops * 1e12 * hardware.compute_efficiency
        self._weight_s = model.weight_bytes / bw
        self._kv_token_s = model.kv_bytes_per_token / bw
        self._token_s = 2.0 * model.num_params / flops
        self._pair_s = 4.0 * model.num_layers * model.hidden_size / flops
        self._overhead_s = hardware.overhead_s

    def iteration_s(self, num_prefill_tokens, num_decode_seqs, total_context_tokens) -> float:
        p = num_prefill_tokens
        memory_s = self._weight_s + self._kv_token_s * total_context_tokens
        compute_s = self._token_s * (p + num_decode_seqs) + self._pair_s * (
            total_context_tokens + 0.5 * p * p
        )
        return float(self._overhead_s + max(memory_s, compute_s))

    def _vec(self, p, d, ctx) -> np.ndarray:
        memory_s = self._weight_s + self._kv_token_s * ctx
        compute_s = self._token_s * (p + d) + self._pair_s * (ctx + 0.5 * p * p)
        return self._overhead_s + np.maximum(memory_s, compute_s)


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
