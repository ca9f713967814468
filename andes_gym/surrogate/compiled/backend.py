"""`CompiledSurrogateBackend`: the surrogate engine with its step compiled by numba.

Same engine, same rules, same results as `SurrogateBackend` (the Python reference it
subclasses; `tests/test_compiled_engine.py` holds them side by side), at a fraction of the
cost per decision: the state lives in a few arrays (`layout`) that compiled kernels update
in place, and an environment step on slot scores (`step_slots`) is one compiled call:
selection rule, preemption and admission, iterations up to the next contested decision
point, the observation of that point and the reward potential.

Everything a caller of the Python engine reads is still there and current after each call:
the QoE tracker (the kernels update its arrays), the per-request arrays (views into the
state), and `next_decision`'s `Candidates` (built on request by the shared
`make_candidates`, for policies that decide on candidates, not on slot scores).

Not supported (use `SurrogateBackend`): recording every token's time
(`record_token_times`, for the token-curve rendering) and the `on_iteration` hook.
"""

from __future__ import annotations

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity
from andes_gym.core.features import FeatureSpec
from andes_gym.core.selection import Decision
from andes_gym.envs.backend import DecisionConfig
from andes_gym.qoe import VARIANTS
from andes_gym.surrogate.compiled import kernels
from andes_gym.surrogate.compiled.kernels import (
    B_DONE,
    B_SELECTED,
    B_SWAPPED,
    FEATURE_SET,
    LATENCY_LINEAR,
    LATENCY_ROOFLINE,
    NUM_BOOL_ROWS,
    NUM_FLOAT_PARAMS,
    NUM_FLOAT_STATE,
    NUM_INT_PARAMS,
    NUM_INT_ROWS,
    NUM_INT_STATE,
    P_BLOCK_SIZE,
    P_DECISION_OVERHEAD,
    P_ITER_OVERHEAD,
    P_ITERS_PER_DECISION,
    P_K_SLOTS,
    P_LATENCY_KIND,
    P_MAX_SEQS,
    P_MAX_TOKENS,
    P_ORACLE,
    P_SKIP_UNCONTESTED,
    P_SWAP,
    P_TOTAL_BLOCKS,
    P_VARIANT,
    PF_DECISION_S,
    PF_EMPTY_ITER_S,
    PF_L0,
    PF_L1,
    PF_L2,
    PF_L3,
    PF_L4,
    PF_LOOKAHEAD_S,
    PF_PER_CANDIDATE_S,
    PF_PER_PREFILL_SEQ_S,
    PF_PER_REQUEST_S,
    PF_SWAP_S_PER_BLOCK,
    R_ACTIVE,
    R_COMP,
    R_CONTEXT,
    R_HELD,
    R_NEEDED,
    R_ORDER,
    R_OUTPUT,
    R_PREEMPT,
    R_PROMPT,
    R_SCRATCH,
    R_SLOT,
    R_STATUS,
    S_BLOCKS_USED,
    S_N,
    S_NUM_ACTIVE,
    S_NUM_FINISHED,
    S_NUM_ITERATIONS,
    S_NUM_ORDER,
    S_NUM_RUNNING,
    S_NUM_SELECTED,
    S_NUM_SLOTS,
    SF_NOW,
    SF_TIME_LIMIT,
)
from andes_gym.surrogate.latency import LinearLatencyModel, RooflineLatencyModel
from andes_gym.surrogate.profile import EngineProfile
from andes_gym.surrogate.simulator import SurrogateBackend
from andes_gym.workloads.spec import Workload


def check_feature_set(spec: FeatureSpec) -> None:
    """Raises if `spec` is not the feature set the kernels' `observe` implements."""
    have = (spec.name, spec.version, tuple(spec.slot_features), tuple(spec.global_features))
    if have != FEATURE_SET:
        raise ValueError(
            f"the compiled surrogate observes feature set {FEATURE_SET[0]!r} v{FEATURE_SET[1]}, "
            f"the environment asks for {spec.name!r} v{spec.version} (or other feature "
            "names): update andes_gym/surrogate/compiled/kernels.py (observe) with "
            "andes_gym/core/features.py, or use simulator='python'"
        )


def _latency_coefficients(model) -> tuple[int, tuple[float, ...]]:
    if isinstance(model, LinearLatencyModel):
        return LATENCY_LINEAR, (model._base, model._a, model._a2, model._b, model._c)
    if isinstance(model, RooflineLatencyModel):
        return LATENCY_ROOFLINE, (
            model._weight_s,
            model._kv_token_s,
            model._token_s,
            model._pair_s,
            model._overhead_s,
        )
    raise TypeError(f"the compiled engine has no kernel for latency model {type(model).__name__}")


# The tracker's fields (andes_gym.qoe._FLOAT_FIELDS, then e1) as the kernels number them.
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
    from andes_gym.surrogate import simulator

    mirrors = {
        "tracker rows": (
            (*qoe._FLOAT_FIELDS, "e1_s"),
            tuple(name for _, name in sorted((row, name) for name, row in _TRACKER_ROWS.items())),
        ),
        "QoE constants": (
            (qoe.ON_TIME_TOL_S, qoe._COUNT_SLACK, qoe._NO_PREVIOUS_S, qoe._MAX_INV_SLOPE),
            (
                kernels.ON_TIME_TOL_S,
                kernels.COUNT_SLACK,
                kernels.NO_PREVIOUS_S,
                kernels.MAX_INV_SLOPE,
            ),
        ),
        "QoE variants": (tuple(qoe.VARIANTS), ("delay", "delay_fixed", "area")),
        "status codes": (
            (simulator.FUTURE, simulator.WAITING, simulator.RUNNING, simulator.FINISHED),
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
    ints = np.zeros((NUM_INT_ROWS, 1), dtype=np.int64)
    flags = np.zeros((NUM_BOOL_ROWS, 1), dtype=bool)
    qf = np.full((len(_TRACKER_ROWS), 1), np.nan)
    gen = np.zeros(1, dtype=np.int64)
    sti = np.zeros(NUM_INT_STATE, dtype=np.int64)  # n = 0: every entry returns at once
    stf = np.zeros(NUM_FLOAT_STATE)
    pi = np.zeros(NUM_INT_PARAMS, dtype=np.int64)
    pf = np.zeros(NUM_FLOAT_PARAMS)
    obs = np.zeros(obs_dim, dtype=np.float32)
    state = (ints, flags, qf, gen, sti, stf, pi, pf)
    kernels.advance(*state)
    kernels.apply_selected(*state)
    kernels.advance_and_observe(*state, obs)
    kernels.step_slots(*state, obs, np.zeros(1), np.zeros(1))
    kernels.potential(*state[:7])
    _KERNELS_LOADED = True


def _int_state(slot: int):
    return property(lambda self: int(self._sti[slot]))


class CompiledSurrogateBackend(SurrogateBackend):
    """The surrogate engine, compiled (see the module docstring).

    Args:
        profile: The engine profile (loaded).
        decision_config: Look-ahead, QoE variant, oracle flag, iterations per decision.
        feature_spec: The observation `step_slots` and `advance_and_observe` write (its
            K; the oracle feature follows `decision_config.oracle`). Default: K = 64.

    Raises:
        ValueError: If the feature spec is not the feature set the kernels implement.
    """

    def __init__(
        self,
        profile: EngineProfile,
        decision_config: DecisionConfig | None = None,
        feature_spec: FeatureSpec | None = None,
    ) -> None:
        feature_spec = feature_spec or FeatureSpec(
            oracle=bool(decision_config and decision_config.oracle)
        )
        check_feature_set(feature_spec)
        k_slots = feature_spec.k_slots
        super().__init__(profile, decision_config)
        cfg = self.decision_config
        kind, coefficients = _latency_coefficients(self.latency)
        ov = profile.overhead
        pi = np.zeros(NUM_INT_PARAMS, dtype=np.int64)
        pi[P_BLOCK_SIZE] = self._bs
        pi[P_TOTAL_BLOCKS] = self._total_blocks
        pi[P_MAX_SEQS] = self._max_seqs
        pi[P_MAX_TOKENS] = self._max_tokens
        pi[P_ITERS_PER_DECISION] = cfg.iters_per_decision
        pi[P_SWAP] = self._swap
        pi[P_VARIANT] = VARIANTS.index(cfg.qoe_variant)
        pi[P_ORACLE] = cfg.oracle
        pi[P_K_SLOTS] = k_slots
        pi[P_LATENCY_KIND] = kind
        pi[P_ITER_OVERHEAD] = self._iter_overhead
        pi[P_DECISION_OVERHEAD] = self._decision_overhead
        pf = np.zeros(NUM_FLOAT_PARAMS)
        pf[[PF_L0, PF_L1, PF_L2, PF_L3, PF_L4]] = coefficients
        pf[PF_EMPTY_ITER_S] = self._empty_iter_s
        pf[PF_SWAP_S_PER_BLOCK] = self._swap_s_per_block
        pf[PF_LOOKAHEAD_S] = cfg.lookahead_s
        pf[PF_PER_PREFILL_SEQ_S] = ov.per_prefill_seq_s
        pf[PF_PER_REQUEST_S] = ov.per_request_s
        pf[PF_DECISION_S] = ov.decision_s
        pf[PF_PER_CANDIDATE_S] = ov.per_candidate_s
        self._pi, self._pf = pi, pf
        _load_kernels(feature_spec.obs_dim)

    # ------------------------------------------------------------------ lifecycle
    # The per-request arrays the parent's code reads: views into the kernels' state.
    _VIEWS = (
        "_prompt",
        "_output",
        "_comp",
        "_held",
        "_status",
        "_preempt",
        "_done",
        "_swapped",
        "_gen",
    )

    def _reset_arrays(self, n: int) -> None:
        width = max(n, 1)
        self._n = n
        self._ints = np.zeros((NUM_INT_ROWS, width), dtype=np.int64)
        self._flags = np.zeros((NUM_BOOL_ROWS, width), dtype=bool)
        self._sti = np.zeros(NUM_INT_STATE, dtype=np.int64)
        self._sti[S_N] = n
        self._stf = np.zeros(NUM_FLOAT_STATE)
        self._scores = np.zeros(width)
        self._arrival = np.zeros(n)
        self._pending_point = False
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
        self._swapped = self._flags[B_SWAPPED, :n]
        # The tracker's token counts are the generated tokens: one array, updated in place.
        num_tokens = self.tracker._num_tokens
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

    # ------------------------------------------------------- state the parent reads
    _blocks_used = _int_state(S_BLOCKS_USED)
    _num_finished = _int_state(S_NUM_FINISHED)
    _num_iterations = _int_state(S_NUM_ITERATIONS)

    @property
    def _now(self) -> float:
        return float(self._stf[SF_NOW])

    @_now.setter
    def _now(self, value: float) -> None:
        self._stf[SF_NOW] = value

    @property
    def _active(self) -> np.ndarray:
        return self._ints[R_ACTIVE, : self._sti[S_NUM_ACTIVE]]

    @property
    def _order(self) -> np.ndarray:
        return self._ints[R_ORDER, : self._sti[S_NUM_ORDER]]

    # ------------------------------------------------------------ backend contract
    def _kernel_args(self) -> tuple:
        self._pi[P_SKIP_UNCONTESTED] = self.skip_uncontested
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

    def _check_hooks(self) -> None:
        if self.on_iteration is not None:
            raise ValueError(
                "the compiled engine does not call on_iteration; use SurrogateBackend "
                "(SurrogateEnv(simulator='python')) to observe every iteration"
            )

    def next_decision(self) -> tuple[Candidates, Capacity] | None:
        self._check_hooks()
        self._pending_point = bool(kernels.advance(*self._kernel_args()))
        if not self._pending_point:
            return None
        return self.decision_candidates()

    def decision_candidates(self) -> tuple[Candidates, Capacity]:
        """The pending decision point's candidates and capacity (built on request, by the
        same `make_candidates` as the Python engine's)."""
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
        self._pending_point = False
        self._flags[B_SELECTED, :num] = selected
        self._ints[R_SCRATCH, : len(order)] = order
        self._sti[S_NUM_SELECTED] = len(order)
        kernels.apply_selected(*self._kernel_args())

    def sync_tracker(self) -> None:
        """Nothing to do: the kernels deliver every token to the tracker as it is made."""

    # -------------------------------------------------------- fused environment API
    def advance_and_observe(self, obs: np.ndarray) -> bool:
        """Runs to the next decision point and writes its observation into `obs`
        (float32, the environment's layout); False when the episode is over."""
        self._check_hooks()
        self._pending_point = bool(kernels.advance_and_observe(*self._kernel_args(), obs))
        return self._pending_point

    def step_slots(self, slot_scores: np.ndarray, obs: np.ndarray) -> tuple[bool, float]:
        """One environment step on (checked, float64) slot scores: the selection rule,
        the decision applied, the engine run to the next decision point, whose observation
        goes to `obs`. Returns (a decision is pending, the reward potential now)."""
        if not self._pending_point:
            raise RuntimeError("step_slots() needs a pending decision point")
        pending, potential = kernels.step_slots(
            *self._kernel_args(), obs, slot_scores, self._scores
        )
        self._pending_point = bool(pending)
        return self._pending_point, float(potential)

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
