"""The Gymnasium environment logic shared by the surrogate and the live vLLM environments.

Subclasses only choose the backend (the mechanism); spaces, the selection rule, reward,
episode end and metrics live here, once.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from andes_gym.core.backend import EngineBackend
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import OBS_BOUND, FeatureSpec, observe, scores_from_slots
from andes_gym.core.selection import (
    Decision,
    InvalidDecision,
    check_decision,
    decision_from_order,
    fits_all,
    priority_order,
    select,
)
from andes_gym.envs.rendering import render_text, render_token_curves
from andes_gym.metrics import request_metrics, summarize
from andes_gym.workloads.spec import Workload

DecisionContext = tuple[Candidates, Capacity, np.ndarray]


class SchedulingEnv(gym.Env):
    """Base class: one step is one scheduling decision of an engine backend.

    See `andes_gym.envs.surrogate_env.SurrogateEnv` for the full documentation of the
    spaces, the reward and the episode end; `VLLMEnv` shares all of it.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(
        self,
        backend: EngineBackend,
        workload_source: Any,
        feature_spec: FeatureSpec,
        skip_uncontested: bool = True,
        time_limit_s: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}"
            )
        if time_limit_s is not None and not time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive or None, got {time_limit_s}")
        self.backend = backend
        self.workload_source = workload_source
        self.feature_spec = feature_spec
        self.skip_uncontested = skip_uncontested
        self.time_limit_s = time_limit_s
        self.render_mode = render_mode
        k = feature_spec.k_slots
        self.observation_space = gym.spaces.Box(
            -OBS_BOUND, OBS_BOUND, shape=(feature_spec.obs_dim,), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(k,), dtype=np.float32)
        self.workload: Workload | None = None
        self._ctx: DecisionContext | None = None
        self._obs = np.zeros(feature_spec.obs_dim, dtype=np.float32)
        self._potential = 0.0
        self._final_sum = 0.0
        self._counted: np.ndarray = np.zeros(0, dtype=bool)
        self._num_steps = 0
        self._final_pending = False

    # ----------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        episode_seed = int(self.np_random.integers(2**31 - 1)) if seed is None else int(seed)
        self.workload = self.workload_source.sample(episode_seed)
        self.backend.time_limit_s = self.time_limit_s
        self.backend.skip_uncontested = self.skip_uncontested
        self.backend.start(self.workload, episode_seed)
        self._potential = 0.0
        self._final_sum = 0.0
        self._counted = np.zeros(len(self.workload), dtype=bool)
        self._num_steps = 0
        self._advance()
        # No contested decision in the whole episode: the first step only reports its end.
        self._final_pending = self._ctx is None
        return self._obs.copy(), self._step_info()

    def step(self, action):
        if self._ctx is None:
            if not self._final_pending:
                raise RuntimeError("step() called on a finished episode; call reset() first")
            # reset() already ran the whole episode (nothing was contested): this step
            # checks the action, then reports the episode's reward and end.
            self._check_action(action)
            self._final_pending = False
            return self._transition()
        scores = self._slot_scores_to_candidates(action)
        candidates, capacity, _ = self.decision_context
        return self._apply(select(scores, candidates, capacity))

    def step_decision(self, decision: Decision | None):
        """`step` with a policy's `Decision` over all pending candidates instead of slot scores.

        This is how the vLLM hook applies a policy, so a registered policy is not limited
        to the K observed slots (with more candidates than slots, scores cannot express its
        choice among the overflow). The decision must pass `check_decision`; it is applied
        as is. `None` is accepted only for the one step that ends an episode in which no
        decision point was contested.

        Returns:
            The same tuple as `step`.

        Raises:
            InvalidDecision: When the decision breaks the selection rule's invariants
                (`check_decision`), including an empty selection while a candidate would
                fit: nothing would run, and the episode would never advance.
        """
        if self._ctx is None:
            if not self._final_pending:
                raise RuntimeError("step() called on a finished episode; call reset() first")
            self._final_pending = False
            return self._transition()
        if decision is None:
            raise InvalidDecision("a decision is required at a pending decision point")
        candidates, capacity, _ = self.decision_context
        check_decision(decision, candidates, capacity)
        return self._apply(decision)

    def _apply(self, decision: Decision):
        self.backend.apply(decision)
        self._num_steps += 1
        self._advance()
        return self._transition()

    def _transition(self, potential: float | None = None):
        """Reward, episode end and info after the backend reached its next decision point
        (`potential`: the reward potential now, when the caller has it already)."""
        if potential is None:
            potential = self._potential_now()
        reward = (potential - self._potential) / max(len(self.workload), 1)
        self._potential = potential
        done = self._ctx is None
        truncated = done and not bool(self.backend.finished.all())
        info = self._step_info()
        if done:
            results = self.episode_results()
            info["qoe_summary"] = results["qoe_summary"]
            # Plain arrays (not the RequestMetrics object) so infos compare and serialize
            # like any Gymnasium info (check_env compares them between two runs).
            metrics = results["request_metrics"]
            info["request_metrics"] = {
                name: getattr(metrics, name) for name in metrics.__dataclass_fields__
            }
        return self._obs.copy(), float(reward), done and not truncated, truncated, info

    def render(self):
        if self.render_mode == "ansi":
            return render_text(self)
        if self.render_mode == "rgb_array":
            return render_token_curves(self)
        return None

    def close(self) -> None:
        self.backend.close()

    # ---------------------------------------------------------- for adapters
    @property
    def decision_context(self) -> DecisionContext | None:
        """`(candidates, capacity, slot_idx)` of the pending decision; None when done."""
        return self._ctx

    def episode_results(self) -> dict:
        """Per-request metrics and the summary of the episode so far."""
        wl = self.workload
        now = self.backend.now_s
        arrived = wl.arrival_s <= now
        state = self.backend.tracker.state.take(np.flatnonzero(arrived))
        metrics = request_metrics(
            state,
            total_tokens=wl.output_tokens[arrived],
            num_preemptions=self.backend.num_preemptions[arrived],
            finished=self.backend.finished[arrived],
            end_s=now,
        )
        summary = summarize(metrics, start_s=float(wl.arrival_s[0]) if len(wl) else 0.0, end_s=now)
        summary["num_decisions"] = self._num_steps
        return {"qoe_summary": summary, "request_metrics": metrics}

    # ---------------------------------------------------------------- internals
    def _check_action(self, action) -> np.ndarray:
        """The action as float64 slot scores, or a ValueError naming what is wrong.

        Gymnasium leaves invalid actions to each environment; here every entry must be a
        real number in the action space's [-1, 1] (an out-of-range score is rejected,
        not clipped: clipping would silently turn distinct scores into ties), and NaN or
        infinite entries are rejected (they have no order).

        Raises:
            ValueError: For a wrong shape, a dtype that is not real numbers, or an entry
                that is not finite or outside [-1, 1]; naming the expected shape or range.
        """
        k = self.feature_spec.k_slots
        expected = f"shape ({k},) (one score per slot) of real numbers in [-1, 1]"
        try:
            raw = np.asarray(action)
            if raw.dtype.kind not in "biufO":
                raise TypeError(f"dtype {raw.dtype}")
            arr = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"action must be an array of {expected}; got {type(action).__name__} that is "
                f"not real numbers ({exc})"
            ) from None
        if arr.shape != (k,):
            raise ValueError(f"action must have {expected}; got shape {arr.shape}")
        # One min/max pass on the hot path of training; NaN fails both comparisons.
        if not (arr.min() >= -1.0 and arr.max() <= 1.0):
            finite = np.isfinite(arr)
            if not finite.all():
                bad = int(np.argmax(~finite))
                raise ValueError(
                    f"action[{bad}] = {arr[bad]} is not finite; scores must be numbers in [-1, 1]"
                )
            bad = int(np.argmax((arr < -1.0) | (arr > 1.0)))
            raise ValueError(
                f"action[{bad}] = {arr[bad]} is outside the action space [-1, 1] "
                f"(Box(-1, 1, ({k},))); clip or rescale the scores"
            )
        return arr

    def _slot_scores_to_candidates(self, action) -> np.ndarray:
        arr = self._check_action(action)
        candidates, _, slot_idx = self.decision_context
        return scores_from_slots(arr, slot_idx, len(candidates), candidates.arrival_s)

    def _advance(self) -> None:
        """Runs the backend to the next decision point that needs a policy."""
        while True:
            ctx = self.backend.next_decision()
            if ctx is None:
                self._ctx = None
                self._obs = np.zeros(self.feature_spec.obs_dim, dtype=np.float32)
                return
            candidates, capacity = ctx
            if self.skip_uncontested and fits_all(
                candidates.kv_blocks_needed, capacity.total_kv_blocks, capacity.max_num_seqs
            ):
                self.backend.apply(decision_for_all(candidates))
                continue
            self._obs, slot_idx = observe(candidates, capacity, self.feature_spec)
            self._ctx = (candidates, capacity, slot_idx)
            return

    def _potential_now(self) -> float:
        """Sum over arrived requests of the QoE if their missing tokens arrived now.

        Rewards are differences of this potential, so an episode's return is the mean QoE
        over the workload (with unfinished requests at their docs/ANDES.md §1 lower bound).
        """
        wl = self.workload
        now = self.backend.now_s
        tracker = self.backend.tracker
        variant = self.backend.decision_config.qoe_variant
        newly = self.backend.finished & ~self._counted
        n_arrived = int(np.searchsorted(wl.arrival_s, now, side="right"))
        active = np.flatnonzero(~self._counted[:n_arrived])
        if not newly.any():
            if len(active) == 0:
                return self._final_sum
            open_qoe = tracker.qoe_if_completed_at(
                active, now_s=now, total_tokens=wl.output_tokens[active], variant=variant
            )
            return self._final_sum + float(open_qoe.sum())
        # Requests that finished since the last call join the fixed sum; the still open
        # ones are evaluated with them in one pass (each part summed on its own, as two
        # separate calls would, so the float results do not change).
        idx = np.flatnonzero(newly)
        self._counted |= newly
        open_rows = active[~newly[active]]
        rows = np.concatenate((idx, open_rows))
        q = tracker.qoe_if_completed_at(
            rows, now_s=now, total_tokens=wl.output_tokens[rows], variant=variant
        )
        self._final_sum += float(q[: len(idx)].sum())
        if len(open_rows) == 0:
            return self._final_sum
        return self._final_sum + float(q[len(idx) :].sum())

    def _decision_counts(self) -> tuple[int, int]:
        """(candidates, running candidates) of the pending decision point (0, 0 if none)."""
        ctx = self._ctx
        return (0, 0) if ctx is None else (len(ctx[0]), ctx[0].num_running)

    def _step_info(self) -> dict:
        num_candidates, num_running = self._decision_counts()
        return {
            "now_s": self.backend.now_s,
            "num_candidates": num_candidates,
            "num_running": num_running,
        }


def decision_for_all(candidates: Candidates) -> Decision:
    """Selects every candidate, oldest first."""
    return decision_from_order(priority_order(-candidates.arrival_s, candidates), len(candidates))
