"""The surrogate engine: an iteration-level continuous-batching simulator like vLLM's V1 engine.

Mechanism only (KV accounting, chunked prefill, preemption, timing); which requests run is
the decision's business (`andes_gym.core.select`, applied by `apply`).

Per request the simulator tracks `computed` (tokens whose KV is in the cache) and
`generated` (output tokens delivered). A request whose context `prompt + generated` is not
fully computed is *in prefill*: each iteration it computes a chunk under the token budget,
and the iteration that completes its context produces its next token (the first token for
a fresh request; the next one after a recompute preemption). A request in *decode*
computes one token per iteration and produces one. So, uniformly, a request with
`pending = prompt + generated - computed` tokens to compute delivers a token in the
iteration that brings `pending` to 0.

One iteration:

1. Running requests in the decision's order take their tokens from the
   `max_num_batched_tokens` budget: decoding ones one token each, prefilling ones a chunk
   of what is left. KV blocks grow to `ceil((computed + new) / block_size)`; if the cache
   would overflow, the running request lowest in the order is preempted (as vLLM does).
2. Selected waiting requests are admitted in the decision's order while a batch seat,
   budget and free blocks remain (stopping at the first that does not get them; it stays
   queued for the next iteration of the same decision).
3. The latency model prices the iteration (plus any swap transfer, and the profile's
   serving overhead: per request computing prefill tokens and per request in the engine);
   tokens produced are delivered at its end; finished requests free their blocks.
   A decision handed to a policy (`apply`) first costs the overhead's `decision_s` and
   `per_candidate_s` (building it), as the scheduler hook's does on the live engine.

Arrivals join the candidates at iteration boundaries; an idle engine jumps to the next
arrival. Time always advances: a decision that runs nothing costs an empty iteration.

Speed: per-request state lives in preallocated numpy arrays indexed by request id; the
running set is an index array. Runs of iterations in which every selected request decodes
(after an optional first "head" iteration that completes all pending prefills at once)
are simulated in closed form ("segments"): latencies vectorized, requests leaving the
batch as they finish, KV growth checked in closed form, token deliveries handed to the
tracker in bulk (`pending_tokens`). A segment ends at the next arrival, decision boundary,
possible KV overflow or time limit. Segments are exact: they give the same times, bit for
bit, as iterating one by one (`fast_forward=False`).

Requests that can never run (prompt + output above `max_model_len`, or more KV blocks than
the cache holds) are rejected by `start` with a ValueError naming the request, rather than
silently clipped (clipping would change the workload's QoE) or left to hang.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity, kv_blocks_needed, make_candidates
from andes_gym.core.selection import Decision, fits_all
from andes_gym.envs.backend import DecisionConfig, EngineBackend
from andes_gym.qoe import QoETracker
from andes_gym.surrogate.latency import LatencyModel, make_latency_model
from andes_gym.surrogate.pending_tokens import PendingTokens
from andes_gym.surrogate.profile import EngineProfile
from andes_gym.workloads.spec import Workload

# Request status codes.
FUTURE, WAITING, RUNNING, FINISHED = 0, 1, 2, 3

# Longest closed-form segment; bounds the temporary arrays of one segment.
_MAX_SEGMENT_ITERS = 4096
# Auto-applied segments are cut to a guess of where they stop (iterations to the next
# arrival times this margin, plus two), but never below this many iterations.
_MIN_SEGMENT_ITERS = 4
_STOP_GUESS_MARGIN = 1.25


class SurrogateBackend(EngineBackend):
    """A simulated vLLM-like engine driven one scheduling decision at a time.

    Args:
        profile: The engine profile (already loaded: the backend never reads files).
        decision_config: Look-ahead, QoE variant, oracle flag, iterations per decision.
        record_token_times: Keep every token's delivery time in the tracker (for
            rendering token curves and tests; costs memory).
        fast_forward: Simulate pure-decode stretches in closed form (exact; turn off
            only to observe every single iteration through `on_iteration`).

    Attributes:
        on_iteration: Optional callable `f(backend)` called after every iteration (or
            every fast-forwarded segment); for instrumentation in tests. Not pickled if it
            is a lambda, so leave it None in environments you pickle.
    """

    def __init__(
        self,
        profile: EngineProfile,
        decision_config: DecisionConfig | None = None,
        record_token_times: bool = False,
        fast_forward: bool = True,
    ) -> None:
        if not isinstance(profile, EngineProfile):
            raise TypeError(
                "SurrogateBackend needs a loaded EngineProfile (see "
                f"andes_gym.surrogate.load_engine_profile), got {type(profile).__name__}"
            )
        self.profile = profile
        self.latency: LatencyModel = make_latency_model(profile)
        self._prefill_s_per_token = self.latency.prefill_s_per_token(
            profile.limits.max_num_batched_tokens
        )
        self.decision_config = decision_config or DecisionConfig()
        self.record_token_times = record_token_times
        self.fast_forward = fast_forward
        self.tracker = QoETracker(capacity=64, record_token_times=record_token_times)
        self.time_limit_s: float | None = None
        # Run uncontested decision points internally (see EngineBackend.skip_uncontested).
        self.skip_uncontested = False
        self.on_iteration: Callable[[SurrogateBackend], None] | None = None
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
        ov = profile.overhead
        self._iter_overhead = ov.per_iteration
        self._per_prefill_seq_s = ov.per_prefill_seq_s
        self._per_request_s = ov.per_request_s
        self._decision_overhead = ov.per_decision
        self._workload_name = ""
        self._reset_arrays(0)

    # ------------------------------------------------------------------ lifecycle
    def _reset_arrays(self, n: int) -> None:
        self._n = n
        self._arrival = np.zeros(n)
        self._prompt = np.zeros(n, dtype=np.int64)
        self._output = np.zeros(n, dtype=np.int64)
        self._gen = np.zeros(n, dtype=np.int64)
        self._comp = np.zeros(n, dtype=np.int64)
        self._held = np.zeros(n, dtype=np.int64)
        self._status = np.zeros(n, dtype=np.int8)
        self._swapped = np.zeros(n, dtype=bool)
        self._preempt = np.zeros(n, dtype=np.int64)
        self._done = np.zeros(n, dtype=bool)
        self._now = 0.0
        self._next_arrival = 0
        self._active = np.zeros(0, dtype=np.int64)  # arrived, unfinished; ascending ids
        self._order = np.zeros(0, dtype=np.int64)  # selected ids, highest priority first
        self._blocks_used = 0
        self._num_finished = 0
        self._iters_left = 0
        self._swap_debt_s = 0.0  # swap-out time charged to the next iteration
        self._num_iterations = 0
        self._pending = PendingTokens(n, self.tracker)  # tokens produced, not yet in the tracker
        self._cands: Candidates | None = None

    def start(self, workload: Workload, seed: int | None) -> None:
        """Starts an episode on `workload` (the simulator itself draws no random numbers).

        Raises:
            ValueError: If a request can never run on this engine (its prompt + output
                exceeds `max_model_len` or needs more KV blocks than the cache holds).
        """
        self._check_fits(workload)
        self._reset_arrays(len(workload))
        self._workload_name = workload.name
        self._arrival = workload.arrival_s
        self._prompt = workload.prompt_tokens
        self._output = workload.output_tokens
        self.seed = seed
        self.tracker.reset()
        if len(workload):
            self.tracker.add(workload.arrival_s, workload.ttft_s, workload.tds_tok_s)

    def _check_fits(self, workload: Workload) -> None:
        total_tokens = workload.prompt_tokens + workload.output_tokens
        max_len = self.profile.limits.max_model_len
        blocks = -(-total_tokens // self._bs)
        for bad, limit in (
            (total_tokens > max_len, f"max_model_len={max_len} tokens"),
            (
                blocks > self._total_blocks,
                f"the KV cache's {self._total_blocks} blocks of {self._bs} tokens",
            ),
        ):
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"request {i} of workload {workload.name!r} (prompt "
                    f"{workload.prompt_tokens[i]} + output {workload.output_tokens[i]} tokens) "
                    f"exceeds {limit} of engine profile {self.profile.name!r} "
                    f"({int(bad.sum())} such requests); clip the workload's lengths "
                    "(lengths.max_prompt_tokens / max_output_tokens) or use a larger engine"
                )

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

    def next_decision(self) -> tuple[Candidates, Capacity] | None:
        limit = self.time_limit_s
        while True:
            self._cands = None
            if self._num_finished == self._n:
                return None
            if limit is not None and self._now >= limit:
                self.sync_tracker()
                return None
            self._admit_arrivals()
            if len(self._active) == 0:
                t_next = float(self._arrival[self._next_arrival])
                if limit is not None and t_next >= limit:
                    self._now = max(self._now, float(limit))
                    self.sync_tracker()
                    return None
                self._now = max(self._now, t_next)
                continue
            needed, context = self._blocks_and_context(self._active)
            if self.skip_uncontested and self._uncontested(needed):
                self._order = self._active
                self._iters_left = self.decision_config.iters_per_decision
                self._run_iterations(extend=True)
                continue
            self.sync_tracker()
            return self._decision_point(needed, context)

    def apply(self, decision: Decision) -> None:
        cands = self._cands
        if cands is None:
            raise RuntimeError("apply() needs a pending decision point from next_decision()")
        self._cands = None
        selected = np.asarray(decision.selected, dtype=bool)
        if selected.shape != (len(cands),):
            raise ValueError(
                f"decision.selected must have shape ({len(cands)},), got {selected.shape}"
            )
        ids = cands.request_id
        to_preempt = ids[cands.is_running & ~selected]
        if len(to_preempt):
            self._preempt_requests(to_preempt)
        self._order = ids[np.asarray(decision.order, dtype=np.int64)]
        self._iters_left = self.decision_config.iters_per_decision
        if self._decision_overhead:  # building the decision delays the next iteration
            ov = self.profile.overhead
            self._now += ov.decision_s + ov.per_candidate_s * len(cands)
        if len(self._order) == 0:
            self._empty_iteration()
        else:
            # One iteration, then the flush below: its tokens may skip the pending log.
            self._pending.deliver_single = self._iters_left == 1
            try:
                self._run_iterations(extend=False)
            finally:
                self._pending.deliver_single = False
        self.sync_tracker()

    def sync_tracker(self) -> None:
        """Hands every token produced so far to the tracker.

        The simulator reports tokens lazily (see `pending_tokens`); the tracker is current
        whenever `next_decision` or `apply` returns. Call this before reading it elsewhere
        (e.g. from `on_iteration`).
        """
        self._pending.flush_all(self._active)

    # ---------------------------------------------------------------- inspection
    @property
    def kv_blocks_used(self) -> int:
        """KV blocks held by running requests now."""
        return self._blocks_used

    @property
    def num_iterations(self) -> int:
        """Engine iterations simulated in this episode."""
        return self._num_iterations

    def running_ids(self) -> np.ndarray:
        """Ids of the requests that hold KV blocks and run (decision order)."""
        return self._order[self._status[self._order] == RUNNING]

    def waiting_ids(self) -> np.ndarray:
        """Ids of arrived requests that are not running (ascending)."""
        return self._active[self._status[self._active] == WAITING]

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

    # ---------------------------------------------------------------- internals
    def _admit_arrivals(self) -> None:
        lo = self._next_arrival
        if lo >= self._n or self._arrival[lo] > self._now:
            return
        hi = int(np.searchsorted(self._arrival, self._now, side="right"))
        new = np.arange(lo, hi, dtype=np.int64)
        self._status[new] = WAITING
        self._active = np.concatenate((self._active, new))
        self._next_arrival = hi

    def _blocks_needed(self, ids: np.ndarray) -> np.ndarray:
        """KV blocks each request holds if it runs next (the knapsack weight).

        Decoding: its context plus the token it computes next. In prefill (fresh, recompute-
        preempted or mid-chunk): its full (re-)prefill context plus the first decode token.
        """
        return self._blocks_and_context(ids)[0]

    def _blocks_and_context(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_blocks_needed(ids)` and the context `prompt + generated` it is computed from."""
        gen = self._gen[ids]
        p_plus_g = self._prompt[ids] + gen
        return kv_blocks_needed(p_plus_g, self._comp[ids], gen, self._bs), p_plus_g

    def _uncontested(self, needed: np.ndarray) -> bool:
        """The test SchedulingEnv applies: every candidate fits, so every policy agrees."""
        return fits_all(needed, self._total_blocks, self._max_seqs)

    def _decision_point(
        self, needed: np.ndarray, context: np.ndarray
    ) -> tuple[Candidates, Capacity]:
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
        self._cands = cands
        return cands, capacity

    def _preempt_requests(self, ids: np.ndarray) -> None:
        """Moves running requests back to waiting, freeing their KV blocks."""
        self._pending.flush(ids)
        held = self._held[ids]
        self._blocks_used -= int(held.sum())
        if self._swap:
            # The KV moves to host memory; the transfer delays the next iteration.
            self._swapped[ids] = True
            self._swap_debt_s += float(held.sum()) * self._swap_s_per_block
        else:
            self._comp[ids] = 0
        self._held[ids] = 0
        self._status[ids] = WAITING
        self._preempt[ids] += 1

    def _finish(self, ids: np.ndarray) -> None:
        self._pending.flush(ids)
        self._status[ids] = FINISHED
        self._done[ids] = True
        self._blocks_used -= int(self._held[ids].sum())
        self._held[ids] = 0
        self._num_finished += len(ids)
        self._order = self._order[self._status[self._order] != FINISHED]
        self._active = self._active[self._status[self._active] != FINISHED]

    def _run_iterations(self, extend: bool) -> None:
        """Runs the current decision's remaining iterations.

        With `extend` (an uncontested decision the backend made itself), a closed-form
        segment may run on through later decision boundaries at which the decision would
        be the same (no arrival, still uncontested, no time limit reached).
        """
        while self._iters_left > 0 and len(self._order):
            plan = self._segment_plan() if self.fast_forward else None
            if plan is None or not self._decode_segment(extend, *plan):
                self._iteration()
        if not len(self._order):
            self._iters_left = 0

    def _segment_plan(self) -> tuple[np.ndarray, float | None, np.ndarray] | None:
        """Whether the next iterations can run as a closed-form segment, and how.

        A segment needs every selected request to decode from its second iteration on:
        either all are running decoders, or the first iteration (the "head") can complete
        every pending prefill at once (all fit in the seats, the token budget and the
        cache, so `_iteration` would admit and finish them all). Swap transfers go
        through the general path.

        Returns:
            None, or `(base, head_s, gen)`: per request `base + j + 1` is its context
            after segment iteration j; `head_s` is the head iteration's latency (None when
            all were decoding already); `gen` its tokens generated so far.
        """
        if self._swap_debt_s != 0.0:
            return None
        order = self._order
        comp = self._comp[order]
        gen = self._gen[order]
        pending = self._prompt[order] + gen - comp
        decoding = (pending == 1) & (gen > 0)
        running = self._status[order] == RUNNING
        if decoding.all() and running.all():
            return comp, None, gen
        if len(order) > self._max_seqs or int(pending.sum()) > self._max_tokens:
            return None
        if self._swap and self._swapped[order].any():
            return None
        full = comp + pending  # every context computed after the head
        if int(((full + (self._bs - 1)) // self._bs).sum()) > self._total_blocks:
            return None
        num_decode = int(np.count_nonzero(decoding))
        prefill_tokens = int(pending.sum()) - num_decode
        head_s = self.latency.iteration_s(prefill_tokens, num_decode, int(full.sum()))
        if self._iter_overhead:
            head_s += self._overhead_s(len(order) - num_decode, len(self._active))
        return full - 1, head_s, gen

    def _empty_iteration(self) -> None:
        """An iteration that runs nothing: time still advances (never hang)."""
        self._now += self._empty_iter_s + self._swap_debt_s
        self._swap_debt_s = 0.0
        self._num_iterations += 1
        self._iters_left = 0
        if self.on_iteration is not None:
            self.on_iteration(self)

    # ------------------------------------------------------------ one iteration
    def _plan_running(self, run: np.ndarray) -> tuple[np.ndarray, int]:
        """New tokens per running request under the token budget, and the budget left."""
        pending = self._prompt[run] + self._gen[run] - self._comp[run]
        alloc = np.ones(len(run), dtype=np.int64)
        multi = np.flatnonzero(pending > 1)
        # Decoding requests take one token each first (the profile guarantees the budget
        # covers max_num_seqs of them); prefill chunks share the rest in order.
        budget = self._max_tokens - (len(run) - len(multi))
        if len(multi):
            want = pending[multi]
            before = np.cumsum(want) - want
            alloc[multi] = np.clip(budget - before, 0, want)
            budget -= int(alloc[multi].sum())
        return alloc, budget

    def _iteration(self) -> None:
        """One engine iteration under the current decision (the general path)."""
        bs = self._bs
        order = self._order
        is_run = self._status[order] == RUNNING
        run = order[is_run]
        while True:
            alloc, budget = self._plan_running(run)
            grow = int(((self._comp[run] + alloc + (bs - 1)) // bs - self._held[run]).sum())
            if self._blocks_used + grow <= self._total_blocks or not len(run):
                break
            # KV overflow: preempt the running request lowest in the decision's order.
            victim = run[-1:]
            self._preempt_requests(victim)
            self._order = order = order[order != victim[0]]
            is_run = self._status[order] == RUNNING
            run = order[is_run]
        admit, alloc_q, restore_s = self._plan_admissions(
            order[~is_run], len(run), budget, self._total_blocks - self._blocks_used - grow
        )
        sched = np.concatenate((run, admit)) if len(admit) else run
        new = np.concatenate((alloc, alloc_q)) if len(admit) else alloc
        if len(admit):
            self._status[admit] = RUNNING
        busy = new > 0
        sched, new = sched[busy], new[busy]
        if not len(sched):
            self._empty_iteration()
            return
        p_plus_g = self._prompt[sched] + self._gen[sched]
        comp = self._comp[sched] + new
        is_decode = (new == 1) & (comp == p_plus_g) & (self._gen[sched] > 0)
        num_decode = int(np.count_nonzero(is_decode))
        prefill_tokens = int(new.sum()) - num_decode
        latency_s = self.latency.iteration_s(prefill_tokens, num_decode, int(comp.sum()))
        if self._iter_overhead:
            latency_s += self._overhead_s(len(sched) - num_decode, len(self._active))
        latency_s += self._swap_debt_s + restore_s
        self._swap_debt_s = 0.0
        self._comp[sched] = comp
        held = (comp + (bs - 1)) // bs
        self._blocks_used += int((held - self._held[sched]).sum())
        self._held[sched] = held
        self._now = t_end = self._now + latency_s
        producers = sched[comp == p_plus_g]
        self._after_tokens(producers, t_end)
        self._num_iterations += 1
        self._iters_left -= 1
        if self.on_iteration is not None:
            self.on_iteration(self)

    def _overhead_s(self, num_prefill_seqs: int, num_requests: int) -> float:
        """The profile's serving overhead of one iteration (`OverheadSpec`)."""
        return self._per_prefill_seq_s * num_prefill_seqs + self._per_request_s * num_requests

    def _plan_admissions(
        self, queue: np.ndarray, num_running: int, budget: int, free_blocks: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Selected waiting requests admitted this iteration, in order; stops at the first
        that lacks a seat, budget or blocks (it stays queued)."""
        empty = np.zeros(0, dtype=np.int64)
        seats = self._max_seqs - num_running
        if not len(queue) or seats <= 0 or budget <= 0:
            return empty, empty, 0.0
        q = queue[:seats]
        comp = self._comp[q]
        want = self._prompt[q] + self._gen[q] - comp
        before = np.cumsum(want) - want
        alloc = np.clip(budget - before, 0, want)
        need = np.cumsum((comp + alloc + (self._bs - 1)) // self._bs)
        k = min(int(np.count_nonzero(alloc)), int(np.searchsorted(need, free_blocks, "right")))
        if k == 0:
            return empty, empty, 0.0
        admit = q[:k]
        restore_s = 0.0
        if self._swap:
            back = admit[self._swapped[admit]]
            if len(back):
                blocks = (self._comp[back] + (self._bs - 1)) // self._bs
                restore_s = float(blocks.sum()) * self._swap_s_per_block
                self._swapped[back] = False
        return admit, alloc[:k], restore_s

    def _after_tokens(self, producers: np.ndarray, t_end: float) -> None:
        """Records one token for each producer at `t_end` and retires finished ones."""
        if not len(producers):
            return
        self._pending.produced(producers, t_end, None)
        gen = self._gen[producers] + 1
        self._gen[producers] = gen
        done = gen == self._output[producers]
        if done.any():
            self._finish(producers[done])

    # ------------------------------------------------------- closed-form segments
    def _decode_segment(
        self, extend: bool, base: np.ndarray, head_s: float | None, gen: np.ndarray
    ) -> bool:
        """Runs m >= 1 iterations of the current batch in closed form (see `_segment_plan`).

        Requests that deliver their last token inside the segment leave the batch there,
        so the batch and its context shrink. The segment ends before the first iteration
        that might need a block the cache does not have, when the whole batch finished,
        at the decision's end (or, with `extend`, at the first decision boundary at or
        after the next arrival or the time limit).

        Returns:
            False (having done nothing) when the very next iteration overflows the cache;
            the general path then preempts.
        """
        run = self._order
        remaining = self._output[run] - gen
        if not extend and self._iters_left == 1:  # one iteration: only it must fit
            fits = int(((base + self._bs) // self._bs).sum()) <= self._total_blocks
            m = 1 if fits else 0
        else:
            m = min(int(remaining.max()), self._blocks_safe_iters(base), _MAX_SEGMENT_ITERS)
            if not extend:
                m = min(m, self._iters_left)
            elif m > _MIN_SEGMENT_ITERS:
                m = self._iters_to_stop_guess(base, m)
        if m <= 0:
            return False
        latencies = self._segment_latencies(base, remaining, m)
        if head_s is not None:
            latencies[0] = head_s
            self._status[run] = RUNNING  # the head admits the queued requests
        if m == 1:  # the cumulative sum below, in one add
            times = self._now + latencies
        else:
            times = np.cumsum(np.concatenate(((self._now,), latencies)))[1:]
        n_dec = self.decision_config.iters_per_decision
        if extend:
            m = self._extended_stop(times, m, n_dec)
            times = times[:m]
        self._record_segment(run, base, gen, remaining, times)
        self._now = float(times[-1])
        self._num_iterations += m
        self._iters_left = (self._iters_left - m) % n_dec if extend else self._iters_left - m
        if self.on_iteration is not None:
            self.on_iteration(self)
        return True

    def _segment_latencies(self, comp: np.ndarray, remaining: np.ndarray, m: int) -> np.ndarray:
        """Latencies of the segment's m iterations; iteration j runs the requests with
        more than j tokens left, each attending to `comp + j + 1` tokens."""
        batch = len(comp)
        # Nobody finishes (m == 1 included: every request has a token left): constant batch.
        if m == 1 or int(remaining.min()) >= m:
            latencies = self.latency.decode_run_s(batch, int(comp.sum()) + batch, m)
            if self._iter_overhead:  # as _overhead_s(0, requests in the engine)
                latencies += self._per_request_s * len(self._active)
            return latencies
        by_rem = np.argsort(remaining, kind="stable")
        rem_sorted = remaining[by_rem]
        # comp_tail[k]: context of the requests from the k-th smallest remaining on.
        comp_tail = np.concatenate((np.cumsum(comp[by_rem][::-1])[::-1], (0,)))
        j = np.arange(m)
        gone = np.searchsorted(rem_sorted, j, side="right")  # finished before iteration j
        alive = batch - gone
        ctx = comp_tail[gone] + alive * (j + 1)
        latencies = self.latency.iteration_s_array(np.zeros(m), alive, ctx)
        if self._iter_overhead:  # requests that finished earlier in the segment have left
            latencies += self._per_request_s * (len(self._active) - gone)
        return latencies

    def _record_segment(
        self,
        run: np.ndarray,
        comp: np.ndarray,
        gen: np.ndarray,
        remaining: np.ndarray,
        times: np.ndarray,
    ) -> None:
        """State after the segment: tokens, KV blocks, finished requests (`comp`, `gen`:
        computed and generated tokens of `run` before it)."""
        m = len(times)
        # One iteration: every request has a token left, so each makes one step.
        steps = 1 if m == 1 else np.minimum(remaining, m)
        self._pending.produced(run, times, None if m == 1 else steps)
        comp = comp + steps
        self._comp[run] = comp
        held = (comp + (self._bs - 1)) // self._bs
        self._blocks_used += int((held - self._held[run]).sum())
        self._held[run] = held
        self._gen[run] = gen + steps
        done = steps == remaining
        if done.any():
            self._finish(run[done])

    def _blocks_safe_iters(self, comp: np.ndarray) -> int:
        """How many decode iterations the batch can run before the KV cache overflows.

        Iteration j (0-based) needs `ceil((comp + j + 1) / bs)` blocks per request; a
        request's need grows at the iterations j >= 1 where `comp + j` is a multiple of
        `bs`, first at `j1 = bs - comp % bs`, then every `bs`. The cache has `slack` spare
        blocks, so the `slack`-th growth (0-based) is the first that does not fit.
        """
        bs = self._bs
        slack = self._total_blocks - int(((comp + bs) // bs).sum())
        if slack < 0:
            return 0
        j1 = np.sort(bs - comp % bs)
        batch = len(comp)
        return int(j1[slack % batch]) + (slack // batch) * bs

    def _stop_time_s(self) -> float:
        """When an auto-applied segment must stop: the next arrival or the time limit."""
        limit = np.inf
        if self._next_arrival < self._n:
            limit = float(self._arrival[self._next_arrival])
        if self.time_limit_s is not None:
            limit = min(limit, float(self.time_limit_s))
        return limit

    def _iters_to_stop_guess(self, base: np.ndarray, m: int) -> int:
        """At most `m` iterations, cut to about those an auto-applied segment will run.

        `_extended_stop` cuts the segment at the next arrival, often two or three
        iterations in, so pricing all `m` (up to the longest response) is wasted, and a
        short segment more often has nobody finishing in it (the cheap constant-batch
        case). The guess prices iterations like the first decode iteration, with a margin;
        if they turn out faster the segment just ends early and the next one carries on:
        where a segment ends changes no time and no token (iterations are the same
        whichever segment prices them).
        """
        limit = self._stop_time_s()
        if limit == np.inf:
            return m
        batch = len(base)
        iter_s = self.latency.iteration_s(0, batch, int(base.sum()) + batch)
        if not iter_s > 0.0:
            return m
        guess = _STOP_GUESS_MARGIN * (limit - self._now) / iter_s + 2.0
        guess += self.decision_config.iters_per_decision  # up to the next decision boundary
        return int(min(float(m), max(guess, float(_MIN_SEGMENT_ITERS))))

    def _extended_stop(self, times: np.ndarray, m: int, n_dec: int) -> int:
        """Iterations an auto-applied segment runs: up to the first decision boundary
        whose time reaches the next arrival or the time limit, else all `m`."""
        limit = self._stop_time_s()
        if not times[m - 1] >= limit:
            return m
        first = int(np.searchsorted(times, limit, side="left")) + 1  # iterations done
        # Decision boundaries fall after iters_left, iters_left + n_dec, ... iterations.
        k = self._iters_left + max(0, -(-(first - self._iters_left) // n_dec)) * n_dec
        return min(k, m)
