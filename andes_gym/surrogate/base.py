"""`SurrogateEngine`: what the surrogate engine's two implementations share.

The engine's constants from the profile, starting an episode, the candidates of a
decision point (built by the shared `make_candidates`, so policies see exactly what they
see on the live engine) and read-only inspection. The rules that move the engine live in
the subclasses: `CompiledSurrogateBackend` (the engine environments run) and
`SurrogateBackend` (its specification, in plain numpy).

Subclasses keep the per-request state in arrays named `_prompt`, `_output`, `_gen`,
`_comp`, `_held`, `_status`, `_preempt`, `_done` (row i = request i of the workload) and
the scalars `_now`, `_blocks_used`, `_num_iterations`, `_active` (arrived, unfinished
ids, ascending), which the methods here read.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from andes_gym.core.backend import DecisionConfig, EngineBackend, check_workload_fits
from andes_gym.core.candidates import Candidates, Capacity, make_candidates
from andes_gym.qoe import QoETracker
from andes_gym.surrogate.latency import LatencyModel, make_latency_model
from andes_gym.surrogate.profile import EngineProfile
from andes_gym.workloads.spec import Workload

# Request status codes.
FUTURE, WAITING, RUNNING, FINISHED = 0, 1, 2, 3


class SurrogateEngine(EngineBackend):
    """A simulated vLLM-like engine driven one scheduling decision at a time.

    Args:
        profile: The engine profile (already loaded: the backend never reads files).
        decision_config: Look-ahead, QoE variant, oracle flag, iterations per decision.
        record_token_times: Keep every token's delivery time in the tracker
            (`tracker.token_times(i)`, for rendering token curves; costs memory and time).

    Attributes:
        on_iteration: Optional callable `f(backend)` called after every engine iteration
            (for instrumentation; slows the compiled engine down to one call per
            iteration). Not pickled if it is a lambda, so leave it None in environments
            you pickle.
    """

    def __init__(
        self,
        profile: EngineProfile,
        decision_config: DecisionConfig | None = None,
        record_token_times: bool = False,
    ) -> None:
        if not isinstance(profile, EngineProfile):
            raise TypeError(
                f"{type(self).__name__} needs a loaded EngineProfile (see "
                f"andes_gym.surrogate.load_engine_profile), got {type(profile).__name__}"
            )
        self.profile = profile
        self.latency: LatencyModel = make_latency_model(profile)
        self._prefill_s_per_token = self.latency.prefill_s_per_token(
            profile.limits.max_num_batched_tokens
        )
        self.decision_config = decision_config or DecisionConfig()
        self.record_token_times = record_token_times
        self.tracker = QoETracker(capacity=64, record_token_times=record_token_times)
        self.time_limit_s: float | None = None
        # Run uncontested decision points internally (see EngineBackend.skip_uncontested).
        self.skip_uncontested = False
        self.on_iteration: Callable[[SurrogateEngine], None] | None = None
        self._bs = profile.kv.block_size
        self._total_blocks = profile.kv.num_blocks
        self._max_seqs = profile.limits.max_num_seqs
        self._max_tokens = profile.limits.max_num_batched_tokens
        self._swap = profile.preemption.mode == "swap"
        self._swap_s_per_block = 0.0
        if self._swap:
            block_bytes = profile.kv_bytes_per_token * self._bs
            self._swap_s_per_block = block_bytes / (profile.preemption.swap_bw_gb_s * 1e9)
        self._empty_iter_s = max(self.latency.iteration_s(0, 0, 0), 1e-6)
        self._reset_arrays(0)

    def _reset_arrays(self, n: int) -> None:
        """Fresh per-request state for an episode of `n` requests."""
        raise NotImplementedError

    # ------------------------------------------------------------------ lifecycle
    def start(self, workload: Workload, seed: int | None) -> None:
        """Starts an episode on `workload` (the simulator itself draws no random numbers).

        Raises:
            ValueError: If a request can never run on this engine (its prompt + output
                exceeds `max_model_len` or needs more KV blocks than the cache holds).
        """
        check_workload_fits(
            workload,
            self.profile.limits.max_model_len,
            self._total_blocks,
            self._bs,
            f"engine profile {self.profile.name!r}",
            " (lengths.max_prompt_tokens / max_output_tokens)",
        )
        self._reset_arrays(len(workload))
        self._arrival = workload.arrival_s
        self.seed = seed
        self.tracker.reset()
        if len(workload):
            self.tracker.add(workload.arrival_s, workload.ttft_s, workload.tds_tok_s)

    # ------------------------------------------------------------ backend contract
    @property
    def now_s(self) -> float:
        return self._now

    @property
    def finished(self) -> np.ndarray:
        return self._done

    @property
    def num_preemptions(self) -> np.ndarray:
        return self._preempt

    # ---------------------------------------------------------------- inspection
    @property
    def kv_blocks_used(self) -> int:
        """KV blocks held by running requests now."""
        return self._blocks_used

    @property
    def num_iterations(self) -> int:
        """Engine iterations simulated in this episode."""
        return self._num_iterations

    @property
    def generated_tokens(self) -> np.ndarray:
        """Output tokens delivered per workload request."""
        return self._gen

    @property
    def computed_tokens(self) -> np.ndarray:
        """Tokens whose KV is computed per workload request (0 after a recompute preemption)."""
        return self._comp

    @property
    def kv_blocks_held(self) -> np.ndarray:
        """KV blocks held per workload request."""
        return self._held

    @property
    def status(self) -> np.ndarray:
        """Status code per request: 0 not arrived, 1 waiting, 2 running, 3 finished."""
        return self._status

    # ------------------------------------------------------------- decision point
    def _decision_point(
        self, needed: np.ndarray, context: np.ndarray
    ) -> tuple[Candidates, Capacity]:
        """The candidates (the arrived, unfinished requests) and capacity now, given each
        candidate's KV blocks needed to run next and its context (prompt + generated)."""
        act = self._active
        is_running = self._status[act] == RUNNING
        ctx_sel = context[is_running] if is_running.any() else context
        mean_context = float(ctx_sel.sum()) / len(ctx_sel)
        capacity = Capacity(
            total_kv_blocks=self._total_blocks,
            free_kv_blocks=self._total_blocks - self._blocks_used,
            block_size=self._bs,
            max_num_seqs=self._max_seqs,
            iter_latency_s=self.latency.serving_latency_by_batch(
                self._max_seqs, mean_context, len(act)
            ),
            prefill_s_per_token=self._prefill_s_per_token,
        )
        cfg = self.decision_config
        cands = make_candidates(
            now_s=self._now,
            request_id=act,
            is_running=is_running,
            prompt_tokens=self._prompt[act],
            kv_blocks_held=self._held[act],
            kv_blocks_needed=needed,
            num_preemptions=self._preempt[act],
            qoe_state=self.tracker.take_state(act),
            capacity=capacity,
            lookahead_s=cfg.lookahead_s,
            qoe_variant=cfg.qoe_variant,
            remaining_tokens=(self._output[act] - self._gen[act]) if cfg.oracle else None,
        )
        return cands, capacity
