"""The surrogate engine's specification: an iteration-level continuous-batching simulator
like vLLM's V1 engine, in plain numpy, one iteration at a time.

`SurrogateBackend` states the engine's rules once, readably. It is the oracle the
compiled engine (`andes_gym.surrogate.compiled`, what the environments run) is held to:
`tests/test_compiled_engine.py` plays the same episodes on both and requires the same
bits. It is slow (a few numpy calls per request and iteration) and has no fast paths on
purpose; `SurrogateEnv(simulator="python")` runs it. The cost formulas both engines use
are written once, in `andes_gym.surrogate.costs`.

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

Requests that can never run (prompt + output above `max_model_len`, or more KV blocks than
the cache holds) are rejected by `start` with a ValueError naming the request, rather than
silently clipped (clipping would change the workload's QoE) or left to hang.
"""

from __future__ import annotations

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity, kv_blocks_needed
from andes_gym.core.selection import Decision, fits_all
from andes_gym.surrogate.base import FINISHED, RUNNING, WAITING, SurrogateEngine
from andes_gym.surrogate.costs import decision_overhead_s, kv_blocks, serving_overhead_s, swap_s
from andes_gym.workloads.spec import Workload


class SurrogateBackend(SurrogateEngine):
    """The surrogate engine's specification (see the module docstring; the constructor's
    arguments and `on_iteration` are `SurrogateEngine`'s)."""

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
        self._cands: Candidates | None = None

    def start(self, workload: Workload, seed: int | None) -> None:
        super().start(workload, seed)
        self._prompt = workload.prompt_tokens
        self._output = workload.output_tokens

    # ------------------------------------------------------------ backend contract
    def next_decision(self) -> tuple[Candidates, Capacity] | None:
        limit = self.time_limit_s
        while True:
            self._cands = None
            if self._num_finished == self._n:
                return None
            if limit is not None and self._now >= limit:
                return None
            self._admit_arrivals()
            if len(self._active) == 0:
                t_next = float(self._arrival[self._next_arrival])
                if limit is not None and t_next >= limit:
                    self._now = max(self._now, float(limit))
                    return None
                self._now = max(self._now, t_next)
                continue
            gen = self._gen[self._active]
            context = self._prompt[self._active] + gen
            needed = kv_blocks_needed(context, self._comp[self._active], gen, self._bs)
            if self.skip_uncontested and fits_all(needed, self._total_blocks, self._max_seqs):
                # Every candidate fits, so every policy agrees: run them all, oldest first.
                self._order = self._active
                self._iters_left = self.decision_config.iters_per_decision
                self._run_iterations()
                continue
            self._cands, capacity = self._decision_point(needed, context)
            return self._cands, capacity

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
        ov = self.profile.overhead
        if ov.per_decision:  # building the decision delays the next iteration
            self._now += decision_overhead_s(ov.decision_s, ov.per_candidate_s, len(cands))
        if len(self._order) == 0:
            self._empty_iteration()
        else:
            self._run_iterations()

    # ---------------------------------------------------------------- the rules
    def _admit_arrivals(self) -> None:
        """Requests that arrived by now join the candidates (at iteration boundaries)."""
        lo = self._next_arrival
        hi = int(np.searchsorted(self._arrival, self._now, side="right"))
        if hi > lo:
            self._status[lo:hi] = WAITING
            self._active = np.concatenate((self._active, np.arange(lo, hi, dtype=np.int64)))
            self._next_arrival = hi

    def _run_iterations(self) -> None:
        """Runs the current decision's remaining iterations."""
        while self._iters_left > 0 and len(self._order):
            self._iteration()
        if not len(self._order):
            self._iters_left = 0

    def _iteration(self) -> None:
        """One engine iteration under the current decision."""
        order = self._order
        run = order[self._status[order] == RUNNING]
        while True:
            alloc, budget = self._plan_running(run)
            grow = int((kv_blocks(self._comp[run] + alloc, self._bs) - self._held[run]).sum())
            if self._blocks_used + grow <= self._total_blocks or not len(run):
                break
            # KV overflow: preempt the running request lowest in the decision's order.
            victim = run[-1:]
            self._preempt_requests(victim)
            self._order = order = order[order != victim[0]]
            run = order[self._status[order] == RUNNING]
        queue = order[self._status[order] != RUNNING]
        free_blocks = self._total_blocks - self._blocks_used - grow
        admit, alloc_q, restore_s = self._plan_admissions(queue, len(run), budget, free_blocks)
        self._status[admit] = RUNNING
        sched = np.concatenate((run, admit))
        new = np.concatenate((alloc, alloc_q))
        sched, new = sched[new > 0], new[new > 0]
        if not len(sched):
            self._empty_iteration()
            return
        context = self._prompt[sched] + self._gen[sched]
        comp = self._comp[sched] + new
        is_decode = (new == 1) & (comp == context) & (self._gen[sched] > 0)
        num_decode = int(np.count_nonzero(is_decode))
        latency_s = self.latency.iteration_s(
            int(new.sum()) - num_decode, num_decode, int(comp.sum())
        )
        ov = self.profile.overhead
        if ov.per_iteration:
            latency_s += serving_overhead_s(
                ov.per_prefill_seq_s, ov.per_request_s, len(sched) - num_decode, len(self._active)
            )
        latency_s += self._swap_debt_s + restore_s
        self._swap_debt_s = 0.0
        held = kv_blocks(comp, self._bs)
        self._blocks_used += int((held - self._held[sched]).sum())
        self._comp[sched] = comp
        self._held[sched] = held
        self._now = t_end = self._now + latency_s
        # The iteration that completes a request's context produces its next token.
        producers = sched[comp == context]
        if len(producers):
            self.tracker.deliver(producers, t_end)
            self._gen[producers] += 1
            done = producers[self._gen[producers] == self._output[producers]]
            if len(done):
                self._finish(done)
        self._iters_left -= 1
        self._end_iteration()

    def _plan_running(self, run: np.ndarray) -> tuple[np.ndarray, int]:
        """New tokens per running request under the token budget, and the budget left."""
        pending = self._prompt[run] + self._gen[run] - self._comp[run]
        alloc = np.ones(len(run), dtype=np.int64)
        multi = np.flatnonzero(pending > 1)
        # Decoding requests take one token each first (the profile guarantees the budget
        # covers max_num_seqs of them); prefill chunks share the rest in order.
        budget = self._max_tokens - (len(run) - len(multi))
        want = pending[multi]
        before = np.cumsum(want) - want
        alloc[multi] = np.clip(budget - before, 0, want)
        return alloc, budget - int(alloc[multi].sum())

    def _plan_admissions(
        self, queue: np.ndarray, num_running: int, budget: int, free_blocks: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Selected waiting requests admitted this iteration, in order, their new tokens,
        and the seconds to swap them back in; stops at the first that lacks a seat, budget
        or blocks (it stays queued)."""
        empty = np.zeros(0, dtype=np.int64)
        seats = self._max_seqs - num_running
        if seats <= 0 or budget <= 0:
            return empty, empty, 0.0
        q = queue[:seats]
        comp = self._comp[q]
        want = self._prompt[q] + self._gen[q] - comp
        before = np.cumsum(want) - want
        alloc = np.clip(budget - before, 0, want)
        need = np.cumsum(kv_blocks(comp + alloc, self._bs))
        k = min(int(np.count_nonzero(alloc)), int(np.searchsorted(need, free_blocks, "right")))
        admit = q[:k]
        back = admit[self._swapped[admit]] if self._swap else empty
        self._swapped[back] = False
        restore_s = 0.0
        if len(back):
            restore_s = swap_s(
                int(kv_blocks(self._comp[back], self._bs).sum()), self._swap_s_per_block
            )
        return admit, alloc[:k], restore_s

    def _empty_iteration(self) -> None:
        """An iteration that runs nothing: time still advances (never hang)."""
        self._now += self._empty_iter_s + self._swap_debt_s
        self._swap_debt_s = 0.0
        self._iters_left = 0
        self._end_iteration()

    def _end_iteration(self) -> None:
        self._num_iterations += 1
        if self.on_iteration is not None:
            self.on_iteration(self)

    def _preempt_requests(self, ids: np.ndarray) -> None:
        """Moves running requests back to waiting, freeing their KV blocks."""
        held = int(self._held[ids].sum())
        self._blocks_used -= held
        if self._swap:
            # The KV moves to host memory; the transfer delays the next iteration.
            self._swapped[ids] = True
            self._swap_debt_s += swap_s(held, self._swap_s_per_block)
        else:
            self._comp[ids] = 0
        self._held[ids] = 0
        self._status[ids] = WAITING
        self._preempt[ids] += 1

    def _finish(self, ids: np.ndarray) -> None:
        self._status[ids] = FINISHED
        self._done[ids] = True
        self._blocks_used -= int(self._held[ids].sum())
        self._held[ids] = 0
        self._num_finished += len(ids)
        self._order = self._order[self._status[self._order] != FINISHED]
        self._active = self._active[self._status[self._active] != FINISHED]
