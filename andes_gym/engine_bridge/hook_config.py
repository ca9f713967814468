"""Configuration of the vLLM scheduler hook in serving mode, read from environment variables.

vLLM constructs the scheduler class itself (`--scheduler-cls`), so the hook cannot take
constructor arguments; it reads:

- `ANDES_GYM_HOOK_CONFIG`: path to a YAML file with `HookConfig` fields (unknown keys are
  an error), for example::

      policy: andes              # a registered policy name, or a path to an exported .onnx
      policy_kwargs: {}
      default_ttft_s: 1.0        # QoE targets of requests that carry none
      default_tds_tok_s: 4.8
      lookahead_s: 1.0
      latency_profile: cpu_tiny  # latency model: an engine profile (andes_gym/configs/engines/)
      decision_budget_ms: 50     # a later decision is discarded for FCFS's (null: none)

- `ANDES_GYM_POLICY`: the policy (registered name, exported `.onnx` path, or
  `package.module:Class`); overrides the file's.

Per-request QoE targets travel in `SamplingParams.extra_args` as `ttft_s` and `tds_tok_s`
(on the OpenAI-compatible server: the request field `vllm_xargs`).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from andes_gym.config_files import read_yaml
from andes_gym.qoe import VARIANTS

ENV_CONFIG = "ANDES_GYM_HOOK_CONFIG"
ENV_POLICY = "ANDES_GYM_POLICY"
TTFT_KEY = "ttft_s"
TDS_KEY = "tds_tok_s"


@dataclass(frozen=True)
class HookConfig:
    """How the hook schedules when it runs inside a serving engine.

    Attributes:
        policy: Registered policy name, a path to an exported policy (`.onnx`), or
            `"package.module:Class"` (a `Policy` subclass built with `policy_kwargs`).
        policy_kwargs: Constructor arguments of a registered policy.
        default_ttft_s: TTFT target of a request without `extra_args["ttft_s"]`.
        default_tds_tok_s: TDS target of a request without `extra_args["tds_tok_s"]`.
        lookahead_s: Look-ahead dt of the q_serve / q_wait predictions.
        qoe_variant: QoE variant of the predictions ("delay", "delay_fixed", "area").
        latency_profile: Engine profile whose latency model fills `Capacity`.
        skip_uncontested: Leave vLLM's own FCFS order when every candidate fits (every
            policy would select them all); the environments skip the same points.
        reuse_decisions: Keep the last decision, without asking the policy again, while
            nothing changed materially: no request arrived, finished or was preempted by
            vLLM itself, the kept selection uses at most `kv_pressure` of the KV cache,
            and the decision is younger than `max_decision_age_s`. False: ask the
            policy at every contested engine step.
        kv_pressure: Share of the KV cache above which the policy is asked at every step
            (the Andes paper triggers its knapsack above 90% KV usage).
        max_decision_age_s: Longest a decision is kept, seconds; None: a quarter of
            `lookahead_s` (the horizon the decision was planned over).
        seed: Seed passed to `policy.reset`.
        log_every_s: Seconds between summary log lines (QoE, preemptions, fallbacks);
            0 disables them.
        decision_budget_ms: Longest one policy decision may take, in milliseconds. A
            decision that comes back later is discarded and the step is scheduled by
            FCFS (logged, and counted in the runner's `fallbacks_by_reason`). Measured,
            not enforced: nothing interrupts a running `decide()`. None: no budget.
    """

    policy: str = "andes"
    policy_kwargs: dict = field(default_factory=dict)
    default_ttft_s: float = 1.0
    default_tds_tok_s: float = 4.8
    lookahead_s: float = 1.0
    qoe_variant: str = "delay"
    latency_profile: str = "cpu_tiny"
    skip_uncontested: bool = True
    reuse_decisions: bool = True
    kv_pressure: float = 0.9
    max_decision_age_s: float | None = None
    seed: int = 0
    log_every_s: float = 60.0
    decision_budget_ms: float | None = 50.0

    @property
    def decision_age_limit_s(self) -> float:
        """How long a decision may be kept (`max_decision_age_s`, or its default)."""
        age = self.max_decision_age_s
        return self.lookahead_s / 4 if age is None else float(age)

    def __post_init__(self) -> None:
        if not (isinstance(self.policy, str) and self.policy):
            raise ValueError(f"policy must be a non-empty string, got {self.policy!r}")
        if not isinstance(self.policy_kwargs, dict):
            raise ValueError(f"policy_kwargs must be a mapping, got {self.policy_kwargs!r}")
        if not (math.isfinite(self.default_ttft_s) and self.default_ttft_s >= 0):
            raise ValueError(f"default_ttft_s must be >= 0 seconds, got {self.default_ttft_s}")
        if not (math.isfinite(self.default_tds_tok_s) and self.default_tds_tok_s > 0):
            raise ValueError(
                f"default_tds_tok_s must be > 0 tokens/s, got {self.default_tds_tok_s}"
            )
        if not (math.isfinite(self.lookahead_s) and self.lookahead_s > 0):
            raise ValueError(f"lookahead_s must be > 0 seconds, got {self.lookahead_s}")
        if self.qoe_variant not in VARIANTS:
            raise ValueError(f"qoe_variant must be one of {VARIANTS}, got {self.qoe_variant!r}")
        if not (isinstance(self.kv_pressure, int | float) and 0.0 <= self.kv_pressure <= 1.0):
            raise ValueError(f"kv_pressure must lie in [0, 1], got {self.kv_pressure!r}")
        age = self.max_decision_age_s
        if age is not None and not (isinstance(age, int | float) and 0.0 <= age < math.inf):
            raise ValueError(
                f"max_decision_age_s must be >= 0 seconds or null (a quarter of lookahead_s), "
                f"got {age!r}"
            )
        if not self.log_every_s >= 0:
            raise ValueError(f"log_every_s must be >= 0, got {self.log_every_s}")
        budget = self.decision_budget_ms
        is_number = isinstance(budget, int | float) and not isinstance(budget, bool)
        if budget is not None and not (is_number and math.isfinite(budget) and budget > 0):
            raise ValueError(
                f"decision_budget_ms must be > 0 milliseconds or null (no budget), got {budget!r}"
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> HookConfig:
        """A config from a mapping.

        Raises:
            ValueError: Naming an unknown key or an invalid value, with `source`.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: a hook config must be a mapping, got {data!r}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(
                f"{source}: unknown hook config key {unknown[0]!r}; known keys: {', '.join(known)}"
            )
        try:
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HookConfig:
        """The config named by `ANDES_GYM_HOOK_CONFIG`, with `ANDES_GYM_POLICY` applied.

        Args:
            environ: Environment mapping; None reads `os.environ`.

        Raises:
            FileNotFoundError: `ANDES_GYM_HOOK_CONFIG` names a missing file.
            ValueError: The file has an unknown key or an invalid value.
        """
        env = os.environ if environ is None else environ
        data: dict[str, Any] = {}
        path = env.get(ENV_CONFIG)
        if path:
            file = Path(path)
            if not file.is_file():
                raise FileNotFoundError(f"{ENV_CONFIG}={path!r}: no such file")
            data = read_yaml(file, "hook config", allow_empty=True) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: a hook config must be a mapping, got {data!r}")
        if env.get(ENV_POLICY):
            data = {**data, "policy": env[ENV_POLICY]}
        return cls.from_dict(data, source=path or "<environment>")


def request_targets(
    extra_args: Mapping[str, Any] | None, config: HookConfig
) -> tuple[float, float, list[str]]:
    """A request's QoE targets from its `SamplingParams.extra_args`, with defaults.

    Args:
        extra_args: The request's extra arguments (may be None).
        config: Supplies the defaults.

    Returns:
        `(ttft_s, tds_tok_s, problems)`: problems names every value that was present but
        invalid and replaced by its default (the request is served either way).
    """
    values = {TTFT_KEY: config.default_ttft_s, TDS_KEY: config.default_tds_tok_s}
    problems = []
    for key in (TTFT_KEY, TDS_KEY):
        raw = (extra_args or {}).get(key)
        if raw is None:
            continue
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        valid = math.isfinite(value) and (value >= 0 if key == TTFT_KEY else value > 0)
        if valid:
            values[key] = value
        else:
            problems.append(f"{key}={raw!r}")
    return values[TTFT_KEY], values[TDS_KEY], problems
