"""The live engine as an `EngineBackend`: an in-process vLLM engine driven one decision at a time.

`VLLMBackend` submits a workload's requests at their arrival times, lets the scheduler hook
(`andes_gym.engine_bridge.hook.AndesGymEnvScheduler`, environment mode) stop the engine at
each contested decision point, and applies the environment's decisions through it. The
environment around it is `andes_gym.envs.vllm_env.VLLMEnv`. Importing this module does not
import vLLM.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from andes_gym.core.backend import DecisionConfig, EngineBackend, check_workload_fits
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision
from andes_gym.engine_bridge.engine import (
    EngineHandle,
    LiveEngineConfig,
    abort_all,
    create_engine,
    load_engine_config,
    release_engine,
)
from andes_gym.engine_bridge.ledger import RequestLedger
from andes_gym.engine_bridge.runtime import ENV_SCHEDULER, load_latency_model
from andes_gym.qoe import QoETracker
from andes_gym.workloads.spec import Workload


def random_prompts(
    prompt_tokens: np.ndarray, vocab_size: int, seed: int | None
) -> list[np.ndarray]:
    """Random prompt token ids, one array per request, drawn from `seed`.

    Ids start at 1: id 0 is often a padding or special token of real vocabularies.
    """
    rng = np.random.default_rng(seed)
    return [rng.integers(1, vocab_size, size=int(p)) for p in prompt_tokens]


class VLLMBackend(EngineBackend):
    """An in-process vLLM engine driven one decision at a time through the scheduler hook.

    The engine clock is wall time (`time.monotonic`) since the episode started, minus the
    time spent outside the backend (while the agent computes its action, or the learner
    trains) and minus idle gaps (nothing in the engine, waiting for the next arrival),
    which are skipped instead of slept. With `realtime=True` it is plain wall time.

    Args:
        engine: The engine config (name, path, mapping or `LiveEngineConfig`); read at
            construction, the engine itself starts on the first `start`.
        decision_config: Look-ahead, QoE variant, oracle flag, iterations per decision.
        engine_handle: An engine created by `create_engine(..., scheduler_cls=
            "andes_gym.engine_bridge.hook.AndesGymEnvScheduler")` to use (and not
            release); None creates one.
        realtime: Keep wall time running between steps and sleep through idle gaps.
        record_token_times: Keep every token's delivery time (for rendering and tests).

    Attributes:
        ledger: The episode's `RequestLedger` (row i: workload request i), filled by the
            hook: QoE rows (`tracker`), preemptions, finish times, completion order.
        tokens_received: Output tokens per request counted from the engine's
            `RequestOutput`s (an independent check of the ledger's counts).
        num_engine_steps: `LLMEngine.step()` calls in this episode.

    Raises:
        TypeError: When `engine_handle`'s scheduler is not the andes_gym hook.
    """

    def __init__(
        self,
        engine: str | dict | LiveEngineConfig = "cpu_live",
        decision_config: DecisionConfig | None = None,
        engine_handle: EngineHandle | None = None,
        realtime: bool = False,
        record_token_times: bool = False,
    ) -> None:
        self.engine_config = engine_handle.config if engine_handle else load_engine_config(engine)
        self.decision_config = decision_config or DecisionConfig()
        self.latency_model = load_latency_model(self.engine_config.latency_profile)
        self.realtime = realtime
        self.record_token_times = record_token_times
        self._handle = engine_handle
        self._owns_engine = engine_handle is None
        if engine_handle is not None:
            self._check_hook(engine_handle)
        self.tracker = QoETracker(capacity=1)
        self.ledger: RequestLedger | None = None
        self.workload: Workload | None = None
        self.tokens_received = np.zeros(0, dtype=np.int64)
        self.num_engine_steps = 0
        self._episode = 0
        self._prompts: list[np.ndarray] = []
        self._arrival_s = np.zeros(0)
        self._external_ids: list[str] = []
        self._next_arrival = 0
        self._num_finished = 0
        self._pending = False
        self._reset_clock()

    # ------------------------------------------------------------------ engine
    @property
    def engine_handle(self) -> EngineHandle:
        """The engine (created on first use)."""
        if self._handle is None or self._handle.closed:
            self._handle = create_engine(self.engine_config, scheduler_cls=ENV_SCHEDULER)
            self._owns_engine = True
            self._check_hook(self._handle)
        return self._handle

    @staticmethod
    def _check_hook(handle: EngineHandle) -> None:
        scheduler = handle.scheduler
        if not hasattr(scheduler, "andes_gym"):
            raise TypeError(
                f"the engine's scheduler is {type(scheduler).__name__}; create it with "
                f"create_engine(config, scheduler_cls={ENV_SCHEDULER!r})"
            )

    def close(self) -> None:
        """Releases the engine if this backend created it; else aborts its requests."""
        handle = self._handle
        if handle is None or handle.closed:
            return
        if self._owns_engine:
            release_engine(handle)
            self._handle = None
        else:
            abort_all(handle.engine)

    # ------------------------------------------------------------------ clock
    def _reset_clock(self) -> None:
        self._t0 = time.monotonic()
        self._offset_s = 0.0  # excluded (paused) minus skipped (idle) time
        self._paused_at: float | None = self._t0

    def _clock(self) -> float:
        base = self._paused_at if self._paused_at is not None else time.monotonic()
        return base - self._t0 - self._offset_s

    def _resume(self) -> None:
        if self._paused_at is not None:
            self._offset_s += time.monotonic() - self._paused_at
            self._paused_at = None

    def _pause(self) -> None:
        if not self.realtime and self._paused_at is None:
            self._paused_at = time.monotonic()

    def _skip_to(self, t_s: float) -> None:
        """Advances the clock to `t_s` across an idle gap (sleeps in realtime mode)."""
        gap_s = t_s - self._clock()
        if gap_s <= 0:
            return
        if self.realtime:
            time.sleep(gap_s)
        else:
            self._offset_s -= gap_s

    @property
    def now_s(self) -> float:
        return self._clock()

    # ------------------------------------------------------------------ episode
    def start(self, workload: Workload, seed: int | None) -> None:
        """Aborts what the last episode left, then starts `workload` at engine time 0.

        Raises:
            ValueError: If a request can never run on this engine (prompt + output above
                `max_model_len`, or more KV blocks than the cache holds).
        """
        handle = self.engine_handle
        self._check_fits(workload)
        abort_all(handle.engine)
        if self.engine_config.enable_prefix_caching:
            handle.engine.reset_prefix_cache()
        n = len(workload)
        self._episode += 1
        self.workload = workload
        self._prompts = random_prompts(workload.prompt_tokens, handle.vocab_size, seed)
        self._arrival_s = workload.arrival_s
        self._external_ids = [f"ep{self._episode}-{i}" for i in range(n)]
        self._next_arrival = 0
        self._num_finished = 0
        self._pending = False
        self.tokens_received = np.zeros(n, dtype=np.int64)
        self.num_engine_steps = 0
        self._reset_clock()
        ledger = RequestLedger(
            clock=self._clock, capacity=max(n, 1), record_token_times=self.record_token_times
        )
        for i in range(n):
            ledger.add(
                arrival_s=float(workload.arrival_s[i]),
                ttft_s=float(workload.ttft_s[i]),
                tds_tok_s=float(workload.tds_tok_s[i]),
                prompt_tokens=int(workload.prompt_tokens[i]),
                max_tokens=int(workload.output_tokens[i]),
            )
        self.ledger = ledger
        self.tracker = ledger.tracker
        cfg = self.decision_config
        self._runtime.attach_environment(
            ledger, self.latency_model, cfg.lookahead_s, cfg.qoe_variant, cfg.oracle
        )

    def _check_fits(self, workload: Workload) -> None:
        cfg = self.engine_config
        # vLLM keeps one block as its null block; requests can hold the rest.
        usable_blocks = self.engine_handle.scheduler.kv_cache_manager.block_pool.num_gpu_blocks - 1
        check_workload_fits(
            workload,
            cfg.max_model_len,
            usable_blocks,
            cfg.block_size,
            f"engine config {cfg.name!r}",
        )

    @property
    def _runtime(self) -> Any:
        return self.engine_handle.scheduler.andes_gym

    @property
    def finished(self) -> np.ndarray:
        return self.ledger.finished if self.ledger is not None else np.zeros(0, dtype=bool)

    @property
    def num_preemptions(self) -> np.ndarray:
        if self.ledger is None:
            return np.zeros(0, dtype=np.int64)
        return self.ledger.num_preemptions

    @property
    def completion_order(self) -> np.ndarray:
        """Workload request indices in the order they finished."""
        return np.asarray(self.ledger.completion_order if self.ledger else [], dtype=np.int64)

    # ------------------------------------------------------------------ stepping
    def next_decision(self) -> tuple[Candidates, Capacity] | None:
        self._resume()
        try:
            return self._run_to_decision()
        finally:
            self._pause()

    def _run_to_decision(self) -> tuple[Candidates, Capacity] | None:
        scheduler = self.engine_handle.scheduler
        limit = self.time_limit_s
        n = len(self._arrival_s)
        while True:
            if self._num_finished == n:
                return None
            if limit is not None and self._clock() >= limit:
                return None
            self._inject_arrivals()
            if scheduler.get_num_unfinished_requests() == 0:
                if self._next_arrival >= n:
                    raise RuntimeError(
                        f"the engine is idle with {n - self._num_finished} of {n} requests "
                        "unfinished and none left to arrive (were they aborted elsewhere?)"
                    )
                t_next = float(self._arrival_s[self._next_arrival])
                if limit is not None and t_next >= limit:
                    self._skip_to(limit)
                    return None
                self._skip_to(t_next)
                continue
            if self.skip_uncontested and scheduler.is_uncontested():
                scheduler.select_all_oldest_first()
                try:
                    self._run_steps()
                finally:
                    self._runtime.set_decision(None)
                continue
            point = scheduler.decision_point()
            if len(point.candidates) == 0:  # only requests vLLM blocks itself
                self._run_steps()
                continue
            self._pending = True
            return point.candidates, point.capacity

    def apply(self, decision: Decision) -> None:
        if not self._pending:
            raise RuntimeError("apply() needs a pending decision point from next_decision()")
        self._pending = False
        self._resume()
        runtime = self._runtime
        runtime.set_decision(decision)
        try:
            self._run_steps()
        finally:
            runtime.set_decision(None)

    def _run_steps(self) -> None:
        """Runs `iters_per_decision` engine steps (fewer if the engine empties)."""
        engine = self.engine_handle.engine
        scheduler = self.engine_handle.scheduler
        for _ in range(self.decision_config.iters_per_decision):
            self.num_engine_steps += 1
            for out in engine.step():
                i = int(out.request_id.rsplit("-", 1)[1])
                self.tokens_received[i] += len(out.outputs[0].token_ids)
                if out.finished:
                    self._num_finished += 1
            self._inject_arrivals()
            if scheduler.get_num_unfinished_requests() == 0:
                break

    def _inject_arrivals(self) -> None:
        """Adds every request whose arrival time has come to the engine."""
        lo = self._next_arrival
        n = len(self._arrival_s)
        if lo >= n or self._arrival_s[lo] > self._clock():
            return
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        hi = int(np.searchsorted(self._arrival_s, self._clock(), side="right"))
        engine = self.engine_handle.engine
        wl = self.workload
        for i in range(lo, hi):
            params = SamplingParams(
                max_tokens=int(wl.output_tokens[i]),
                ignore_eos=True,
                temperature=0.0,
                detokenize=False,
                output_kind=RequestOutputKind.DELTA,
                extra_args={"ttft_s": float(wl.ttft_s[i]), "tds_tok_s": float(wl.tds_tok_s[i])},
            )
            prompt = TokensPrompt(prompt_token_ids=self._prompts[i].tolist())
            internal_id = engine.add_request(self._external_ids[i], prompt, params)
            self.ledger.bind(internal_id, i)
        self._next_arrival = hi
