"""The hook's per-request state, kept up to date as requests arrive, run, wait and finish.

Building the candidates from scratch reads every request object at every engine step;
under load that is most of what the hook costs. `LiveRequests` keeps one row (a *slot*)
per request the scheduler holds, as arrays, and reads a request only when it may have
changed in a way that matters:

- a request gets a slot when it is added, and loses it when it finishes or is aborted;
- `sync(running, finished_ids, ran)` runs once per engine step: finished requests leave;
  requests that started running are read, as are those that stopped (preempted), waiting
  requests whose in-flight output was still due when they were preempted (async
  scheduling delivers it later), and the status of requests vLLM holds back (grammar
  compilation, remote KV, streamed input). A waiting request's counters do not change
  otherwise, so they are not read again;
- a running request's context grows by at most `max_new_tokens_per_step` tokens a step,
  so between reads its knapsack weight is bounded (`needed_bound`). The selective
  triggering's questions (does everything fit? does the kept selection still fit?) are
  answered from the bounds, and the running requests are read (`read_running`) only
  when a bound does not settle it or a decision needs the exact candidates.

So a step costs a few numpy calls plus O(requests that changed), and at most
O(running requests) when something must be exact. The knapsack weight is the shared rule
(`andes_gym.core.candidates.kv_blocks_needed`) on the counters the scheduler plans with
(`candidates_vllm.request_counters`): `num_tokens + num_output_placeholders` as the
context and `num_output_tokens + num_output_placeholders` as the generated tokens, which
under async scheduling count the tokens of the step still in flight (without async
scheduling the placeholders are 0). `tests/test_hook_state.py` holds the arrays equal to a
rebuild from the request objects, and the answers equal to the exact rule, over sequences
of adds, outputs, preemptions and finishes.

Reads, per request, what `request_counters` reads and `request_id`, `status`,
`num_stale_output_tokens`, `is_finished()`. No vLLM import.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Iterable, Sequence
from typing import Any

import numpy as np

from andes_gym.engine_bridge.candidates_vllm import COUNTERS, knapsack_weights, request_counters

_FIELDS = (*COUNTERS, "needed", "read_step")
_FLAGS = ("live", "running", "blocked")
_REQUEST_ID = operator.attrgetter("request_id")
_PLACEHOLDERS = operator.attrgetter("num_output_placeholders")
_NUM_TOKENS = operator.attrgetter("num_tokens")
_COMPUTED = operator.attrgetter("num_computed_tokens")


class LiveRequests:
    """Arrays over the requests a vLLM scheduler holds, one slot per request.

    Args:
        block_size: Tokens per KV block.
        num_kv_groups: KV cache groups (each holds its own blocks of a request).
        admissible: Statuses of waiting requests that vLLM may admit (the others are
            held back by vLLM itself and are no candidates).
        capacity: Slots allocated up front (they grow as needed).
        max_new_tokens_per_step: Most tokens a running request's context grows by in one
            engine step (1, plus the speculative tokens of speculative decoding).

    Attributes:
        version: Bumped whenever a request is added or removed: decisions taken at one
            version saw the same set of requests.
        num_live: Requests holding a slot.
        live, running, blocked: Per slot: holds a request; the request runs; it waits in
            a status vLLM does not admit from.
        context, computed, generated, prompt, preemptions, needed: Per slot: the
            counters of `request_counters` and the knapsack weight (0 in free slots), as
            last read; a running request's are current after `read_running`.
        step: Syncs so far (engine steps).
        read_step: Per slot: the step at which its counters were last read.
    """

    def __init__(
        self,
        block_size: int,
        num_kv_groups: int = 1,
        admissible: Collection[Any] = (),
        capacity: int = 256,
        max_new_tokens_per_step: int = 1,
    ) -> None:
        self.block_size = int(block_size)
        self.max_new_tokens_per_step = int(max_new_tokens_per_step)
        self.num_kv_groups = int(num_kv_groups)
        self.admissible = frozenset(admissible)
        self.slot_of: dict[str, int] = {}
        self.requests: list[Any] = [None] * capacity
        self._free: list[int] = list(range(capacity - 1, -1, -1))
        for name in _FIELDS:
            setattr(self, name, np.zeros(capacity, dtype=np.int64))
        for name in _FLAGS:
            setattr(self, name, np.zeros(capacity, dtype=bool))
        self._running_slots = np.zeros(0, dtype=np.int64)
        self._running_set: set | None = set()  # the running requests of the last sync
        self._stale: set[int] = set()  # waiting, with preempted output still in flight
        self._held_by_vllm: set[int] = set()  # waiting in a blocked status
        self.version = 0
        self.num_live = 0
        self.step = 0
        self._needed_total = 0  # sum of `needed` (as last read) over live slots
        self._all_read_at = 0  # every running slot was read at this step or later

    # ------------------------------------------------------------------ membership
    def add(self, request: Any) -> int:
        """Gives a new (waiting) request a slot; returns it."""
        old = self.slot_of.get(request.request_id)
        if old is not None:  # an id reused after its request left: the new one wins
            self._release(old)
        if not self._free:
            self._grow(2 * len(self.requests))
        slot = self._free.pop()
        self.slot_of[request.request_id] = slot
        self.requests[slot] = request
        self.live[slot] = True
        self.num_live += 1
        self.version += 1
        self._refresh(np.array([slot]))
        self._check_waiting([slot])
        return slot

    def remove(self, request_ids: Iterable[str]) -> None:
        """Drops the slots of finished or aborted requests (unknown ids are ignored)."""
        for request_id in request_ids:
            slot = self.slot_of.get(request_id)
            if slot is not None and self.requests[slot].is_finished():
                self._release(slot)

    def _release(self, slot: int) -> None:
        self._needed_total -= int(self.needed[slot])
        del self.slot_of[self.requests[slot].request_id]
        self.requests[slot] = None
        for name in _FIELDS:
            getattr(self, name)[slot] = 0
        was_running = bool(self.running[slot])
        for name in _FLAGS:
            getattr(self, name)[slot] = False
        self._stale.discard(slot)
        self._held_by_vllm.discard(slot)
        if was_running:
            self._running_slots = self._running_slots[self._running_slots != slot]
            self._running_set = None  # compare afresh at the next sync
        self._free.append(slot)
        self.num_live -= 1
        self.version += 1

    def _grow(self, size: int) -> None:
        old = len(self.requests)
        self.requests.extend([None] * (size - old))
        self._free.extend(range(size - 1, old - 1, -1))
        for name in (*_FIELDS, *_FLAGS):
            array = getattr(self, name)
            grown = np.zeros(size, dtype=array.dtype)
            grown[:old] = array
            setattr(self, name, grown)

    # ------------------------------------------------------------------ per step
    def slots(self, requests: Collection[Any]) -> np.ndarray:
        """Slots of `requests`, in order.

        Raises:
            KeyError: For a request that has no slot.
        """
        ids = map(_REQUEST_ID, requests)
        return np.fromiter(map(self.slot_of.__getitem__, ids), np.int64, len(requests))

    def sync(
        self, running: Sequence[Any], finished_ids: Iterable[str] = (), ran: Iterable[Any] = ()
    ) -> None:
        """Brings membership and status up to date at the start of an engine step.

        Finished requests leave; requests that started running are read; requests that
        stopped running (preempted), waiting ones with stale output still due and those
        vLLM holds back are read again. The counters of requests that keep running are
        not read (`read_running` reads them; `fits_all` bounds them).

        Args:
            running: The scheduler's running requests now.
            finished_ids: Requests finished or aborted since the last sync.
            ran: Requests admitted since the last sync (at the end of the last
                `schedule()`, the requests it appended to `running`).

        Raises:
            KeyError: When a running request has no slot.
        """
        self.remove(finished_ids)
        requests, flags = self.requests, self.running
        joined = None
        same = self._running_set
        if same is not None and len(running) == len(same) and same.issuperset(running):
            now, left = self._running_slots, []  # the same requests run (the common step)
        else:
            now = self.slots(running)
            joined = now[~flags[now]]
            now, left = self._move(now)
            self._running_set = set(running)
        if ran:
            left += self._move(now, ran)[1]
        for slot in [s for s in left if requests[s].is_finished()]:
            self._release(slot)
            left.remove(slot)
        for slot in left:  # preempted since the last sync
            if requests[slot].num_stale_output_tokens > 0:
                self._stale.add(slot)
        if self._stale:
            self._stale = {s for s in self._stale if not flags[s]}
        if self._held_by_vllm:
            self._held_by_vllm = {s for s in self._held_by_vllm if not flags[s]}
        self.step += 1
        if joined is not None and len(joined):
            self._refresh_running(joined)
        waiting = sorted(set(left) | self._stale | self._held_by_vllm)
        if waiting:
            self._refresh(np.array(waiting, np.int64))
            self._check_waiting(waiting)
        if self._stale:
            self._stale = {s for s in self._stale if requests[s].num_stale_output_tokens > 0}

    def read_running(self) -> None:
        """Reads the counters of the running requests not read since they last changed."""
        if self._all_read_at == self.step:
            return
        run = self._running_slots
        aged = run[self.read_step[run] < self.step]
        if len(aged):
            self._refresh_running(aged)
        self._all_read_at = self.step

    def _move(self, now: np.ndarray, ran: Iterable[Any] = ()) -> tuple[np.ndarray, list[int]]:
        """Marks the slots in `now` running; returns them and the slots that stopped.

        `ran`: requests that ran since the last sync besides the ones marked then.
        """
        requests, flags = self.requests, self.running
        before = self._running_slots
        extra = [(self.slot_of.get(r.request_id), r) for r in ran]
        extra = [s for s, r in extra if s is not None and requests[s] is r]
        if extra:
            before = np.union1d(before, extra)
        if now is not self._running_slots:
            flags[self._running_slots] = False
            flags[now] = True
            self.blocked[now] = False
            self._running_slots = now
        return now, before[~flags[before]].tolist()

    def _refresh_running(self, slots: np.ndarray) -> None:
        """Reads what changes while a request runs: its context and computed tokens."""
        n = len(slots)
        running = [self.requests[s] for s in slots.tolist()]
        placeholders = np.fromiter(map(_PLACEHOLDERS, running), np.int64, n)
        context = np.fromiter(map(_NUM_TOKENS, running), np.int64, n) + placeholders
        computed = np.fromiter(map(_COMPUTED, running), np.int64, n)
        # prompt and preemptions do not change while a request runs; its output tokens
        # are its tokens past the prompt.
        generated = context - self.prompt[slots]
        self.context[slots] = context
        self.computed[slots] = computed
        self.generated[slots] = generated
        weights = knapsack_weights(
            {"context": context, "computed": computed, "generated": generated},
            self.block_size,
            self.num_kv_groups,
        )
        self._set_needed(slots, weights)

    def _refresh(self, slots: np.ndarray) -> None:
        """Reads every counter of the requests in `slots`."""
        counters = request_counters([self.requests[s] for s in slots.tolist()])
        for name, values in counters.items():
            getattr(self, name)[slots] = values
        self._set_needed(slots, knapsack_weights(counters, self.block_size, self.num_kv_groups))

    def _set_needed(self, slots: np.ndarray, weights: np.ndarray) -> None:
        self._needed_total += int(weights.sum() - self.needed[slots].sum())
        self.needed[slots] = weights
        self.read_step[slots] = self.step

    def _check_waiting(self, slots: Iterable[int]) -> None:
        """Reads whether the waiting requests in `slots` wait in a status vLLM admits."""
        for slot in slots:
            blocked = self.requests[slot].status not in self.admissible
            self.blocked[slot] = blocked
            if blocked:
                self._held_by_vllm.add(slot)
            else:
                self._held_by_vllm.discard(slot)

    # ------------------------------------------------------------------ questions
    @property
    def num_blocked(self) -> int:
        """Waiting requests in a status vLLM does not admit from."""
        return len(self._held_by_vllm)

    def candidate_mask(self) -> np.ndarray:
        """Per slot: a candidate (running, or waiting in an admissible status)."""
        return self.live & ~self.blocked

    def needed_bound(self, slots: np.ndarray) -> np.ndarray:
        """At least the knapsack weight of each of `slots` now, without reading them.

        A running request's context grows by at most `max_new_tokens_per_step` per
        engine step (one sync), so `age` steps after it was read it needs at most the
        blocks of its context then, plus one token, plus `age` steps' tokens.
        """
        age = self.step - self.read_step[slots]
        tokens = self.context[slots] + 1 + age * self.max_new_tokens_per_step
        bound = self.num_kv_groups * ((tokens + self.block_size - 1) // self.block_size)
        return np.where(age > 0, bound, self.needed[slots])

    def fits_within(self, slots: np.ndarray, blocks: float) -> bool:
        """Whether the requests in `slots` need at most `blocks` KV blocks together."""
        if self.needed_bound(slots).sum() <= blocks:
            return True
        self.read_running()
        return self.needed[slots].sum() <= blocks

    def fits_all(self, total_kv_blocks: int, max_num_seqs: int) -> bool:
        """Whether every candidate fits in the KV cache and the batch at once.

        First without a numpy call: the weights as last read, plus for each running
        request the most its weight can have grown since (`needed_bound`, summed: the
        blocks of one token plus the steps' tokens, each). Only when that does not fit
        are the running requests read and the exact weights compared.
        """
        num = self.num_live - len(self._held_by_vllm)
        if num > max_num_seqs:
            return False
        blocks = self._needed_total
        if self._held_by_vllm:
            blocks -= int(self.needed[self.blocked].sum())
        age = self.step - self._all_read_at
        if age > 0:
            tokens = 1 + age * self.max_new_tokens_per_step
            growth = -(-tokens // self.block_size) * self.num_kv_groups
            if blocks + growth * len(self._running_slots) <= total_kv_blocks:
                return True
            self.read_running()
            blocks = self._needed_total
            if self._held_by_vllm:
                blocks -= int(self.needed[self.blocked].sum())
        return blocks <= total_kv_blocks
