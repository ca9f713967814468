"""The mechanism side of an environment: an engine that runs requests (surrogate or vLLM).

A backend knows nothing of policies or rewards. The environment asks it for the next
decision point and applies decisions to it; both environments share everything else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.selection import Decision
from andes_gym.qoe import VARIANTS, QoETracker
from andes_gym.workloads.spec import Workload


@dataclass(frozen=True)
class DecisionConfig:
    """How decision points are made; shared by every backend.

    Attributes:
        lookahead_s: Look-ahead dt for the q_serve / q_wait predictions.
        qoe_variant: QoE variant of predictions and reward ("delay", "delay_fixed", "area").
        oracle: Expose the true remaining length in the candidates.
        iters_per_decision: Engine iterations between decision points (>= 1).
    """

    lookahead_s: float = 1.0
    qoe_variant: str = "delay"
    oracle: bool = False
    iters_per_decision: int = 1

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lookahead_s) and self.lookahead_s > 0):
            raise ValueError(f"lookahead_s must be a positive number, got {self.lookahead_s}")
        if self.qoe_variant not in VARIANTS:
            raise ValueError(f"qoe_variant must be one of {VARIANTS}, got {self.qoe_variant!r}")
        if self.iters_per_decision < 1:
            raise ValueError(f"iters_per_decision must be >= 1, got {self.iters_per_decision}")


def check_workload_fits(
    workload: Workload,
    max_model_len: int,
    num_blocks: int,
    block_size: int,
    engine: str,
    lengths_hint: str = "",
) -> None:
    """Checks that every request of `workload` can run on an engine at all.

    A request needs its prompt plus output tokens within `max_model_len`, and their KV
    blocks within the cache's `num_blocks`; one that does not fit would wait forever.

    Args:
        workload: The requests.
        max_model_len: The engine's longest sequence, in tokens.
        num_blocks: KV blocks requests can hold.
        block_size: Tokens per KV block.
        engine: How the error names the engine (e.g. `engine config 'cpu_live'`).
        lengths_hint: Appended to "clip the workload's lengths" in the error.

    Raises:
        ValueError: Naming the first such request, the limit it exceeds and how many
            requests exceed it.
    """
    total = workload.prompt_tokens + workload.output_tokens
    blocks = -(-total // block_size)
    for bad, limit in (
        (total > max_model_len, f"max_model_len={max_model_len} tokens"),
        (blocks > num_blocks, f"the KV cache's {num_blocks} blocks of {block_size} tokens"),
    ):
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"request {i} of workload {workload.name!r} (prompt {workload.prompt_tokens[i]} "
                f"+ output {workload.output_tokens[i]} tokens) exceeds {limit} of {engine} "
                f"({int(bad.sum())} such requests); clip the workload's lengths{lengths_hint} "
                "or use a larger engine"
            )


class EngineBackend(ABC):
    """An engine driven one decision at a time.

    Row i of `tracker` and of every per-request array is request i of the workload passed
    to `start` (its `request_id`).
    """

    tracker: QoETracker
    decision_config: DecisionConfig
    time_limit_s: float | None = None
    # Set by SchedulingEnv from its skip_uncontested flag. A backend may then apply the
    # decision the env would apply at an uncontested decision point (every candidate
    # selected, oldest first) itself, without building candidates: a pure speed-up that
    # must not change the trajectory. Backends that ignore it lose nothing.
    skip_uncontested: bool = False

    @abstractmethod
    def start(self, workload: Workload, seed: int | None) -> None:
        """Starts an episode on `workload`, dropping whatever the previous one left."""

    @abstractmethod
    def next_decision(self) -> tuple[Candidates, Capacity] | None:
        """Runs the engine until a decision is needed; None once every request finished.

        It also returns None once `now_s` reaches `time_limit_s` (when set), leaving the
        unfinished requests as they are.
        """

    @abstractmethod
    def apply(self, decision: Decision) -> None:
        """Preempts, admits and runs `iters_per_decision` iterations under `decision`."""

    @property
    @abstractmethod
    def now_s(self) -> float:
        """Engine time, seconds since the episode started."""

    @property
    @abstractmethod
    def finished(self) -> np.ndarray:
        """Boolean per workload request: all its tokens were delivered."""

    @property
    @abstractmethod
    def num_preemptions(self) -> np.ndarray:
        """Preemptions per workload request so far."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Releases the engine."""
