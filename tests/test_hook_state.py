"""The hook's incremental request state equals a rebuild from the request objects.

`LiveRequests` keeps per-request arrays up to date from adds, preemptions, finishes and a
sync per engine step, reading only the requests that can have changed. These tests
replay random sequences of scheduler events on stand-in requests (the counters vLLM's
scheduler keeps, with and without async scheduling's in-flight tokens) and compare the
arrays with `request_counters` / `knapsack_weights` of every live request after each
step. The `vllm`-marked test compares the hook's decision points with rebuilt ones inside
the real engine. No vLLM needed for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from andes_gym.core.selection import fits_all
from andes_gym.engine_bridge.candidates_vllm import COUNTERS, knapsack_weights, request_counters
from andes_gym.engine_bridge.live_requests import LiveRequests

WAITING, PREEMPTED, RUNNING, GRAMMAR, FINISHED = "W", "P", "R", "G", "F"
BLOCK_SIZE = 4


@dataclass(eq=False)
class FakeRequest:
    """The counters of a vLLM `Request` that the hook reads."""

    request_id: str
    num_prompt_tokens: int
    status: str = WAITING
    num_output_tokens: int = 0
    num_computed_tokens: int = 0
    num_output_placeholders: int = 0
    num_stale_output_tokens: int = 0
    num_preemptions: int = 0
    token_log: list = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens

    def is_finished(self) -> bool:
        return self.status == FINISHED


class FakeScheduler:
    """Moves stand-in requests through vLLM's states, one random event at a time.

    `asynchronous`: a scheduled step stays in flight until the next step (its token is a
    placeholder until then), preemption turns it into stale output delivered later.
    """

    def __init__(self, rng: np.random.Generator, asynchronous: bool) -> None:
        self.rng = rng
        self.asynchronous = asynchronous
        self.running: list[FakeRequest] = []
        self.waiting: list[FakeRequest] = []
        self.finished_ids: set[str] = set()
        self.next_id = 0

    def live(self) -> list[FakeRequest]:
        return [*self.running, *self.waiting]

    def add(self) -> FakeRequest:
        status = GRAMMAR if self.rng.random() < 0.1 else WAITING
        req = FakeRequest(f"r{self.next_id}", int(self.rng.integers(1, 15)), status=status)
        self.next_id += 1
        self.waiting.append(req)
        return req

    def step(self) -> None:
        """One engine step: deliver in-flight tokens, admit (appending to `running`), run."""
        for req in self.live():
            self._deliver(req)
        for req in self.waiting:
            if req.status == GRAMMAR and self.rng.random() < 0.3:
                req.status = WAITING  # grammar compiled, admissible now
        admissible = [r for r in self.waiting if r.status in (WAITING, PREEMPTED)]
        admissible = [r for r in admissible if r.num_stale_output_tokens == 0]
        for req in admissible[: int(self.rng.integers(0, 3))]:
            self.waiting.remove(req)
            req.status = RUNNING
            self.running.append(req)
        for req in self.running:
            # chunked prefill: a few prompt tokens at a time, then one token per step
            todo = req.num_tokens + req.num_output_placeholders - req.num_computed_tokens
            req.num_computed_tokens += int(min(todo, self.rng.integers(1, 6)))
            if req.num_computed_tokens >= req.num_tokens + req.num_output_placeholders:
                if self.asynchronous:
                    req.num_output_placeholders += 1
                else:
                    req.num_output_tokens += 1
        if not self.asynchronous:
            for req in self.running:
                if req.num_computed_tokens == req.num_tokens:  # sampled a token
                    req.num_computed_tokens -= 1  # the new token is computed next step

    def _deliver(self, req: FakeRequest) -> None:
        if req.num_output_placeholders:
            req.num_output_tokens += req.num_output_placeholders
            req.num_computed_tokens -= 0
            req.num_output_placeholders = 0
        if req.num_stale_output_tokens:
            req.num_output_tokens += 1
            req.num_stale_output_tokens -= 1

    def preempt(self) -> None:
        if not self.running:
            return
        req = self.running.pop(int(self.rng.integers(len(self.running))))
        req.status = PREEMPTED
        req.num_computed_tokens = 0
        req.num_stale_output_tokens = req.num_output_placeholders
        req.num_output_placeholders = 0
        req.num_preemptions += 1
        self.waiting.insert(0, req)

    def finish(self) -> None:
        live = self.live()
        if not live:
            return
        req = live[int(self.rng.integers(len(live)))]
        (self.running if req in self.running else self.waiting).remove(req)
        req.status = FINISHED
        self.finished_ids.add(req.request_id)


def _assert_equal_to_rebuild(state: LiveRequests, sched: FakeScheduler) -> None:
    live = sched.live()
    assert state.num_live == len(live)
    assert sorted(state.slot_of) == sorted(r.request_id for r in live)
    slots = state.slots(live)
    expected = request_counters(live)
    weights = knapsack_weights(expected, BLOCK_SIZE, 2)
    # Before the running requests are read: the bounds hold, the answers are exact.
    assert (state.needed_bound(slots) >= weights).all()
    candidate = [r.status in (RUNNING, WAITING, PREEMPTED) for r in live]
    candidates = weights[np.array(candidate, dtype=bool)]
    for total, seqs in ((20, 3), (60, 8), (400, 40)):
        assert state.fits_all(total, seqs) == fits_all(candidates, total, seqs)
        assert state.fits_within(slots, total) == (weights.sum() <= total)
    state.read_running()
    assert state._needed_total == state.needed.sum()  # the running sum fits_all starts from
    for name in COUNTERS:
        np.testing.assert_array_equal(getattr(state, name)[slots], expected[name], err_msg=name)
    np.testing.assert_array_equal(state.needed[slots], weights, err_msg="needed")
    np.testing.assert_array_equal(state.running[slots], [r.status == RUNNING for r in live])
    np.testing.assert_array_equal(state.candidate_mask()[slots], candidate)
    free = np.ones(len(state.requests), dtype=bool)
    free[slots] = False
    assert not state.needed[free].any() and not state.live[free].any()


def _check_some_steps(state, sched, rng) -> None:
    """Most steps are checked right after the sync; some only later (reads skipped)."""
    if rng.random() < 0.7:
        _assert_equal_to_rebuild(state, sched)


@pytest.mark.parametrize("asynchronous", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_incremental_state_equals_a_rebuild_after_every_step(seed, asynchronous):
    rng = np.random.default_rng(seed)
    sched = FakeScheduler(rng, asynchronous)
    state = LiveRequests(BLOCK_SIZE, num_kv_groups=2, admissible=(WAITING, PREEMPTED), capacity=2)
    ran: list[FakeRequest] = []
    for _ in range(300):
        for _ in range(int(rng.integers(0, 3))):
            state.add(sched.add())
        if rng.random() < 0.3:
            sched.preempt()
        if rng.random() < 0.2:
            sched.finish()
        # The hook syncs at the start of every schedule(): the requests finished since the
        # last one, and those that ran at the end of the last schedule().
        state.sync(sched.running, sched.finished_ids, ran)
        sched.finished_ids = set()
        _check_some_steps(state, sched, rng)
        num_running = len(sched.running)
        sched.step()
        ran = sched.running[num_running:]  # admitted by this step
    assert state.version > 0 and len(state.requests) > 2  # grew past its first capacity


def test_aborted_requests_leave_at_once_and_an_id_may_come_back():
    state = LiveRequests(BLOCK_SIZE, admissible=(WAITING, PREEMPTED))
    first = FakeRequest("a", 5)
    state.add(first)
    version = state.version
    first.status = FINISHED
    state.remove(["a", "unknown"])
    assert state.num_live == 0 and state.version == version + 1
    again = FakeRequest("a", 9)
    state.add(again)
    state.remove(["a"])  # not finished: stays
    assert state.requests[state.slot_of["a"]] is again
    np.testing.assert_array_equal(state.context[state.slots([again])], [9])


def test_a_running_request_unknown_to_the_state_is_an_error():
    state = LiveRequests(BLOCK_SIZE, admissible=(WAITING, PREEMPTED))
    with pytest.raises(KeyError):
        state.sync([FakeRequest("stranger", 3, status=RUNNING)])


# ------------------------------------------------------------------ in the real engine
CANDIDATE_FIELDS = (
    "request_id",
    "is_running",
    "arrival_s",
    "prompt_tokens",
    "tokens_delivered",
    "kv_blocks_held",
    "kv_blocks_needed",
    "ttft_s",
    "tds_tok_s",
    "num_preemptions",
    "qoe_now",
    "q_serve",
    "q_wait",
)


def assert_same_point(incremental, rebuilt) -> None:
    """Two decision points of one state are equal: candidates, capacity, requests."""
    assert [r.request_id for r in incremental.requests] == [r.request_id for r in rebuilt.requests]
    for name in CANDIDATE_FIELDS:
        np.testing.assert_array_equal(
            getattr(incremental.candidates, name), getattr(rebuilt.candidates, name), err_msg=name
        )
    a, b = incremental.capacity, rebuilt.capacity
    assert (a.total_kv_blocks, a.free_kv_blocks, a.max_num_seqs) == (
        b.total_kv_blocks,
        b.free_kv_blocks,
        b.max_num_seqs,
    )
    np.testing.assert_array_equal(a.iter_latency_s, b.iter_latency_s)


def drive_and_compare(
    engine, scheduler, num_requests: int, compare: bool = True, max_steps: int = 3000
) -> dict:
    """Serves a contended burst; before every step, compares incremental and rebuilt points.

    The ledger clock is frozen while both are built, so their QoE predictions see the same
    time. `compare=False` only serves. Returns counts of compared points, decisions,
    preemptions, and the tokens delivered and expected.
    """
    from vllm import SamplingParams, TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    rng = np.random.default_rng(1)
    runtime = scheduler.andes_gym
    expected = 0
    for i in range(num_requests):
        max_tokens = int(rng.integers(4, 40))
        expected += max_tokens
        params = SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=True,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
            extra_args={"ttft_s": 0.05, "tds_tok_s": float(rng.choice([50.0, 200.0]))},
        )
        prompt = rng.integers(1, 400, int(rng.integers(8, 120))).tolist()
        engine.add_request(f"state-{i}", TokensPrompt(prompt_token_ids=prompt), params)
    ledger = runtime.ledger
    rebuild_under, scheduler.rebuild_under = scheduler.rebuild_under, 0  # incremental only
    compared = decided = 0
    try:
        for _ in range(max_steps):
            if not scheduler.get_num_unfinished_requests():
                break
            if compare and (scheduler.running or scheduler.waiting):
                decided += _compare_points(scheduler, ledger)
                compared += 1
            engine.step()
    finally:
        scheduler.rebuild_under = rebuild_under
    assert not scheduler.get_num_unfinished_requests(), "the burst did not finish"
    return {
        "compared": compared,
        "decided": decided,
        "preemptions": int(ledger.num_preemptions.sum()),
        "tokens": int(ledger.num_tokens.sum()),
        "expected_tokens": expected,
    }


def _compare_points(scheduler, ledger) -> int:
    """Incremental vs rebuilt point of the current state; 1 when the policy decided."""
    clock = ledger.clock
    frozen = clock()
    ledger.clock = lambda: frozen
    try:
        rebuilt = scheduler.rebuilt_decision_point()
        incremental = scheduler.decision_point()
    finally:
        ledger.clock = clock
    assert_same_point(incremental, rebuilt)
    assert scheduler.is_uncontested() == scheduler._is_uncontested(None)
    if not len(rebuilt.candidates):
        return 0
    policy = scheduler.andes_gym.runner.policy
    a = policy.decide(incremental.candidates, incremental.capacity)
    b = policy.decide(rebuilt.candidates, rebuilt.capacity)
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.selected, b.selected)
    return 1


@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_incremental_decision_points_equal_rebuilt_ones_in_the_engine(vllm_engine):
    from andes_gym.agents import make_policy
    from andes_gym.engine_bridge.engine import abort_all

    engine, scheduler = vllm_engine.engine, vllm_engine.scheduler
    runtime = scheduler.andes_gym
    runtime.use_policy(make_policy("andes"), skip_uncontested=False, reuse_decisions=False)
    try:
        counts = drive_and_compare(engine, scheduler, num_requests=40)
    finally:
        abort_all(engine)
        runtime.runner = None  # back to environment mode for the other tests
    assert counts["decided"] > 20 and counts["preemptions"] > 0, counts


def test_a_buffered_ledger_reads_the_same_as_an_unbuffered_one():
    from andes_gym.engine_bridge.ledger import RequestLedger

    rng = np.random.default_rng(5)
    now = [0.0]
    ledgers = [
        RequestLedger(clock=lambda: now[0], record_token_times=True, buffer_steps=steps)
        for steps in (0, 4)
    ]
    for ledger in ledgers:
        for i in range(6):
            ledger.add(0.01 * i, 0.05, 50.0, prompt_tokens=8, max_tokens=100, request_id=f"r{i}")
    for step in range(23):
        rows = np.flatnonzero(rng.random(6) < 0.7)
        counts = rng.integers(0, 3, len(rows))
        for ledger in ledgers:
            ledger.deliver(rows, counts, 0.1 + 0.01 * step)
        if step == 11:  # a read in between applies what is pending
            np.testing.assert_array_equal(ledgers[0].num_tokens, ledgers[1].num_tokens)
    assert ledgers[1]._pending  # some deliveries still buffered
    plain, buffered = (ledger.tracker for ledger in ledgers)
    assert not ledgers[1]._pending
    np.testing.assert_array_equal(plain.state.num_tokens, buffered.state.num_tokens)
    np.testing.assert_array_equal(plain.qoe(np.arange(6)), buffered.qoe(np.arange(6)))
    for i in range(6):
        np.testing.assert_array_equal(plain.token_times(i), buffered.token_times(i))
