"""The state the vLLM scheduler hook keeps, none of it vLLM-specific.

`HookRuntime` holds the ledger (QoE rows, preemptions, completions), the latency model,
and where decisions come from:

- serving mode (the default): the configured policy, through `PolicyRunner` (checks and
  FCFS fallback), at every contested engine step;
- environment mode (`attach_environment`): the live environment hands one decision per
  decision point with `set_decision`; steps without one are left to vLLM.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import time
from typing import Any

import numpy as np

from andes_gym.agents.registry import load_entry_point, make_policy
from andes_gym.core.selection import Decision
from andes_gym.engine_bridge.candidates_vllm import DecisionPoint
from andes_gym.engine_bridge.hook_config import HookConfig, request_targets
from andes_gym.engine_bridge.ledger import RequestLedger
from andes_gym.engine_bridge.policy_runner import PolicyRunner
from andes_gym.surrogate.latency import make_latency_model
from andes_gym.surrogate.profile import load_engine_profile

# The hook's scheduler classes, as `--scheduler-cls` or `scheduler_cls=` name them: serving
# mode, and environment mode (what `engine_bridge.vllm_backend.VLLMBackend` drives).
SERVE_SCHEDULER = "andes_gym.engine_bridge.hook.AndesGymScheduler"
ENV_SCHEDULER = "andes_gym.engine_bridge.hook.AndesGymEnvScheduler"

logger = logging.getLogger("andes_gym.hook")
_REQUEST_ID = operator.attrgetter("request_id")
_NEW_TOKEN_IDS = operator.attrgetter("new_token_ids")


def build_policy(spec: str, kwargs: dict) -> Any:
    """A policy from a registered name, an exported `.onnx` path or `"package.module:Class"`.

    Raises:
        KeyError: Unknown registered name.
        ImportError, AttributeError: A `module:Class` that cannot be imported.
    """
    if ":" in spec and not spec.endswith(".onnx"):
        return load_entry_point(spec)(**kwargs)
    return make_policy(spec, **kwargs)


def load_latency_model(profile: str) -> Any:
    """The latency model of an engine profile (`configs/engines/<profile>.yaml`)."""
    return make_latency_model(load_engine_profile(profile))


def _serving_ledger() -> RequestLedger:
    """A ledger on a monotonic clock starting now (serving mode)."""
    origin = time.monotonic()
    return RequestLedger(clock=lambda: time.monotonic() - origin, capacity=1024, buffer_steps=16)


class HookRuntime:
    """Ledger, latency model and decision source of one scheduler.

    Args:
        config: Serving-mode configuration.
        serve: Start in serving mode (build the configured policy and its latency model);
            False waits for `attach_environment`.
    """

    def __init__(self, config: HookConfig, serve: bool = True) -> None:
        self.config = config
        self.latency_model: Any = None
        self.lookahead_s = config.lookahead_s
        self.qoe_variant = config.qoe_variant
        self.oracle = False
        self.ledger = _serving_ledger()
        self.runner: PolicyRunner | None = None
        self.forced_order: list[str] | None = None
        self.last_point: DecisionPoint | None = None
        self.num_interventions = 0
        self.num_hook_errors = 0
        self._warned: set[str] = set()
        self._next_log_s = config.log_every_s
        if serve:
            policy = build_policy(config.policy, config.policy_kwargs)
            policy.reset(config.seed)
            self.use_policy(policy)

    @property
    def env_mode(self) -> bool:
        """True while a live environment drives the decisions."""
        return self.runner is None

    def use_policy(self, policy: Any, latency_model: Any = None, **changes: Any) -> None:
        """Switches to serving mode with `policy` (FCFS fallback) and a fresh ledger.

        Also how programs (benchmarks, tests) serve a policy object on an engine built
        with either hook class.

        Args:
            policy: A `Policy`.
            latency_model: Latency model for `Capacity`; None keeps the current one, or
                loads the config's `latency_profile` when there is none.
            **changes: `HookConfig` fields to change (e.g. `skip_uncontested=False`).
        """
        self.config = dataclasses.replace(self.config, **changes)
        self.latency_model = (
            latency_model or self.latency_model or load_latency_model(self.config.latency_profile)
        )
        self.lookahead_s = self.config.lookahead_s
        self.qoe_variant = self.config.qoe_variant
        self.oracle = False
        self.ledger = _serving_ledger()
        self.runner = PolicyRunner(
            policy, make_policy("fcfs"), decision_budget_ms=self.config.decision_budget_ms
        )
        self.forced_order = None
        self.last_point = None

    # ------------------------------------------------------------- environment mode
    def attach_environment(
        self,
        ledger: RequestLedger,
        latency_model: Any,
        lookahead_s: float,
        qoe_variant: str,
        oracle: bool,
    ) -> None:
        """Switches to environment mode for one episode.

        The environment registers its requests in `ledger` (and binds their engine ids)
        itself; `set_decision` gives the decision of each decision point.
        """
        self.runner = None
        self.ledger = ledger
        self.latency_model = latency_model
        self.lookahead_s = lookahead_s
        self.qoe_variant = qoe_variant
        self.oracle = oracle
        self.forced_order = None
        self.last_point = None

    def set_decision(self, decision: Decision | None) -> None:
        """The decision for the coming engine steps, on the last decision point's candidates.

        Raises:
            RuntimeError: When no decision point was built since the last decision.
        """
        if decision is None:
            self.forced_order = None
            return
        point = self.last_point
        if point is None:
            raise RuntimeError("set_decision() needs a decision point; call decision_point() first")
        self.forced_order = [point.requests[i].request_id for i in decision.order]
        self.last_point = None

    # ------------------------------------------------------------- serving mode
    def register(self, request: Any) -> None:
        """Gives a new request a ledger row (serving mode; the environment binds its own)."""
        if self.env_mode or request.request_id in self.ledger.rows:
            return
        sp = request.sampling_params
        extra = sp.extra_args if sp is not None else None
        ttft_s, tds_tok_s, problems = request_targets(extra, self.config)
        if problems:
            self.warn_once(
                "targets",
                "andes_gym hook: invalid QoE targets %s in request %s; using the defaults "
                "(ttft_s=%s, tds_tok_s=%s). Logged once.",
                problems,
                request.request_id,
                self.config.default_ttft_s,
                self.config.default_tds_tok_s,
            )
        now_s = self.ledger.clock()
        # arrival_time is wall-clock (time.time()) stamped by the frontend.
        waited_s = max(time.time() - float(request.arrival_time), 0.0)
        self.ledger.add(
            arrival_s=now_s - waited_s,
            ttft_s=ttft_s,
            tds_tok_s=tds_tok_s,
            prompt_tokens=int(request.num_prompt_tokens),
            max_tokens=int(request.max_tokens),
            request_id=request.request_id,
        )

    def decide(self, point: DecisionPoint) -> Decision | None:
        """The serving-mode decision of a decision point (None: leave it to vLLM)."""
        if len(point.candidates) == 0:
            return None
        return self.runner.decide(point.candidates, point.capacity)

    def stats(self) -> dict:
        """Counters of serving mode: decisions, interventions, fallbacks by reason.

        `fallbacks_by_reason` counts the steps FCFS scheduled instead of the policy:
        `raised` (the policy raised), `invalid_decision`, `empty_selection` (nothing
        selected while a request would fit), `over_budget` (came back after
        `decision_budget_ms`). `hook_errors` counts steps left to vLLM because building
        the decision point failed.
        """
        runner = self.runner
        stats = runner.stats() if runner is not None else {}
        return {
            "policy": self.config.policy,
            "interventions": self.num_interventions,
            "hook_errors": self.num_hook_errors,
            **stats,
        }

    # ------------------------------------------------------------- outputs
    def record_outputs(self, engine_core_outputs: dict) -> None:
        """Records the tokens and completions of one engine step (any mode)."""
        ledger = self.ledger
        t_s = ledger.clock()
        bound = ledger.rows
        done = []
        for eco in engine_core_outputs.values():
            # Comprehensions and C-level maps: this runs for every running request at
            # every engine step.
            delivered = [out for out in eco.outputs if out.new_token_ids]
            rows = list(map(bound.get, map(_REQUEST_ID, delivered)))
            if None in rows:
                pairs = list(zip(delivered, rows, strict=True))
                self.warn_once(
                    "unknown",
                    "andes_gym hook: outputs of unregistered requests %s ignored",
                    [out.request_id for out, row in pairs if row is None][:5],
                )
                delivered = [out for out, row in pairs if row is not None]
                rows = [row for _, row in pairs if row is not None]
            if rows:
                counts = np.fromiter(map(len, map(_NEW_TOKEN_IDS, delivered)), np.int64, len(rows))
                ledger.deliver(np.array(rows, dtype=np.int64), counts, t_s)
            done += [o.request_id for o in eco.outputs if o.finish_reason is not None]
        for request_id in done:
            if request_id in bound:
                ledger.finish(request_id, t_s)
        if not self.env_mode:
            self._maybe_log_summary(t_s)

    def forget(self, request_id: str) -> None:
        """Unbinds an aborted request (its row keeps what it received)."""
        self.ledger.rows.pop(request_id, None)

    # ------------------------------------------------------------- logging
    def warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg, *args)

    def _maybe_log_summary(self, now_s: float) -> None:
        every = self.config.log_every_s
        if not every or now_s < self._next_log_s:
            return
        self._next_log_s = now_s + every
        done = self.ledger.finished
        qoe = self.ledger.tracker.qoe(np.flatnonzero(done), self.qoe_variant) if done.any() else []
        runner = self.runner
        by_reason = runner.fallbacks_by_reason if runner else {}
        logger.info(
            "andes_gym hook: policy=%s finished=%d mean_qoe=%s preemptions=%d "
            "interventions=%d fallbacks=%d (%s)",
            self.config.policy,
            int(done.sum()),
            f"{float(np.mean(qoe)):.3f}" if len(qoe) else "n/a",
            int(self.ledger.num_preemptions.sum()),
            self.num_interventions,
            runner.num_fallbacks if runner else 0,
            " ".join(f"{k}={v}" for k, v in by_reason.items()),
        )
