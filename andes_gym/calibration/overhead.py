"""What the live environment adds to each engine iteration, beyond `engine.step()`'s model.

`calibration.profiler` times bare `engine.step()` calls of controlled request sets. The live
environment (`andes_gym/VLLM-v0`) also spends engine-clock time between steps (injecting
arrivals, checking whether the step is contested, building candidates and their QoE
predictions at a decision point) and inside steps (the scheduler hook's preempt / hold
back / restore over a long queue, its ledger updates). This module runs a workload through
the live environment, times every iteration on the environment's own clock, and fits the
part the latency model does not explain:

    excess_s = per_iteration_s + per_prefill_seq_s * prefill_seqs
               + per_request_s * num_requests
               + decided * (decision_s + per_candidate_s * num_candidates)

(non-negative least squares on the iterations of a busy engine; `decided` is 1 when the
policy was asked before the iteration; `num_requests` counts the requests in the engine,
running and waiting, whose bookkeeping the hook and vLLM's scheduler walk every step).
Only `per_iteration_s` has a place in the current latency model (it adds to `base_s`);
the other terms are reported for the surrogate's maintainers (see docs/CALIBRATION.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from andes_gym.agents.adapter import PolicyAgent
from andes_gym.agents.registry import make_policy
from andes_gym.calibration.fit import nnls
from andes_gym.calibration.profiler import StepRecorder
from andes_gym.envs.vllm_env import VLLMEnv
from andes_gym.evaluation import run_episode

EXCESS_TERMS: tuple[str, ...] = (
    "per_iteration_s",
    "per_prefill_seq_s",
    "per_request_s",
    "decision_s",
    "per_candidate_s",
)


@dataclass(frozen=True)
class IterationSample:
    """One iteration of the live environment.

    Attributes:
        prefill_tokens: Prefill tokens computed.
        decode_seqs: Sequences decoded.
        context_tokens: Context attended (sum of computed tokens after the step).
        prefill_seqs: Requests computing prefill tokens.
        num_requests: Requests in the engine (running and waiting) before the step.
        num_candidates: Candidates of the decision before the step (0 if none was asked).
        iteration_s: Engine-clock time from the end of the previous step to the end of
            this one (the gap before it plus the step itself).
        step_s: The step alone.
    """

    prefill_tokens: int
    decode_seqs: int
    context_tokens: int
    prefill_seqs: int
    num_requests: int
    num_candidates: int
    iteration_s: float
    step_s: float


class _Instrument:
    """Wraps one live episode's engine step and decision points (instance attributes only)."""

    def __init__(self, handle: Any, backend: Any) -> None:
        self.engine = handle.engine
        self.backend = backend
        self.recorder = StepRecorder(handle.scheduler)
        self.scheduler = handle.scheduler
        self.rows: list[tuple] = []
        self._pending = 0
        self._inner_step = self.engine.step
        self._inner_next = backend.next_decision
        self.engine.step = self._step
        backend.next_decision = self._next_decision

    def _next_decision(self):
        point = self._inner_next()
        self._pending = 0 if point is None else len(point[0])
        return point

    def _step(self, *args, **kwargs):
        clock = self.backend._clock  # the environment's engine clock, running during steps
        num_requests = self.scheduler.get_num_unfinished_requests()
        start = clock()
        self.recorder.last = None
        try:
            return self._inner_step(*args, **kwargs)
        finally:
            end = clock()
            busy_after = self.scheduler.get_num_unfinished_requests() > 0
            row = (self.recorder.last, self._pending, start, end, busy_after, num_requests)
            self.rows.append(row)
            self._pending = 0

    def detach(self) -> None:
        self.engine.step = self._inner_step
        self.backend.next_decision = self._inner_next
        self.recorder.detach()

    def samples(self) -> list[IterationSample]:
        out = []
        for prev, row in zip(self.rows, self.rows[1:], strict=False):
            comp, cands, start, end, _, num_requests = row
            if comp is None or not prev[4]:  # nothing computed, or an idle gap before it
                continue
            p, d, c, _, _, seqs = comp
            out.append(
                IterationSample(p, d, c, seqs, num_requests, cands, end - prev[3], end - start)
            )
        return out


def record_live_iterations(
    handle: Any, workload: Any, policy: str, seed: int, env_kwargs: dict
) -> list[IterationSample]:
    """Runs one episode of `policy` on the live environment and returns its iterations.

    Args:
        handle: A running engine with the environment's scheduler hook.
        workload: The `Workload` to replay.
        policy: Registered policy name.
        seed: Episode seed.
        env_kwargs: Further `VLLMEnv` arguments (k_slots, lookahead_s, ...).
    """
    env = VLLMEnv(workload=workload, engine_handle=handle, **env_kwargs)
    inst = _Instrument(handle, env.unwrapped.backend)
    try:
        run_episode(env, PolicyAgent(make_policy(policy)), seed=seed)
    finally:
        inst.detach()
        env.close()
    return inst.samples()


def fit_excess(samples: list[IterationSample], latency_model: Any, trim: float = 0.02) -> dict:
    """Fits the environment's excess time per iteration (see the module docstring).

    Args:
        samples: Iterations of busy live episodes.
        latency_model: The fitted engine model (`surrogate.latency.LatencyModel`).
        trim: Fraction of the largest excesses left out (stray slow iterations of a
            shared machine).

    Returns:
        `{"coefficients": {term: seconds}, "num_samples": n, "median_excess_s": x,
        "model_median_rel_error_before": e0, "model_median_rel_error_after": e1}`.
    """
    if len(samples) < len(EXCESS_TERMS):
        raise ValueError(f"need at least {len(EXCESS_TERMS)} iterations, got {len(samples)}")
    arr = np.array([tuple(asdict(s).values()) for s in samples], dtype=np.float64)
    p, d, c, seqs, num_requests, cands, total, _ = arr.T
    model = np.array([latency_model.iteration_s(*row) for row in zip(p, d, c, strict=True)])
    excess = total - model
    keep = excess <= np.quantile(excess, 1.0 - trim)
    decided = (cands > 0).astype(np.float64)
    x = np.column_stack((np.ones_like(p), seqs, num_requests, decided, decided * cands))
    coef = nnls(x[keep], excess[keep])
    after = model + x @ coef
    return {
        "coefficients": dict(zip(EXCESS_TERMS, coef.tolist(), strict=True)),
        "num_samples": int(keep.sum()),
        "num_decided": int(decided[keep].sum()),
        "median_excess_s": float(np.median(excess)),
        "model_median_rel_error_before": float(np.median(np.abs(model - total) / total)),
        "model_median_rel_error_after": float(np.median(np.abs(after - total) / total)),
        "mean_rel_bias_before": float(np.mean((model - total) / total)),
        "mean_rel_bias_after": float(np.mean((after - total) / total)),
    }
