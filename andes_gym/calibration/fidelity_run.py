"""Running one workload under one policy on the surrogate and on the live engine.

Both runs go through the same code path as every other evaluation: the environment
(`andes_gym/Surrogate-v0` or `andes_gym/VLLM-v0`), a `PolicyAgent` and
`andes_gym.evaluation.run_episode`, so the decision points, the selection rule and the
metrics are identical; only the backend differs. Both receive the same `Workload` object
(arrivals, lengths, QoE targets) and the same environment arguments, and the live
engine's latency prediction (its `Capacity`) uses the same fitted profile as the
surrogate, so a policy like Andes sees the same predictions in both.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from andes_gym.agents.adapter import PolicyAgent
from andes_gym.agents.registry import make_policy
from andes_gym.calibration.fidelity_data import RunRecord, record_from_episode
from andes_gym.engine_bridge.engine import create_engine, load_engine_config, release_engine
from andes_gym.engine_bridge.runtime import ENV_SCHEDULER
from andes_gym.envs.surrogate_env import SurrogateEnv
from andes_gym.envs.vllm_env import VLLMEnv
from andes_gym.evaluation import run_episode
from andes_gym.workloads.spec import Workload


@dataclass(frozen=True)
class EnvArgs:
    """Environment arguments shared by both engines.

    Attributes:
        k_slots: Request slots of the observation.
        lookahead_s: Look-ahead of q_serve / q_wait (the tiny engine's time scale).
        qoe_variant: QoE variant of predictions and reward.
        iters_per_decision: Engine iterations per decision.
        skip_uncontested: Apply uncontested decision points without asking the policy.
    """

    k_slots: int = 64
    lookahead_s: float = 0.05
    qoe_variant: str = "delay"
    iters_per_decision: int = 1
    skip_uncontested: bool = True

    def as_kwargs(self) -> dict:
        return {
            "k_slots": self.k_slots,
            "lookahead_s": self.lookahead_s,
            "qoe_variant": self.qoe_variant,
            "iters_per_decision": self.iters_per_decision,
            "skip_uncontested": self.skip_uncontested,
        }


class StepTimer:
    """Times every `engine.step()` of a live engine on the environment's clock.

    Wraps the engine instance's `step` (the class is untouched). For each step it records
    the engine clock at its start and end and how many requests the engine held before
    it, so the time the environment spends *between* steps (arrival injection, the
    contention check, building candidates and QoE predictions; not the agent, whose time
    the live clock excludes) can be told apart from the step itself.

    Args:
        engine: The `LLMEngine`.
        scheduler: Its scheduler (for the number of unfinished requests).
    """

    def __init__(self, engine: Any, scheduler: Any) -> None:
        self.engine = engine
        self.scheduler = scheduler
        self.clock = time.perf_counter
        self.reset()
        self._inner = engine.step

        def timed_step(*args, **kwargs):
            self.num_requests.append(scheduler.get_num_unfinished_requests())
            self.start_s.append(self.clock())
            try:
                return self._inner(*args, **kwargs)
            finally:
                self.end_s.append(self.clock())
                self.num_after.append(scheduler.get_num_unfinished_requests())

        engine.step = timed_step

    def reset(self, clock=None) -> None:
        """Forgets the recorded steps; `clock` (default: perf_counter) times the next ones."""
        self.clock = clock or time.perf_counter
        self.start_s: list[float] = []
        self.end_s: list[float] = []
        self.num_requests: list[int] = []
        self.num_after: list[int] = []

    def durations_s(self) -> np.ndarray:
        """Duration of each step."""
        return np.asarray(self.end_s) - np.asarray(self.start_s)

    def gaps_s(self) -> tuple[np.ndarray, np.ndarray]:
        """Clock time between consecutive steps while the engine stayed busy, and the
        number of requests in the engine at the second step of each gap."""
        start = np.asarray(self.start_s)
        end = np.asarray(self.end_s)
        n = np.asarray(self.num_requests)
        if len(start) < 2:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        gaps = start[1:] - end[:-1]
        # A gap after a step that emptied the engine spans the idle wait for the next
        # arrival (which the clock skips); only gaps of a busy engine are overhead.
        busy = np.asarray(self.num_after[:-1]) > 0
        return gaps[busy], n[1:][busy]

    def detach(self) -> None:
        self.engine.step = self._inner


def step_timing_summary(timer: StepTimer) -> dict:
    """Step count, step durations and the between-step time of a live episode."""
    steps = timer.durations_s()
    gaps, _ = timer.gaps_s()
    return {
        "num_iterations": int(len(steps)),
        "engine_step_s_total": float(steps.sum()),
        "engine_step_ms_median": float(np.median(steps) * 1e3) if len(steps) else 0.0,
        "engine_step_ms_mean": float(np.mean(steps) * 1e3) if len(steps) else 0.0,
        "between_steps_ms_median": float(np.median(gaps) * 1e3) if len(gaps) else 0.0,
        "between_steps_ms_mean": float(np.mean(gaps) * 1e3) if len(gaps) else 0.0,
    }


def run_surrogate(
    workload: Workload,
    profile: Any,
    policy: str,
    seed: int,
    env_args: EnvArgs,
    workload_name: str,
) -> RunRecord:
    """One episode of `policy` on the surrogate with engine profile `profile`."""
    env = SurrogateEnv(workload=workload, engine=profile, **env_args.as_kwargs())
    try:
        result = run_episode(env, PolicyAgent(make_policy(policy)), seed=seed)
        record = record_from_episode(env, result, "surrogate", workload_name)
        record.summary["num_iterations"] = int(env.backend.num_iterations)
        return record
    finally:
        env.close()


class LiveRunner:
    """Runs episodes on one shared live engine (started once, reused across runs).

    Args:
        engine: Live engine config (name, path or `LiveEngineConfig`); ignored when
            `handle` is given.
        latency_profile: Engine profile whose latency model fills the live `Capacity`
            (use the surrogate's fitted profile so both engines predict alike).
        handle: An engine already running with the environment's scheduler hook
            (`create_engine(cfg, scheduler_cls=andes_gym.engine_bridge.runtime.ENV_SCHEDULER)`),
            to share instead of starting one; `close` then leaves it running.
    """

    def __init__(self, engine: Any, latency_profile: str | None, handle: Any = None) -> None:
        self._owns = handle is None
        if handle is None:
            cfg = load_engine_config(engine)
            if latency_profile is not None:
                cfg = cfg.replace(latency_profile=str(latency_profile))
            handle = create_engine(cfg, scheduler_cls=ENV_SCHEDULER)
        elif latency_profile is not None:
            # A view of the shared engine whose config names our latency profile (the
            # environment reads the profile from the handle's config).
            handle = dataclasses.replace(
                handle, config=handle.config.replace(latency_profile=str(latency_profile))
            )
        self.config = handle.config
        self.handle = handle
        self.timer = StepTimer(self.handle.engine, self.handle.scheduler)

    def run(
        self, workload: Workload, policy: str, seed: int, env_args: EnvArgs, workload_name: str
    ) -> RunRecord:
        """One episode of `policy` on the live engine."""
        env = VLLMEnv(workload=workload, engine_handle=self.handle, **env_args.as_kwargs())
        try:
            backend = env.unwrapped.backend
            self.timer.reset(clock=lambda: backend.now_s)
            result = run_episode(env, PolicyAgent(make_policy(policy)), seed=seed)
            record = record_from_episode(env, result, "live", workload_name)
            record.summary.update(step_timing_summary(self.timer))
            record.summary["engine_clock_s"] = float(backend.now_s)
            return record
        finally:
            env.close()

    def close(self) -> None:
        self.timer.detach()
        if self._owns:
            release_engine(self.handle)
