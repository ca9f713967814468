"""`CompiledSurrogateBackend`: the surrogate engine, compiled by numba. The engine the
environments run.

Its rules are those of the specification `andes_gym.surrogate.simulator.SurrogateBackend`
(`tests/test_compiled_engine.py` holds the two to the same bits); its cost formulas are
`andes_gym.surrogate.costs`, compiled. The state lives in a few arrays (the layout of
`kernels`) that compiled kernels update in place, and an environment step on slot scores
(`step_slots`) is one compiled call: selection rule, preemption and admission, iterations
up to the next contested decision point, the observation of that point and the reward
potential.

Everything a caller of an engine reads is current after each call: the QoE tracker (the
kernels update its arrays, `QoETracker.floats` / `num_tokens`), the per-request arrays
(views into the state), and `next_decision`'s `Candidates` (built on request by the shared
`make_candidates`, for policies that decide on candidates, not on slot scores).

With `record_token_times` or an `on_iteration` hook the kernels run in one-iteration mode
(`kernels.P_ONE_ITERATION`): they return after every iteration, and the backend logs the
tokens it delivered and calls the hook; the trajectory is the same, only slower.

`snapshot` / `restore` copy the episode's state out and back in place, for look-ahead.
"""

from __future__ import annotations

import numpy as np

from andes_gym.core.backend import DecisionConfig
from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import FeatureSpec
from andes_gym.core.selection import Decision
from andes_gym.qoe import VARIANTS
from andes_gym.surrogate import base, costs
from andes_gym.surrogate.base import SurrogateEngine
from andes_gym.surrogate.compiled import kernels
from andes_gym.surrogate.compiled.kernels import (
    B_DONE,
    B_SELECTED,
    R_ACTIVE,
    R_COMP,
    R_CONTEXT,
    R_HELD,
    R_NEEDED,
    R_OUTPUT,
    R_PREEMPT,
    R_PROMPT,
    R_SCRATCH,
    R_SLOT,
    R_STATUS,
    S_BLOCKS_USED,
    S_N,
    S_NUM_ACTIVE,
    S_NUM_ITERATIONS,
    S_NUM_RUNNING,
    S_NUM_SELECTED,
    S_NUM_SLOTS,
    SF_NOW,
    SF_TIME_LIMIT,
)
from andes_gym.surrogate.compiled.snapshot import EngineSnapshot, restore_snapshot, take_snapshot
from andes_gym.surrogate.profile import EngineProfile
from andes_gym.workloads.spec import Workload


def check_feature_set(spec: FeatureSpec) -> None:
    """Raises if `spec` is not the feature set the kernels' `observe` implements."""
    have = (spec.name, spec.version, tuple(spec.slot_features), tuple(spec.global_features))
    if have != kernels.FEATURE_SET:
        name, version = kernels.FEATURE_SET[:2]
        raise ValueError(
            f"the compiled surrogate observes feature set {name!r} v{version}, "
            f"the environment asks for {spec.name!r} v{spec.version} (or other feature "
            "names): update andes_gym/surrogate/compiled/kernels.py (observe) with "
            "andes_gym/core/features.py, or use simulator='python'"
        )


# The latency formulas the kernels dispatch on (`kernels.iteration_s`).
_LATENCY_KINDS = {
    costs.linear_latency_s: kernels.LATENCY_LINEAR,
    costs.roofline_latency_s: kernels.LATENCY_ROOFLINE,
}

# The QoE tracker's rows (`andes_gym.qoe.FLOAT_ROWS`) as the kernels number them.
_TRACKER_ROWS = {
    "arrival_s": kernels.T_ARRIVAL,
    "ttft_s": kernels.T_TTFT,
    "tds_tok_s": kernels.T_TDS,
    "last_consume_s": kernels.T_LAST_CONSUME,
    "sum_consume_s": kernels.T_SUM_CONSUME,
    "sum_delay_s": kernels.T_SUM_DELAY,
    "first_token_s": kernels.T_FIRST_TOKEN,
    "last_token_s": kernels.T_LAST_TOKEN,
    "e1_s": kernels.T_E1,
}


def _check_mirrors() -> None:
    """The kernels copy a few constants and the QoE tracker's row layout (numba freezes
    globals at compile time); this fails loudly, at import, if a source changed."""
    from andes_gym import qoe
    from andes_gym.qoe import definition, prediction

    mirrors = {
        "tracker rows": (
            tuple(qoe.FLOAT_ROWS),
            tuple(name for _, name in sorted((row, name) for name, row in _TRACKER_ROWS.items())),
        ),
        "QoE constants": (
            (
                qoe.ON_TIME_TOL_S,
                definition._COUNT_SLACK,
                prediction._NO_PREVIOUS_S,
                prediction._MAX_INV_SLOPE,
            ),
            (
                kernels.ON_TIME_TOL_S,
                kernels.COUNT_SLACK,
                kernels.NO_PREVIOUS_S,
                kernels.MAX_INV_SLOPE,
            ),
        ),
        "QoE variants": (tuple(qoe.VARIANTS), ("delay", "delay_fixed", "area")),
        "status codes": (
            (base.FUTURE, base.WAITING, base.RUNNING, base.FINISHED),
            (kernels.FUTURE, kernels.WAITING, kernels.RUNNING, kernels.FINISHED),
        ),
    }
    for what, (source, copy) in mirrors.items():
        if source != copy:
            raise ImportError(
                f"andes_gym/surrogate/compiled/kernels.py mirrors {what} as {copy}, the "
                f"source now says {source}: update the kernels"
            )


_check_mirrors()
_KERNELS_LOADED = False


def _load_kernels(obs_dim: int) -> None:
    """Loads (or, the first time on a machine, compiles) every kernel entry point once per
    process, on an empty episode, so that `reset` and `step` never wait for numba's disk
    cache or compiler (construction may read files; reset must not)."""
    global _KERNELS_LOADED
    if _KERNELS_LOADED:
        return
    ints = np.zeros((kernels.NUM_INT_ROWS, 1), dtype=np.int64)
    flags = np.zeros((kernels.NUM_BOOL_ROWS, 1), dtype=bool)
    qf = np.full((len(_TRACKER_ROWS), 1), np.nan)
    gen = np.zeros(1, dtype=np.int64)
    sti = np.zeros(kernels.NUM_INT_STATE, dtype=np.int64)  # n = 0: every entry returns at once
    stf = np.zeros(kernels.NUM_FLOAT_STATE)
    pi = np.zeros(kernels.NUM_INT_PARAMS, dtype=np.int64)
    pf = np.zeros(kernels.NUM_FLOAT_PARAMS)
    obs = np.zeros(obs_dim, dtype=np.float32)
    state = (ints, flags, qf, gen, sti, stf, pi, pf)
    kernels.advance(*state)
    kernels.apply_selected(*state)
    kernels.run_iterations(*state)
    kernels.advance_and_observe(*state, obs)
    kernels.step_slots(*state, obs, np.zeros(1), np.zeros(1))
    kernels.potential(*state[:7])
    _KERNELS_LOADED = True


def _int_state(slot: int):
    return property(lambda self: int(self._sti[slot]))


class CompiledSurrogateBackend(SurrogateEngine):
    """The surrogate engine, compiled (see the module docstring).

    Args:
        profile: The engine profile (loaded).
        decision_config: Look-ahead, QoE variant, oracle flag, iterations per decision.
        feature_spec: The observation `step_slots` and `advance_and_observe` write (its
            K; the oracle feature follows `decision_config.oracle`). Default: K = 64.
        record_token_times: Keep every token's delivery time in the tracker
            (`tracker.token_times(i)`, for rendering token curves; one kernel call per
            iteration).

    Raises:
        ValueError: If the feature spec is not the feature set the kernels implement.
    """

    def __init__(
        self,
        profile: EngineProfile,
        decision_config: DecisionConfig | None = None,
        feature_spec: FeatureSpec | None = None,
        record_token_times: bool = False,
    ) -> None:
        feature_spec = feature_spec or FeatureSpec(
            oracle=bool(decision_config and decision_config.oracle)
        )
        check_feature_set(feature_spec)
        super().__init__(profile, decision_config, record_token_times)
        cfg = self.decision_config
        ov = profile.overhead
        kind = _LATENCY_KINDS.get(self.latency.formula)
        if kind is None:
            raise TypeError(
                f"the compiled engine has no kernel for latency model {type(self.latency).__name__}"
            )
        pi = np.zeros(kernels.NUM_INT_PARAMS, dtype=np.int64)
        pi[kernels.P_BLOCK_SIZE] = self._bs
        pi[kernels.P_TOTAL_BLOCKS] = self._total_blocks
        pi[kernels.P_MAX_SEQS] = self._max_seqs
        pi[kernels.P_MAX_TOKENS] = self._max_tokens
        pi[kernels.P_ITERS_PER_DECISION] = cfg.iters_per_decision
        pi[kernels.P_SWAP] = self._swap
        pi[kernels.P_VARIANT] = VARIANTS.index(cfg.qoe_variant)
        pi[kernels.P_ORACLE] = cfg.oracle
        pi[kernels.P_K_SLOTS] = feature_spec.k_slots
        pi[kernels.P_LATENCY_KIND] = kind
        pi[kernels.P_ITER_OVERHEAD] = ov.per_iteration
        pi[kernels.P_DECISION_OVERHEAD] = ov.per_decision
        pf = np.zeros(kernels.NUM_FLOAT_PARAMS)
        latency_slots = [kernels.PF_L0, kernels.PF_L1, kernels.PF_L2, kernels.PF_L3, kernels.PF_L4]
        pf[latency_slots] = self.latency.coefficients
        pf[kernels.PF_EMPTY_ITER_S] = self._empty_iter_s
        pf[kernels.PF_SWAP_S_PER_BLOCK] = self._swap_s_per_block
        pf[kernels.PF_LOOKAHEAD_S] = cfg.lookahead_s
        pf[kernels.PF_PER_PREFILL_SEQ_S] = ov.per_prefill_seq_s
        pf[kernels.PF_PER_REQUEST_S] = ov.per_request_s
        pf[kernels.PF_DECISION_S] = ov.decision_s
        pf[kernels.PF_PER_CANDIDATE_S] = ov.per_candidate_s
        self._pi, self._pf = pi, pf
        _load_kernels(feature_spec.obs_dim)

    # ------------------------------------------------------------------ lifecycle
    # The per-request arrays `SurrogateEngine` reads: views into the kernels' state.
    _VIEWS = ("_prompt", "_output", "_comp", "_held", "_status", "_preempt", "_done", "_gen")

    def _reset_arrays(self, n: int) -> None:
        width = max(n, 1)
        self._n = n
        self._ints = np.zeros((kernels.NUM_INT_ROWS, width), dtype=np.int64)
        self._flags = np.zeros((kernels.NUM_BOOL_ROWS, width), dtype=bool)
        self._sti = np.zeros(kernels.NUM_INT_STATE, dtype=np.int64)
        self._sti[S_N] = n
        self._stf = np.zeros(kernels.NUM_FLOAT_STATE)
        self._scores = np.zeros(width)
        self._arrival = np.zeros(n)
        self._pending_point = False
        self._tokens_logged = np.zeros(n, dtype=np.int64)  # per request, in the token log
        self._bind_views()

    def _bind_views(self) -> None:
        n = self._n
        self._prompt = self._ints[R_PROMPT, :n]
        self._output = self._ints[R_OUTPUT, :n]
        self._comp = self._ints[R_COMP, :n]
        self._held = self._ints[R_HELD, :n]
        self._status = self._ints[R_STATUS, :n]
        self._preempt = self._ints[R_PREEMPT, :n]
        self._done = self._flags[B_DONE, :n]
        # The tracker's token counts are the generated tokens: one array, updated in place.
        num_tokens = self.tracker.num_tokens
        self._gen = num_tokens[:n] if len(num_tokens) >= n else np.zeros(n, dtype=np.int64)

    def __getstate__(self) -> dict:
        # Views would pickle as detached copies; they are bound again on unpickling.
        state = self.__dict__.copy()
        for name in self._VIEWS:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._bind_views()

    def start(self, workload: Workload, seed: int | None) -> None:
        super().start(workload, seed)
        n = len(workload)
        self._ints[R_PROMPT, :n] = workload.prompt_tokens
        self._ints[R_OUTPUT, :n] = workload.output_tokens
        self._bind_views()

    # ------------------------------------------------------- state the base reads
    _blocks_used = _int_state(S_BLOCKS_USED)
    _num_iterations = _int_state(S_NUM_ITERATIONS)

    @property
    def _now(self) -> float:
        return float(self._stf[SF_NOW])

    @property
    def _active(self) -> np.ndarray:
        return self._ints[R_ACTIVE, : self._sti[S_NUM_ACTIVE]]

    # ---------------------------------------------------------- snapshot / restore
    def snapshot(self, out: EngineSnapshot | None = None) -> EngineSnapshot:
        """Copies the episode's mutable state (for look-ahead: play on, then `restore`).

        The state is every array the kernels change (`_ints`, `_flags`, `_sti`, `_stf`),
        the QoE tracker's arrays (`tracker.floats`, `tracker.num_tokens`), the score work
        array and the pending-decision flag; nothing else changes during an episode (the
        constants `_pi` / `_pf` are set at construction; the time limit,
        `skip_uncontested` and one-iteration mode are written into them on every call).
        Costs a few memcpys: about 10 us for a 1,000-request episode.

        Args:
            out: A snapshot of this episode to overwrite instead of allocating a new one
                (its arrays are reused; for planners that snapshot at every node).

        Returns:
            The snapshot. It stays valid for this episode (until the next `start`), can be
            restored any number of times, and is not changed by later play.
        """
        return take_snapshot(self, out)

    def restore(self, snapshot: EngineSnapshot) -> None:
        """Puts the engine back in the state `snapshot` recorded, in place.

        The arrays are overwritten, not replaced, so the views bound to them (the
        per-request arrays, the tracker's fields, `_gen`) and any reference a caller holds
        to `_ints`, `_sti`, `tracker.floats`, ... stay valid. After it, the engine plays
        on exactly (bit for bit) as it did from the snapshot: the pending decision point,
        if any, is pending again (`decision_candidates()`, `apply`, `step_slots`). What was
        observed meanwhile is not undone: the token log (`record_token_times`) keeps the
        tokens of the abandoned play, and `on_iteration` was called for its iterations.

        Raises:
            ValueError: If the snapshot's arrays do not fit this backend (a snapshot of
                another episode size); a snapshot of another episode of the same size is
                not detected and restores that episode's state.
        """
        restore_snapshot(self, snapshot)
        if self.record_token_times:  # log only tokens delivered from here on
            self._tokens_logged[:] = self._gen

    # ------------------------------------------------------------ backend contract
    def _kernel_args(self) -> tuple:
        self._pi[kernels.P_SKIP_UNCONTESTED] = self.skip_uncontested
        self._pi[kernels.P_ONE_ITERATION] = self._one_iteration
        limit = self.time_limit_s
        self._stf[SF_TIME_LIMIT] = np.inf if limit is None else float(limit)
        tracker = self.tracker
        return (
            self._ints,
            self._flags,
            tracker._floats,
            tracker._num_tokens,
            self._sti,
            self._stf,
            self._pi,
            self._pf,
        )

    @property
    def _one_iteration(self) -> bool:
        """Whether someone watches every iteration (then the kernels return after each)."""
        return self.record_token_times or self.on_iteration is not None

    def _after_iteration(self) -> None:
        """Between two iterations in one-iteration mode: logs the tokens the last one
        delivered (all at its end, which is now) and calls the hook."""
        if self.record_token_times:
            counts = self._gen
            fresh = np.flatnonzero(counts != self._tokens_logged)
            if len(fresh):
                self.tracker.log_tokens(fresh, self._now)
                self._tokens_logged[fresh] = counts[fresh]
        if self.on_iteration is not None:
            self.on_iteration(self)

    def _advance(self) -> bool:
        """Runs to the next decision point (True) or the episode's end (False)."""
        args = self._kernel_args()
        code = kernels.advance(*args)
        while code == kernels.ITERATED:
            self._after_iteration()
            code = kernels.advance(*args)
        self._pending_point = code == kernels.DECISION
        return self._pending_point

    def _apply_selected(self) -> None:
        """Applies the decision the kernels' state holds (R_SCRATCH, B_SELECTED)."""
        self._pending_point = False
        args = self._kernel_args()
        kernels.apply_selected(*args)
        if self._one_iteration:
            self._after_iteration()
            while kernels.run_iterations(*args):
                self._after_iteration()

    def next_decision(self) -> tuple[Candidates, Capacity] | None:
        if not self._advance():
            return None
        return self.decision_candidates()

    def decision_candidates(self) -> tuple[Candidates, Capacity]:
        """The pending decision point's candidates and capacity (built on request, by the
        same `make_candidates` as the specification's)."""
        if not self._pending_point:
            raise RuntimeError("no pending decision point")
        num = int(self._sti[S_NUM_ACTIVE])
        return self._decision_point(
            self._ints[R_NEEDED, :num].copy(), self._ints[R_CONTEXT, :num].copy()
        )

    def apply(self, decision: Decision) -> None:
        if not self._pending_point:
            raise RuntimeError("apply() needs a pending decision point from next_decision()")
        num = int(self._sti[S_NUM_ACTIVE])
        selected = np.asarray(decision.selected, dtype=bool)
        if selected.shape != (num,):
            raise ValueError(f"decision.selected must have shape ({num},), got {selected.shape}")
        order = np.asarray(decision.order, dtype=np.int64)
        self._flags[B_SELECTED, :num] = selected
        self._ints[R_SCRATCH, : len(order)] = order
        self._sti[S_NUM_SELECTED] = len(order)
        self._apply_selected()

    # -------------------------------------------------------- fused environment API
    def advance_and_observe(self, obs: np.ndarray) -> bool:
        """Runs to the next decision point and writes its observation into `obs`
        (float32, the environment's layout); False when the episode is over."""
        if not self._one_iteration:
            self._pending_point = bool(kernels.advance_and_observe(*self._kernel_args(), obs))
        elif self._advance():
            ints, _, qf, gen, sti, stf, pi, pf = self._kernel_args()
            kernels.observe(ints, qf, gen, sti, stf, pi, pf, obs)
        return self._pending_point

    def step_slots(self, slot_scores: np.ndarray, obs: np.ndarray) -> tuple[bool, float]:
        """One environment step on (checked, float64) slot scores: the selection rule,
        the decision applied, the engine run to the next decision point, whose observation
        goes to `obs`. Returns (a decision is pending, the reward potential now)."""
        if not self._pending_point:
            raise RuntimeError("step_slots() needs a pending decision point")
        if not self._one_iteration:
            pending, potential = kernels.step_slots(
                *self._kernel_args(), obs, slot_scores, self._scores
            )
            self._pending_point = bool(pending)
            return self._pending_point, float(potential)
        kernels.select_from_slots(
            self._ints, self._flags, self._sti, self._pi, slot_scores, self._scores
        )
        self._apply_selected()
        return self.advance_and_observe(obs), self.potential()

    def potential(self) -> float:
        """The reward potential now (`SchedulingEnv._potential_now`)."""
        return float(kernels.potential(self._ints, self._flags, *self._kernel_args()[2:7]))

    def slot_indices(self) -> np.ndarray:
        """Candidate index of each filled slot of the last observation."""
        return self._ints[R_SLOT, : self._sti[S_NUM_SLOTS]].copy()

    def decision_counts(self) -> tuple[int, int]:
        """(candidates, running candidates) at the pending decision point."""
        if not self._pending_point:
            return 0, 0
        return int(self._sti[S_NUM_ACTIVE]), int(self._sti[S_NUM_RUNNING])
