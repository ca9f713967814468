"""`andes_gym/Surrogate-v0`: QoE-aware scheduling on the fast surrogate engine."""

from __future__ import annotations

import warnings
from typing import Any

from andes_gym.core.backend import DecisionConfig
from andes_gym.core.features import FeatureSpec, resolve_k_slots
from andes_gym.envs.episode_workloads import workload_source
from andes_gym.envs.scheduling_env import SchedulingEnv
from andes_gym.surrogate.profile import EngineProfile, load_engine_profile
from andes_gym.surrogate.simulator import SurrogateBackend

SIMULATORS = ("auto", "compiled", "python")


def _compiled_unavailable() -> str | None:
    """Why the compiled surrogate cannot be imported (numba missing or broken), or None."""
    try:
        import andes_gym.surrogate.compiled  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


class _PendingDecision:
    """Marks a decision point of the compiled engine whose candidates are not built yet
    (they are built when `decision_context` is read)."""


class SurrogateEnv(SchedulingEnv):
    """
    ## Description

    An LLM serving engine streams responses to users who read (or listen) at their own
    pace. Each request has a target time to first token (TTFT) and a target token
    delivery speed (TDS); its Quality of Experience (QoE, Andes paper v2, see
    `andes_gym.qoe`) is 1 when every token reaches the user by the time the user wants to
    read it, and falls with the area of lateness. The agent is the engine's scheduler:
    at every decision point it chooses which requests run in the next iteration, under
    the KV-cache and batch-size limits, and so which ones wait or get preempted.

    The engine is a simulated vLLM-like engine (`andes_gym.surrogate`):
    continuous batching at iteration level, chunked prefill under a per-iteration token
    budget, a paged KV cache, preemption by recompute (or swap), and iteration latencies
    from an engine profile (`configs/engines/*.yaml`: roofline models of 7B/13B models on
    A100/H100, or a linear model of the tiny CPU vLLM engine). Requests arrive from a
    seeded draw of a workload preset (`configs/workloads/*.yaml`) or replay a trace.

    One step is one scheduling decision. A decision point comes every
    `iters_per_decision` engine iterations, and when requests arrive at an idle engine.
    With `skip_uncontested=True` (the default) decision points where every candidate fits
    (so every policy would decide the same) are applied without asking the agent: every
    candidate runs, oldest first.

    ## Action Space

    `Box(-1, 1, (k_slots,), float32)`: a score per request slot (higher runs first).
    The environment applies the shared selection rule `andes_gym.core.select`: it walks
    the candidates from the highest score down and selects each one whose KV blocks
    (`kv_blocks_needed`) fit in the cache and for which the batch (`max_num_seqs`) has
    room, skipping those that do not fit; running requests left out are preempted. The
    live vLLM environment and the engine hook use the same rule. Candidates beyond the K
    slots get scores below every slot, oldest first. Scores of empty slots are ignored.
    An action of the wrong shape, not of real numbers, or with an entry that is NaN,
    infinite or outside [-1, 1] raises ValueError (out-of-range scores are rejected, not
    clipped; stable-baselines3 and RLlib clip to the action space before stepping).

    ## Observation Space

    `Box(-10, 10, (16 * k_slots + 7,), float32)`, laid out as
    `[slot features: K x 15, row-major] [slot mask: K] [global features: 7]`
    (`andes_gym.core.features`, feature set `andes_gym.slots` v1). Slots hold the
    candidates (arrived, unfinished requests): running ones by arrival, then waiting ones
    by arrival, the first K. Empty slots are all zeros with mask 0. Every entry is
    clipped to [-10, 10]. Per slot k (index `15 k + f`):

    | f | feature | meaning | min | max |
    |---|---------|---------|-----|-----|
    | 0 | is_running | 1 if it ran in the last iteration (holds KV blocks) | 0 | 1 |
    | 1 | log_age_over_ttft | log1p((now - arrival) / ttft target) | 0 | 10 |
    | 2 | log_tokens_delivered | log1p(tokens delivered) / 8 | 0 | 10 |
    | 3 | lag_over_ttft | (now - ideal time of the next token) / ttft, clipped | -4 | 4 |
    | 4 | log_buffer_tokens | log1p(tokens delivered but not yet read) / 4 | 0 | 10 |
    | 5 | qoe_now | QoE so far (due tokens counted as delivered now) | 0 | 1 |
    | 6 | q_serve | predicted QoE after the look-ahead if served | 0 | 1 |
    | 7 | q_wait | predicted QoE after the look-ahead if it waits | 0 | 1 |
    | 8 | q_gain_x10 | 10 (q_serve - q_wait), clipped | 0 | 4 |
    | 9 | log_prompt_tokens | log1p(prompt tokens) / 8 | 0 | 10 |
    | 10 | kv_needed_frac | KV blocks needed to run / total blocks | 0 | 1 |
    | 11 | kv_held_frac | KV blocks held / total blocks | 0 | 1 |
    | 12 | tds_x_latency | tds x predicted token latency (> 1: engine slower than user) | 0 | 10 |
    | 13 | preemptions | min(preemptions, 4) / 4 | 0 | 1 |
    | 14 | log_remaining_oracle | log1p(true remaining tokens) / 8; 0 unless `oracle` | 0 | 10 |

    | index | feature | meaning | min | max |
    |-------|---------|---------|-----|-----|
    | 15K + k | slot mask | 1 if slot k holds a candidate | 0 | 1 |
    | 16K + 0 | kv_used_frac | KV blocks held / total | 0 | 1 |
    | 16K + 1 | kv_demand_frac | KV blocks needed by all candidates / total, clipped | 0 | 4 |
    | 16K + 2 | running_frac | running requests / max_num_seqs | 0 | 1 |
    | 16K + 3 | log_waiting | log1p(waiting requests) / 8 | 0 | 10 |
    | 16K + 4 | overflow_frac | candidates beyond the K slots / candidates | 0 | 1 |
    | 16K + 5 | latency_growth | latency at the full batch / at batch 1, minus 1, clipped | 0 | 8 |
    | 16K + 6 | max_tds_x_latency | max tds over candidates x latency at the running batch | 0 | 10 |

    The true remaining output length is observed only with `oracle=True`.

    ## Rewards

    A dense, potential-based reward. With `Phi(t)` the sum over the requests arrived by
    engine time `t` of their QoE if every token still missing arrived at `t` (the final
    QoE for finished requests; the docs/ANDES.md §1 lower bound for the others) and N the
    number of requests in the workload,

        r = (Phi(t_after) - Phi(t_before)) / N,   Phi(0) = 0,

    between consecutive decision points. Rewards are unitless (QoE per request); one
    step's reward lies in [-1, 1]. The undiscounted episode return equals the mean QoE
    (of `qoe_variant`) over the workload's requests, unfinished ones at their lower
    bound: for the default `"delay"` variant it is `info["qoe_summary"]["mean_qoe"]` at
    the end. (After a truncation before the last arrival, requests that never arrived
    count 0 in the return but are absent from `qoe_summary`, so the return is
    `mean_qoe * num_requests / N`.)

    ## Starting State

    `reset(seed)` draws the workload from the seed (or replays a fixed trace) and runs the
    engine from time 0 to the first contested decision point. The engine itself is
    deterministic: the same seed gives the same episode.

    ## Episode End

    - Termination: every request of the workload has delivered all its tokens.
    - Truncation: the engine time reaches `time_limit_s` (if set); unfinished requests
      are scored with the lower bound (their missing tokens delivered at the end).
    - If no decision point of an episode is contested, `reset` runs the whole episode and
      the first `step` ends it (its action is checked but has no effect).

    The final step's `info` has `qoe_summary` (`andes_gym.metrics.SUMMARY_FIELDS`) and
    `request_metrics` (per request). Every step's `info` has `now_s`,
    `num_candidates` and `num_running`.

    ## Arguments

    ```python
    import gymnasium as gym
    import andes_gym.envs  # registers the ids
    env = gym.make("andes_gym/Surrogate-v0", workload="bursty_2x", engine="llama7b_a100")
    ```

    - `workload`: a workload preset name, a YAML path, a dict of config fields, a
      `WorkloadConfig` (a fresh seeded draw per episode), a `Workload` (replayed every
      episode), or a list of two or more configs (each episode plays one of them, chosen
      from its seed: training across loads). Default `"bursty_2x"`.
    - `engine`: an engine profile name (`configs/engines/<name>.yaml`), a path, a dict or
      an `EngineProfile`. Default `"llama7b_a100"`.
    - `k_slots`: number of request slots K in the observation and action. Default None:
      the engine's `max_num_seqs` + 64, so every running request and at least 64 waiting
      ones are observed (a smaller K warns: it can hide every waiting request).
    - `lookahead_s`: look-ahead of the q_serve / q_wait predictions, seconds (1.0).
    - `qoe_variant`: `"delay"` (paper v2), `"delay_fixed"` or `"area"` (paper v1); used by
      the predictions and the reward ("delay").
    - `oracle`: observe the true remaining output length (False).
    - `iters_per_decision`: engine iterations per decision (1).
    - `skip_uncontested`: apply uncontested decision points without the agent (True).
    - `time_limit_s`: truncate at this engine time, seconds (None: run to the end).
    - `render_mode`: `"ansi"` (text summary) or `"rgb_array"` (expected vs actual token
      curves of a few requests; records every token's time). Default None.
    - `simulator`: `"compiled"` (the engine and the whole step compiled with numba,
      `andes_gym.surrogate.compiled`), `"python"` (the engine's specification,
      `andes_gym.surrogate.SurrogateBackend`: plain numpy, one iteration at a time, slow;
      for reading and testing), or `"auto"` (compiled). Both give the same episodes (the
      same engine states and observations, rewards within 1e-12; tested side by side).
      Default `"auto"` (which falls back to `"python"`, with a warning, where numba
      cannot be imported).

    Configuration files are read once, at construction; `reset` never touches disk.

    ## Version History

    - v0: initial version (feature set `andes_gym.slots` v1). Later additions that leave
      existing configurations' trajectories unchanged: workload lists (mixtures), and
      engine profiles with an `overhead:` section (the shipped `cpu_tiny_fitted` has one,
      so its dynamics changed when it was recalibrated on 2026-11-22), and the
      `simulator` argument: the compiled engine became the default on 2026-11-22; it plays
      the same episodes as the Python one (observations equal, rewards within 1e-12).
      Later the Python engine became the specification, without its fast paths, and
      `render_mode="rgb_array"` moved to the compiled engine: the same trajectories, with
      QoE values now bit-identical between the two (they used to differ in the last bits,
      from how the fast paths summed a response's tokens).
    """

    def __init__(
        self,
        workload: Any = "bursty_2x",
        engine: str | EngineProfile | dict = "llama7b_a100",
        k_slots: int | None = None,
        lookahead_s: float = 1.0,
        qoe_variant: str = "delay",
        oracle: bool = False,
        iters_per_decision: int = 1,
        skip_uncontested: bool = True,
        time_limit_s: float | None = None,
        render_mode: str | None = None,
        simulator: str = "auto",
    ) -> None:
        if simulator not in SIMULATORS:
            raise ValueError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
        if simulator == "auto":
            simulator = "compiled"
            if reason := _compiled_unavailable():
                warnings.warn(
                    f"the compiled surrogate is unavailable ({reason}); using "
                    "simulator='python', the same episodes much slower",
                    stacklevel=2,
                )
                simulator = "python"
        elif simulator == "compiled" and (reason := _compiled_unavailable()):
            raise ImportError(f"simulator='compiled' needs numba: {reason}")
        self.simulator = simulator
        self.engine_profile = load_engine_profile(engine)
        decision_config = DecisionConfig(
            lookahead_s=lookahead_s,
            qoe_variant=qoe_variant,
            oracle=oracle,
            iters_per_decision=iters_per_decision,
        )
        feature_spec = FeatureSpec(
            k_slots=resolve_k_slots(k_slots, self.engine_profile.limits.max_num_seqs),
            oracle=oracle,
        )
        record_token_times = render_mode == "rgb_array"
        if simulator == "compiled":
            from andes_gym.surrogate.compiled import CompiledSurrogateBackend

            backend = CompiledSurrogateBackend(
                self.engine_profile, decision_config, feature_spec, record_token_times
            )
        else:
            backend = SurrogateBackend(self.engine_profile, decision_config, record_token_times)
        super().__init__(
            backend=backend,
            workload_source=workload_source(workload),
            feature_spec=feature_spec,
            skip_uncontested=skip_uncontested,
            time_limit_s=time_limit_s,
            render_mode=render_mode,
        )

    # ------------------------------------------------ the compiled engine's fast path
    @property
    def _compiled(self) -> bool:
        return self.simulator == "compiled"

    @property
    def decision_context(self):
        if isinstance(self._ctx, _PendingDecision):
            candidates, capacity = self.backend.decision_candidates()
            self._ctx = (candidates, capacity, self.backend.slot_indices())
        return self._ctx

    def step(self, action):
        if not self._compiled or self._ctx is None:
            return super().step(action)
        # One compiled call: selection, the engine to the next decision point, its
        # observation and the reward potential.
        scores = self._check_action(action)
        pending, potential = self.backend.step_slots(scores, self._obs)
        self._num_steps += 1
        self._set_pending(pending)
        return self._transition(potential)

    def _advance(self) -> None:
        if not self._compiled:
            super()._advance()
            return
        self._set_pending(self.backend.advance_and_observe(self._obs))

    def _set_pending(self, pending: bool) -> None:
        if pending:
            self._ctx = _PendingDecision()
        else:
            self._ctx = None
            self._obs[:] = 0.0

    def _potential_now(self) -> float:
        if not self._compiled:
            return super()._potential_now()
        return self.backend.potential()

    def _decision_counts(self) -> tuple[int, int]:
        if not self._compiled:
            return super()._decision_counts()
        return self.backend.decision_counts()
