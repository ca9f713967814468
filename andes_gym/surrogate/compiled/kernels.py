"""The compiled surrogate: its state layout and every numba kernel, in one module.

One module on purpose: numba's on-disk cache (`cache=True`) notices a change only in the
file that defines a function, not in the functions or constants it uses from other files,
so kernels split over several files could run stale machine code after an edit. The one
exception, the cost formulas compiled from `andes_gym.surrogate.costs` (their one home,
shared with the Python side), is pinned by that file's digest (`COSTS_DIGEST`): editing it
fails the import until the digest here is updated, which edits this file and so refreshes
the cache.

Sections:

1. Layout: where the engine keeps its state, as row and slot numbers of a few arrays
   (a numba call pays per argument, so the kernels take a handful of arrays):
   - `ints` (int64, rows x n): per-request integers, one row each (`R_*`).
   - `flags` (bool, rows x n): per-request flags (`B_*`).
   - the QoE tracker's float block and token counts (`QoETracker.floats` and
     `num_tokens`, its public layout), updated in place, so the tracker stays the one
     record of every request's QoE.
   - `sti` / `stf`: the engine's scalar state (`S_*` / `SF_*`).
   - `pi` / `pf`: constants from the profile and the decision config (`P_*` / `PF_*`).
2. QoE: the arithmetic of `andes_gym.qoe`, one request at a time, with the same operations
   in the same order as the vectorized originals (`deliver` is `QoETracker.deliver` for
   one row, `predictions` is `predict_qoe_many` as `make_candidates` calls it,
   `qoe_if_completed` the reward's term).
3. Engine: the rules the specification `andes_gym.surrogate.simulator.SurrogateBackend`
   states (arrivals, the per-iteration plan, preemption on KV overflow, admission in the
   decision's order, latency with the profile's overheads, token delivery, the loop to the
   next decision point), every iteration one by one. In one-iteration mode
   (`P_ONE_ITERATION`) `advance` and `run_iterations` return after each iteration, so that
   the backend can record token times and call `on_iteration` between them.
4. Environment: slot scores -> the selection rule (`scores_from_slots` + `select`), the
   observation (`andes_gym.core.features.observe`), the reward potential
   (`SchedulingEnv._potential_now`), and `step_slots`, which chains them with the engine
   so that one `env.step` is one compiled call.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from numba import njit

from andes_gym.surrogate import costs

# ======================================================================== 1. layout
# Rows of `ints` (per-request integers).
R_PROMPT, R_OUTPUT, R_COMP, R_HELD, R_PREEMPT, R_STATUS = 0, 1, 2, 3, 4, 5
R_ACTIVE = 6  # arrived, unfinished ids, ascending (first S_NUM_ACTIVE entries)
R_ORDER = 7  # the decision's selected ids, highest priority first (first S_NUM_ORDER)
R_NEEDED = 8  # per candidate (active position): KV blocks needed to run next
R_CONTEXT = 9  # per candidate: prompt + generated tokens
R_SLOT = 10  # candidate position in each filled slot (first S_NUM_SLOTS entries)
R_SCRATCH = 11  # work space of one call
NUM_INT_ROWS = 12

# Rows of `flags` (per-request booleans).
B_DONE, B_SWAPPED, B_COUNTED, B_SELECTED = 0, 1, 2, 3
NUM_BOOL_ROWS = 4

# Rows of the QoE tracker's float block (`QoETracker.floats`, rows `andes_gym.qoe.FLOAT_ROWS`).
T_ARRIVAL, T_TTFT, T_TDS, T_LAST_CONSUME, T_SUM_CONSUME, T_SUM_DELAY = 0, 1, 2, 3, 4, 5
T_FIRST_TOKEN, T_LAST_TOKEN, T_E1 = 6, 7, 8

# Integer state.
S_N, S_NEXT_ARRIVAL, S_NUM_ACTIVE, S_NUM_ORDER, S_BLOCKS_USED = 0, 1, 2, 3, 4
S_NUM_FINISHED, S_ITERS_LEFT, S_NUM_ITERATIONS, S_NUM_SLOTS, S_NUM_RUNNING = 5, 6, 7, 8, 9
S_FIRST_OPEN = 10  # requests below this id are all counted in the reward's fixed sum
S_NUM_SELECTED = 11  # entries of the decision in R_SCRATCH (candidate positions)
NUM_INT_STATE = 12

# Float state.
SF_NOW, SF_SWAP_DEBT, SF_FINAL_SUM, SF_TIME_LIMIT = 0, 1, 2, 3
NUM_FLOAT_STATE = 4

# Integer constants.
P_BLOCK_SIZE, P_TOTAL_BLOCKS, P_MAX_SEQS, P_MAX_TOKENS, P_ITERS_PER_DECISION = 0, 1, 2, 3, 4
P_SWAP, P_VARIANT, P_ORACLE, P_SKIP_UNCONTESTED, P_K_SLOTS, P_LATENCY_KIND = 5, 6, 7, 8, 9, 10
P_ITER_OVERHEAD, P_DECISION_OVERHEAD = 11, 12
P_ONE_ITERATION = 13  # advance / run_iterations return after every iteration (hooks)
NUM_INT_PARAMS = 14

# Float constants: latency coefficients (linear, or roofline in the same slots), overheads.
PF_L0, PF_L1, PF_L2, PF_L3, PF_L4 = 0, 1, 2, 3, 4
PF_EMPTY_ITER_S, PF_SWAP_S_PER_BLOCK, PF_LOOKAHEAD_S = 5, 6, 7
PF_PER_PREFILL_SEQ_S, PF_PER_REQUEST_S, PF_DECISION_S, PF_PER_CANDIDATE_S = 8, 9, 10, 11
NUM_FLOAT_PARAMS = 12

# Latency kinds.
LATENCY_LINEAR, LATENCY_ROOFLINE = 0, 1

# QoE variants, in the order of andes_gym.qoe.VARIANTS.
VARIANT_DELAY, VARIANT_DELAY_FIXED, VARIANT_AREA = 0, 1, 2

# Request status codes (as andes_gym.surrogate.base).
FUTURE, WAITING, RUNNING, FINISHED = 0, 1, 2, 3

# What `advance` returns: the episode is over, a decision point is pending, or (only in
# one-iteration mode) an iteration ran and the call must be repeated.
OVER, DECISION, ITERATED = 0, 1, 2


# ================================================================= the cost formulas
COSTS_DIGEST = "ff4328b6eba3eedf"  # sha256 prefix of andes_gym/surrogate/costs.py


def costs_digest() -> str | None:
    """The digest of `costs.py` as it is now (None where its source cannot be read)."""
    try:
        text = Path(costs.__file__).read_text(encoding="utf-8")
    except OSError:
        return None
    return hashlib.sha256(text.replace("\r\n", "\n").encode()).hexdigest()[:16]


def check_costs_digest() -> None:
    """Raises if `costs.py` changed since `COSTS_DIGEST` was set (see the docstring)."""
    digest = costs_digest()
    if digest not in (COSTS_DIGEST, None):
        raise ImportError(
            "andes_gym/surrogate/costs.py changed since the compiled kernels were last "
            f"checked against it: set COSTS_DIGEST = {digest!r} in "
            "andes_gym/surrogate/compiled/kernels.py (editing that file makes numba "
            "recompile the kernels, which inline the formulas)"
        )


check_costs_digest()
linear_latency_s = njit(cache=True, inline="always")(costs.linear_latency_s)
roofline_latency_s = njit(cache=True, inline="always")(costs.roofline_latency_s)
serving_overhead_s = njit(cache=True, inline="always")(costs.serving_overhead_s)
decision_overhead_s = njit(cache=True, inline="always")(costs.decision_overhead_s)
swap_s = njit(cache=True, inline="always")(costs.swap_s)
kv_blocks = njit(cache=True, inline="always")(costs.kv_blocks)


# ======================================================================== 2. QoE

ON_TIME_TOL_S = 1e-9  # andes_gym.qoe.ON_TIME_TOL_S
COUNT_SLACK = 1e-9  # andes_gym.qoe._COUNT_SLACK
NO_PREVIOUS_S = -1e30  # andes_gym.qoe._NO_PREVIOUS_S
MAX_INV_SLOPE = 1e250  # andes_gym.qoe._MAX_INV_SLOPE


@njit(cache=True, inline="always")
def fmax(a, b):
    """np.fmax: the larger, ignoring a NaN."""
    if a != a:
        return b
    if b != b:
        return a
    return a if a >= b else b


@njit(cache=True, inline="always")
def maximum(a, b):
    """np.maximum of two numbers that are not NaN."""
    return a if a >= b else b


@njit(cache=True, inline="always")
def minimum(a, b):
    """np.minimum of two numbers that are not NaN."""
    return a if a <= b else b


@njit(cache=True)
def deliver(f, num_tokens, i, t):
    """One token to request `i` at time `t` (`QoETracker.deliver`)."""
    tds = f[T_TDS, i]
    k = num_tokens[i]
    consume = fmax(t, f[T_LAST_CONSUME, i] + 1.0 / tds)
    late = maximum(consume - (f[T_E1, i] + k / tds), 0.0)
    num_tokens[i] = k + 1
    f[T_LAST_CONSUME, i] = consume
    f[T_SUM_CONSUME, i] += consume
    f[T_SUM_DELAY, i] += late
    first = f[T_FIRST_TOKEN, i]
    if first != first or t < first:
        f[T_FIRST_TOKEN, i] = t
    f[T_LAST_TOKEN, i] = t


@njit(cache=True)
def _area_qoe(n, last, actual, arrival, ttft, tds):
    span = last - arrival - ttft
    ramp_s = n / tds
    if span <= ramp_s:
        expected = 0.5 * tds * span * span
    else:
        expected = n * n / (2.0 * tds) + n * (span - ramp_s)
    ratio = actual / expected if span > ON_TIME_TOL_S else 1.0
    return minimum(maximum(ratio, 0.0), 1.0)


@njit(cache=True)
def qoe_unmasked(n, last, sum_consume, sum_delay, arrival, ttft, tds, variant):
    """`andes_gym.qoe._qoe_unmasked` for one timeline (meaningless where n == 0)."""
    if variant == VARIANT_DELAY_FIXED:
        area = n * (n - 1.0) / (2.0 * tds)
    else:
        area = n * last - sum_consume
        area = area if area >= 0.0 else 0.0  # NaN stays NaN (masked by the caller)
        if variant == VARIANT_AREA:
            return _area_qoe(n, last, area, arrival, ttft, tds)
    if sum_delay > ON_TIME_TOL_S * n:
        return area / (sum_delay + area)
    return 1.0


@njit(cache=True)
def _with_pending(
    n, last, sum_consume, sum_delay, arrival, ttft, tds, e1, inv_tds, horizon, p, variant
):
    """The QoE once `p` more tokens arrive at `horizon` after `n` (`_project_pending`,
    then the QoE; 1 for a timeline with no token)."""
    start = fmax(horizon, last + inv_tds)
    late = maximum(start - (e1 + n * inv_tds), 0.0)
    if p > 0.0:
        last = start + (p - 1.0) * inv_tds
    pending_consume = p * start + 0.5 * inv_tds * p * (p - 1.0)
    n = n + p
    if not n > 0.0:
        return 1.0
    return qoe_unmasked(
        n, last, sum_consume + pending_consume, sum_delay + p * late, arrival, ttft, tds, variant
    )


@njit(cache=True)
def _pending_then_qoe(
    n, last, sum_consume, sum_delay, arrival, ttft, tds, e1, inv_tds, horizon, total, variant
):
    """Steps 2 and 3 of predict_qoe ("due" pending tokens at the horizon, then the QoE);
    `total` < 0 means unknown."""
    target = maximum(np.floor((horizon - e1) * tds + COUNT_SLACK) + 1.0, 0.0)
    if total >= 0.0:
        target = minimum(target, total)
    p = maximum(target - n, 0.0)
    return _with_pending(
        n, last, sum_consume, sum_delay, arrival, ttft, tds, e1, inv_tds, horizon, p, variant
    )


@njit(cache=True, inline="always")
def _sum_max_affine(c, b, inv_delta, half_delta, m, m_m1):
    cnt = minimum(maximum(np.floor((c - b) * inv_delta) + 1.0, 0.0), m)
    return cnt * c + (m - cnt) * b + half_delta * (m_m1 - cnt * (cnt - 1.0))


@njit(cache=True)
def predictions(f, num_tokens, i, now, lookahead_s, rate, total, variant):
    """`(qoe_now, q_serve, q_wait)` of request `i` as `make_candidates` computes them;
    `total` is the oracle's output length, or < 0 when unknown."""
    arrival = f[T_ARRIVAL, i]
    ttft = f[T_TTFT, i]
    tds = f[T_TDS, i]
    inv_tds = 1.0 / tds
    e1 = arrival + ttft
    k = float(num_tokens[i])
    last = f[T_LAST_CONSUME, i]
    sum_consume = f[T_SUM_CONSUME, i]
    sum_delay = f[T_SUM_DELAY, i]
    horizon = now + lookahead_s
    qoe_now = _pending_then_qoe(
        k, last, sum_consume, sum_delay, arrival, ttft, tds, e1, inv_tds, now, total, variant
    )
    q_wait = _pending_then_qoe(
        k, last, sum_consume, sum_delay, arrival, ttft, tds, e1, inv_tds, horizon, total, variant
    )
    # Served at `rate` until the horizon (andes_gym.qoe._served_part / _project_served).
    m = np.floor((horizon - now) * rate + COUNT_SLACK)
    if total >= 0.0:
        m = minimum(m, maximum(total - k, 0.0))
    r = maximum(rate, 1e-9)
    delta = 1.0 / minimum(r, tds) - inv_tds
    inv_delta = 1.0 / maximum(delta, 1.0 / MAX_INV_SLOPE)
    half_delta = delta * 0.5
    m_m1 = m * (m - 1.0)
    e_next = e1 + k * inv_tds
    c_a = fmax(last + inv_tds - e_next, NO_PREVIOUS_S)
    c_b = now + 1.0 / r - e_next
    sum_late = _sum_max_affine(c_a, c_b, inv_delta, half_delta, m, m_m1)
    served_delay = _sum_max_affine(maximum(c_a, 0.0), c_b, inv_delta, half_delta, m, m_m1)
    served_consume = m * e_next + 0.5 * inv_tds * m * (m - 1.0) + sum_late
    served_last = last
    if m > 0.0:
        served_last = e_next + (m - 1.0) * inv_tds + maximum(c_a, c_b + (m - 1.0) * delta)
    q_serve = _pending_then_qoe(
        k + m,
        served_last,
        sum_consume + served_consume,
        sum_delay + served_delay,
        arrival,
        ttft,
        tds,
        e1,
        inv_tds,
        horizon,
        total,
        variant,
    )
    return qoe_now, q_serve, q_wait


@njit(cache=True)
def qoe_if_completed(f, num_tokens, i, now, total, variant):
    """QoE of request `i` if its missing tokens (of `total`) all arrived at `now`."""
    tds = f[T_TDS, i]
    k = float(num_tokens[i])
    return _with_pending(
        k,
        f[T_LAST_CONSUME, i],
        f[T_SUM_CONSUME, i],
        f[T_SUM_DELAY, i],
        f[T_ARRIVAL, i],
        f[T_TTFT, i],
        tds,
        f[T_E1, i],
        1.0 / tds,
        now,
        maximum(total - k, 0.0),
        variant,
    )


# ===================================================================== 3. engine


@njit(cache=True, inline="always")
def iteration_s(pi, pf, p, d, ctx):
    """`LatencyModel.iteration_s` (its coefficients in PF_L0..PF_L4)."""
    c0, c1, c2, c3, c4 = pf[PF_L0], pf[PF_L1], pf[PF_L2], pf[PF_L3], pf[PF_L4]
    if pi[P_LATENCY_KIND] == LATENCY_LINEAR:
        return linear_latency_s(c0, c1, c2, c3, c4, p, d, ctx)
    return roofline_latency_s(c0, c1, c2, c3, c4, p, d, ctx)


@njit(cache=True)
def admit_arrivals(ints, qf, sti, stf):
    """Arrived requests join the waiting ones (at iteration boundaries)."""
    lo = sti[S_NEXT_ARRIVAL]
    n = sti[S_N]
    now = stf[SF_NOW]
    arrival = qf[T_ARRIVAL]
    if lo >= n or arrival[lo] > now:
        return
    hi = lo
    active = ints[R_ACTIVE]
    num_active = sti[S_NUM_ACTIVE]
    while hi < n and arrival[hi] <= now:
        ints[R_STATUS, hi] = WAITING
        active[num_active] = hi
        num_active += 1
        hi += 1
    sti[S_NUM_ACTIVE] = num_active
    sti[S_NEXT_ARRIVAL] = hi


@njit(cache=True)
def preempt(ints, flags, sti, i):
    """Moves running request `i` back to waiting, freeing its KV blocks; returns the
    blocks it held (a swap preemption's transfer is charged by the caller)."""
    held = ints[R_HELD, i]
    sti[S_BLOCKS_USED] -= held
    ints[R_HELD, i] = 0
    ints[R_STATUS, i] = WAITING
    ints[R_PREEMPT, i] += 1
    return held


@njit(cache=True)
def _preempt_all(ints, flags, sti, stf, pi, pf, ids, num):
    """`SurrogateBackend._preempt_requests(ids[:num])`."""
    held_total = 0
    swap = pi[P_SWAP] != 0
    for j in range(num):
        i = ids[j]
        held_total += preempt(ints, flags, sti, i)
        if swap:
            flags[B_SWAPPED, i] = True
        else:
            ints[R_COMP, i] = 0
    if swap:
        stf[SF_SWAP_DEBT] += swap_s(held_total, pf[PF_SWAP_S_PER_BLOCK])


@njit(cache=True)
def _compact(ids, num, status):
    """Drops finished requests from `ids[:num]`, keeping the order; returns the new count."""
    kept = 0
    for j in range(num):
        i = ids[j]
        if status[i] != FINISHED:
            ids[kept] = i
            kept += 1
    return kept


@njit(cache=True)
def _finish(ints, flags, sti, ids, num):
    """`SurrogateBackend._finish(ids[:num])`."""
    status = ints[R_STATUS]
    for j in range(num):
        i = ids[j]
        status[i] = FINISHED
        flags[B_DONE, i] = True
        sti[S_BLOCKS_USED] -= ints[R_HELD, i]
        ints[R_HELD, i] = 0
    sti[S_NUM_FINISHED] += num
    sti[S_NUM_ORDER] = _compact(ints[R_ORDER], sti[S_NUM_ORDER], status)
    sti[S_NUM_ACTIVE] = _compact(ints[R_ACTIVE], sti[S_NUM_ACTIVE], status)


@njit(cache=True)
def empty_iteration(sti, stf, pf):
    """An iteration that runs nothing: time still advances (never hang)."""
    stf[SF_NOW] += pf[PF_EMPTY_ITER_S] + stf[SF_SWAP_DEBT]
    stf[SF_SWAP_DEBT] = 0.0
    sti[S_NUM_ITERATIONS] += 1
    sti[S_ITERS_LEFT] = 0


@njit(cache=True)
def _plan_running(ints, gen, pi, run, num_run, alloc):
    """New tokens per running request under the token budget; returns the budget left."""
    prompt, comp = ints[R_PROMPT], ints[R_COMP]
    num_multi = 0
    for r in range(num_run):
        i = run[r]
        if prompt[i] + gen[i] - comp[i] > 1:
            num_multi += 1
    budget = pi[P_MAX_TOKENS] - (num_run - num_multi)
    before = 0
    used = 0
    for r in range(num_run):
        i = run[r]
        want = prompt[i] + gen[i] - comp[i]
        if want > 1:
            alloc[r] = min(max(budget - before, 0), want)
            before += want
            used += alloc[r]
        else:
            alloc[r] = 1
    return budget - used


@njit(cache=True)
def _fit_running(ints, flags, gen, sti, stf, pi, pf, sched, new):
    """The running requests of the decision (into `sched`, in order) and their new tokens
    (`new`), preempting the lowest in the order while their KV growth overflows the
    cache. Returns (running, token budget left, blocks they grow by)."""
    bs = pi[P_BLOCK_SIZE]
    comp, held, status = ints[R_COMP], ints[R_HELD], ints[R_STATUS]
    order = ints[R_ORDER]
    while True:
        num_order = sti[S_NUM_ORDER]
        num_run = 0
        for j in range(num_order):
            if status[order[j]] == RUNNING:
                sched[num_run] = order[j]
                num_run += 1
        budget = _plan_running(ints, gen, pi, sched, num_run, new)
        grow = 0
        for r in range(num_run):
            i = sched[r]
            grow += kv_blocks(comp[i] + new[r], bs) - held[i]
        if sti[S_BLOCKS_USED] + grow <= pi[P_TOTAL_BLOCKS] or num_run == 0:
            return num_run, budget, grow
        # KV overflow: preempt the running request lowest in the decision's order.
        victim = sched[num_run - 1 : num_run]
        _preempt_all(ints, flags, sti, stf, pi, pf, victim, 1)
        kept = 0
        for j in range(num_order):
            if order[j] != victim[0]:
                order[kept] = order[j]
                kept += 1
        sti[S_NUM_ORDER] = kept


@njit(cache=True)
def _plan_admissions(ints, flags, gen, sti, pi, pf, sched, new, num_run, budget, free_blocks):
    """Admits queued requests of the decision in order while a seat, budget and blocks
    remain, stopping at the first that lacks one (appended to `sched` / `new` after the
    running ones). Returns (admitted, seconds to swap admitted requests back in)."""
    bs = pi[P_BLOCK_SIZE]
    prompt, comp, status = ints[R_PROMPT], ints[R_COMP], ints[R_STATUS]
    order = ints[R_ORDER]
    seats = pi[P_MAX_SEQS] - num_run
    if seats <= 0 or budget <= 0:
        return 0, 0.0
    num_q = 0
    before = 0
    need = 0
    nonzero = 0
    fit = 0
    for j in range(sti[S_NUM_ORDER]):
        i = order[j]
        if status[i] == RUNNING:
            continue
        if num_q == seats:
            break
        want = prompt[i] + gen[i] - comp[i]
        a = min(max(budget - before, 0), want)
        before += want
        sched[num_run + num_q] = i
        new[num_run + num_q] = a
        if a != 0:
            nonzero += 1
        need += kv_blocks(comp[i] + a, bs)
        if need <= free_blocks and fit == num_q:
            fit = num_q + 1
        num_q += 1
    num_admit = min(nonzero, fit)
    swapped_blocks = 0
    for j in range(num_admit):
        i = sched[num_run + j]
        if pi[P_SWAP] != 0 and flags[B_SWAPPED, i]:
            swapped_blocks += kv_blocks(comp[i], bs)
            flags[B_SWAPPED, i] = False
        status[i] = RUNNING
    restore_s = 0.0
    if swapped_blocks:
        restore_s = swap_s(swapped_blocks, pf[PF_SWAP_S_PER_BLOCK])
    return num_admit, restore_s


@njit(cache=True)
def _run_scheduled(ints, flags, qf, gen, sti, stf, pi, pf, sched, new, num_sched, extra_s):
    """Prices the iteration of `sched[:num_sched]` (computing `new` tokens each; `extra_s`
    of swap transfers on top), advances the clock, grows the KV and delivers the tokens."""
    bs = pi[P_BLOCK_SIZE]
    prompt, comp, held = ints[R_PROMPT], ints[R_COMP], ints[R_HELD]
    num_decode = 0
    new_total = 0
    context = 0
    for r in range(num_sched):
        i = sched[r]
        c = comp[i] + new[r]
        new_total += new[r]
        context += c
        if new[r] == 1 and c == prompt[i] + gen[i] and gen[i] > 0:
            num_decode += 1
    latency_s = iteration_s(
        pi, pf, float(new_total - num_decode), float(num_decode), float(context)
    )
    if pi[P_ITER_OVERHEAD] != 0:
        latency_s += serving_overhead_s(
            pf[PF_PER_PREFILL_SEQ_S],
            pf[PF_PER_REQUEST_S],
            num_sched - num_decode,
            sti[S_NUM_ACTIVE],
        )
    latency_s += extra_s
    t_end = stf[SF_NOW] + latency_s
    stf[SF_NOW] = t_end
    num_done = 0
    output = ints[R_OUTPUT]
    for r in range(num_sched):
        i = sched[r]
        c = comp[i] + new[r]
        comp[i] = c
        h = kv_blocks(c, bs)
        sti[S_BLOCKS_USED] += h - held[i]
        held[i] = h
        if c == prompt[i] + gen[i]:  # this iteration completed its context: a token
            deliver(qf, gen, i, t_end)
            if gen[i] == output[i]:
                new[num_done] = i  # reuses `new` (read above) for the finished ids
                num_done += 1
    if num_done:
        _finish(ints, flags, sti, new, num_done)


@njit(cache=True)
def iteration(ints, flags, qf, gen, sti, stf, pi, pf):
    """One engine iteration under the current decision (`SurrogateBackend._iteration`)."""
    num_order = sti[S_NUM_ORDER]
    sched = np.empty(num_order, dtype=np.int64)
    new = np.empty(num_order, dtype=np.int64)
    num_run, budget, grow = _fit_running(ints, flags, gen, sti, stf, pi, pf, sched, new)
    free_blocks = pi[P_TOTAL_BLOCKS] - sti[S_BLOCKS_USED] - grow
    num_admit, restore_s = _plan_admissions(
        ints, flags, gen, sti, pi, pf, sched, new, num_run, budget, free_blocks
    )
    num_sched = 0
    for r in range(num_run + num_admit):
        if new[r] > 0:
            sched[num_sched] = sched[r]
            new[num_sched] = new[r]
            num_sched += 1
    if num_sched == 0:
        empty_iteration(sti, stf, pf)
        return
    extra_s = stf[SF_SWAP_DEBT] + restore_s
    stf[SF_SWAP_DEBT] = 0.0
    _run_scheduled(ints, flags, qf, gen, sti, stf, pi, pf, sched, new, num_sched, extra_s)
    sti[S_NUM_ITERATIONS] += 1
    sti[S_ITERS_LEFT] -= 1


@njit(cache=True)
def run_iterations(ints, flags, qf, gen, sti, stf, pi, pf):
    """Runs the current decision's remaining iterations (at most one in one-iteration
    mode); returns whether it ran any."""
    ran = False
    while sti[S_ITERS_LEFT] > 0 and sti[S_NUM_ORDER] > 0:
        iteration(ints, flags, qf, gen, sti, stf, pi, pf)
        ran = True
        if pi[P_ONE_ITERATION] != 0:
            break
    if sti[S_NUM_ORDER] == 0:
        sti[S_ITERS_LEFT] = 0
    return ran


@njit(cache=True)
def advance(ints, flags, qf, gen, sti, stf, pi, pf):
    """`SurrogateBackend.next_decision` up to building the candidates: returns DECISION at
    a decision point (R_NEEDED / R_CONTEXT then hold each candidate's KV blocks needed and
    context, by position in R_ACTIVE), OVER once the episode is over (every request
    finished, or the time limit reached), and in one-iteration mode ITERATED after each
    iteration of a decision it applied itself (call again to go on)."""
    limit = stf[SF_TIME_LIMIT]
    bs = pi[P_BLOCK_SIZE]
    prompt, comp = ints[R_PROMPT], ints[R_COMP]
    one_iteration = pi[P_ONE_ITERATION] != 0
    while True:
        # Only in one-iteration mode can an applied decision have iterations left here.
        if one_iteration and run_iterations(ints, flags, qf, gen, sti, stf, pi, pf):
            return ITERATED
        if sti[S_NUM_FINISHED] == sti[S_N]:
            return OVER
        if stf[SF_NOW] >= limit:
            return OVER
        admit_arrivals(ints, qf, sti, stf)
        num_active = sti[S_NUM_ACTIVE]
        if num_active == 0:
            t_next = qf[T_ARRIVAL, sti[S_NEXT_ARRIVAL]]
            if t_next >= limit:
                stf[SF_NOW] = max(stf[SF_NOW], limit)
                return OVER
            stf[SF_NOW] = max(stf[SF_NOW], t_next)
            continue
        active = ints[R_ACTIVE]
        total_needed = 0
        for c in range(num_active):
            i = active[c]
            context = prompt[i] + gen[i]
            in_prefill = 1 if (context - comp[i] > 1 or gen[i] == 0) else 0
            needed = kv_blocks(context + in_prefill, bs)
            ints[R_NEEDED, c] = needed
            ints[R_CONTEXT, c] = context
            total_needed += needed
        uncontested = num_active <= pi[P_MAX_SEQS] and total_needed <= pi[P_TOTAL_BLOCKS]
        if pi[P_SKIP_UNCONTESTED] != 0 and uncontested:
            ints[R_ORDER, :num_active] = active[:num_active]
            sti[S_NUM_ORDER] = num_active
            sti[S_ITERS_LEFT] = pi[P_ITERS_PER_DECISION]
            run_iterations(ints, flags, qf, gen, sti, stf, pi, pf)
            if one_iteration:
                return ITERATED
            continue
        num_running = 0
        for c in range(num_active):
            if ints[R_STATUS, active[c]] == RUNNING:
                num_running += 1
        sti[S_NUM_RUNNING] = num_running
        return DECISION


@njit(cache=True)
def apply_selected(ints, flags, qf, gen, sti, stf, pi, pf):
    """`SurrogateBackend.apply`: the decision is R_SCRATCH[:S_NUM_SELECTED] (candidate
    positions, highest priority first) with B_SELECTED flags by position."""
    num_active = sti[S_NUM_ACTIVE]
    active = ints[R_ACTIVE]
    status = ints[R_STATUS]
    to_preempt = np.empty(num_active, dtype=np.int64)
    num_preempt = 0
    for c in range(num_active):
        i = active[c]
        if status[i] == RUNNING and not flags[B_SELECTED, c]:
            to_preempt[num_preempt] = i
            num_preempt += 1
    if num_preempt:
        _preempt_all(ints, flags, sti, stf, pi, pf, to_preempt, num_preempt)
    num_selected = sti[S_NUM_SELECTED]
    for j in range(num_selected):
        ints[R_ORDER, j] = active[ints[R_SCRATCH, j]]
    sti[S_NUM_ORDER] = num_selected
    sti[S_ITERS_LEFT] = pi[P_ITERS_PER_DECISION]
    if pi[P_DECISION_OVERHEAD] != 0:  # building the decision delays the next iteration
        stf[SF_NOW] += decision_overhead_s(pf[PF_DECISION_S], pf[PF_PER_CANDIDATE_S], num_active)
    if num_selected == 0:
        empty_iteration(sti, stf, pf)
    else:
        run_iterations(ints, flags, qf, gen, sti, stf, pi, pf)


# ================================================================ 4. environment

# The feature set `observe` below implements (andes_gym.core.features); the backend
# refuses to run when that module describes another one.
FEATURE_SET = (
    "andes_gym.slots",
    1,
    (
        "is_running",
        "log_age_over_ttft",
        "log_tokens_delivered",
        "lag_over_ttft",
        "log_buffer_tokens",
        "qoe_now",
        "q_serve",
        "q_wait",
        "q_gain_x10",
        "log_prompt_tokens",
        "kv_needed_frac",
        "kv_held_frac",
        "tds_x_latency",
        "preemptions",
        "log_remaining_oracle",
    ),
    (
        "kv_used_frac",
        "kv_demand_frac",
        "running_frac",
        "log_waiting",
        "overflow_frac",
        "latency_growth",
        "max_tds_x_latency",
    ),
)
NUM_SLOT_FEATURES = len(FEATURE_SET[2])
OBS_BOUND = 10.0  # andes_gym.core.features.OBS_BOUND


@njit(cache=True, inline="always")
def _clip(x, lo, hi):
    return minimum(maximum(x, lo), hi)


@njit(cache=True)
def token_latency_s(pi, pf, batch, mean_context, num_requests):
    """`Capacity.token_latency_s(batch)` of the capacity the engine builds
    (`LatencyModel.serving_latency_by_batch`)."""
    b = min(max(batch, 1), pi[P_MAX_SEQS])
    latency = iteration_s(pi, pf, 0.0, float(b), b * mean_context)
    if pf[PF_PER_REQUEST_S] > 0.0:
        latency = latency + serving_overhead_s(
            pf[PF_PER_PREFILL_SEQ_S], pf[PF_PER_REQUEST_S], 0, num_requests
        )
    return latency


@njit(cache=True)
def _slot_features(ints, qf, gen, stf, pi, pf, obs, m, rate, latency_now):
    """The K x 15 slot features and the mask of the `m` slotted candidates (R_SLOT)."""
    k = pi[P_K_SLOTS]
    f = NUM_SLOT_FEATURES
    active = ints[R_ACTIVE]
    status = ints[R_STATUS]
    slots = ints[R_SLOT]
    total_blocks = float(pi[P_TOTAL_BLOCKS])
    now = stf[SF_NOW]
    lookahead_s = pf[PF_LOOKAHEAD_S]
    variant = pi[P_VARIANT]
    oracle = pi[P_ORACLE] != 0
    for s in range(m):
        c = slots[s]
        i = active[c]
        total = float(ints[R_OUTPUT, i]) if oracle else -1.0
        qoe_now, q_serve, q_wait = predictions(qf, gen, i, now, lookahead_s, rate, total, variant)
        arrival = qf[T_ARRIVAL, i]
        ttft_raw = qf[T_TTFT, i]
        ttft = maximum(ttft_raw, 1e-6)
        tds = qf[T_TDS, i]
        delivered = gen[i]
        next_ideal_s = arrival + ttft_raw + delivered / tds
        last_consume = qf[T_LAST_CONSUME, i]
        buffer_tok = 0.0
        if last_consume == last_consume:
            buffer_tok = maximum(last_consume - now, 0.0) * tds
        row = s * f
        obs[row + 0] = 1.0 if status[i] == RUNNING else 0.0
        obs[row + 1] = np.log1p(maximum(now - arrival, 0.0) / ttft)
        obs[row + 2] = np.log1p(float(delivered)) / 8.0
        obs[row + 3] = _clip((now - next_ideal_s) / ttft, -4.0, 4.0)
        obs[row + 4] = np.log1p(buffer_tok) / 4.0
        obs[row + 5] = qoe_now
        obs[row + 6] = q_serve
        obs[row + 7] = q_wait
        obs[row + 8] = _clip(10.0 * (q_serve - q_wait), 0.0, 4.0)
        obs[row + 9] = np.log1p(float(ints[R_PROMPT, i])) / 8.0
        obs[row + 10] = ints[R_NEEDED, c] / total_blocks
        obs[row + 11] = ints[R_HELD, i] / total_blocks
        obs[row + 12] = tds * latency_now
        obs[row + 13] = min(ints[R_PREEMPT, i], 4) / 4.0
        if oracle:
            obs[row + 14] = np.log1p(float(ints[R_OUTPUT, i] - gen[i])) / 8.0
        obs[k * f + s] = 1.0


@njit(cache=True)
def observe(ints, qf, gen, sti, stf, pi, pf, obs):
    """Writes the observation of the pending decision point into `obs` (float32) and the
    slotted candidates' positions into R_SLOT; see `andes_gym.core.features.observe`."""
    k = pi[P_K_SLOTS]
    f = NUM_SLOT_FEATURES
    obs[:] = 0.0
    active = ints[R_ACTIVE]
    status = ints[R_STATUS]
    num_active = sti[S_NUM_ACTIVE]
    slots = ints[R_SLOT]
    # Slots: running candidates by arrival, then waiting ones by arrival (ids ascend with
    # arrival, and R_ACTIVE is ascending), the first K.
    num_running = 0
    running_context = 0
    all_context = 0
    for c in range(num_active):
        all_context += ints[R_CONTEXT, c]
        if status[active[c]] == RUNNING:
            if num_running < k:
                slots[num_running] = c
            num_running += 1
            running_context += ints[R_CONTEXT, c]
    m = min(num_running, k)
    for c in range(num_active):
        if m >= k:
            break
        if status[active[c]] != RUNNING:
            slots[m] = c
            m += 1
    sti[S_NUM_SLOTS] = m
    sti[S_NUM_RUNNING] = num_running
    if num_running:
        mean_context = float(running_context) / num_running
    else:
        mean_context = float(all_context) / num_active
    total_blocks = float(pi[P_TOTAL_BLOCKS])
    latency_now = token_latency_s(pi, pf, max(num_running, 1), mean_context, num_active)
    rate = 1.0 / maximum(
        token_latency_s(pi, pf, min(num_active, pi[P_MAX_SEQS]), mean_context, num_active), 1e-9
    )
    _slot_features(ints, qf, gen, stf, pi, pf, obs, m, rate, latency_now)
    held_sum = 0
    needed_sum = 0
    max_tds = 0.0
    for c in range(num_active):
        i = active[c]
        held_sum += ints[R_HELD, i]
        needed_sum += ints[R_NEEDED, c]
        if c == 0 or qf[T_TDS, i] > max_tds:
            max_tds = qf[T_TDS, i]
    n = num_active
    lat1 = maximum(token_latency_s(pi, pf, 1, mean_context, num_active), 1e-12)
    lat_full = token_latency_s(pi, pf, pi[P_MAX_SEQS], mean_context, num_active)
    g = k * f + k
    obs[g + 0] = held_sum / total_blocks
    obs[g + 1] = minimum(needed_sum / total_blocks, 4.0)
    obs[g + 2] = num_running / pi[P_MAX_SEQS]
    obs[g + 3] = np.log1p(float(n - num_running)) / 8.0
    obs[g + 4] = max(n - k, 0) / n if n else 0.0
    obs[g + 5] = minimum(lat_full / lat1 - 1.0, 8.0)
    obs[g + 6] = max_tds * latency_now if n else 0.0
    for j in range(len(obs)):
        obs[j] = _clip(obs[j], np.float32(-OBS_BOUND), np.float32(OBS_BOUND))


@njit(cache=True)
def select_from_slots(ints, flags, sti, pi, action, scores):
    """`scores_from_slots` then `select`: the decision goes to R_SCRATCH (positions,
    highest priority first), S_NUM_SELECTED and the B_SELECTED flags."""
    num_active = sti[S_NUM_ACTIVE]
    m = sti[S_NUM_SLOTS]
    slots = ints[R_SLOT]
    slotted = flags[B_SELECTED]  # marks slotted positions first, then the selection
    slotted[:num_active] = False
    lowest = 0.0
    for s in range(m):
        scores[slots[s]] = action[s]
        slotted[slots[s]] = True
        if s == 0 or action[s] < lowest:
            lowest = action[s]
    rest = num_active - m
    if rest > 0:
        floor = (lowest if m else 0.0) - 1.0
        r = 0
        for c in range(num_active):  # overflow candidates, oldest first
            if not slotted[c]:
                scores[c] = floor - r / rest
                r += 1
    # Priority: score high first; ties to the earlier arrival, then the lower id, which is
    # the position order (a stable sort keeps it).
    order = np.argsort(-scores[:num_active], kind="mergesort")
    slotted[:num_active] = False
    blocks_budget = pi[P_TOTAL_BLOCKS]
    seqs_budget = pi[P_MAX_SEQS]
    chosen = 0
    for j in range(num_active):
        if seqs_budget == 0 or blocks_budget == 0:
            break
        c = order[j]
        need = ints[R_NEEDED, c]
        if need <= blocks_budget:
            ints[R_SCRATCH, chosen] = c
            slotted[c] = True
            chosen += 1
            blocks_budget -= need
            seqs_budget -= 1
    sti[S_NUM_SELECTED] = chosen


@njit(cache=True)
def potential(ints, flags, qf, gen, sti, stf, pi):
    """`SchedulingEnv._potential_now`: the fixed sum of finished requests' QoE plus the
    QoE of every other arrived request if its missing tokens arrived now."""
    now = stf[SF_NOW]
    n = sti[S_N]
    n_arrived = np.searchsorted(qf[T_ARRIVAL, :n], now, side="right")
    variant = pi[P_VARIANT]
    counted = flags[B_COUNTED]
    done = flags[B_DONE]
    output = ints[R_OUTPUT]
    first_open = sti[S_FIRST_OPEN]
    while first_open < n_arrived and counted[first_open]:
        first_open += 1
    sti[S_FIRST_OPEN] = first_open
    final_sum = stf[SF_FINAL_SUM]
    open_sum = 0.0
    for i in range(first_open, n_arrived):
        if counted[i]:
            continue
        q = qoe_if_completed(qf, gen, i, now, float(output[i]), variant)
        if done[i]:
            final_sum += q
            counted[i] = True
        else:
            open_sum += q
    stf[SF_FINAL_SUM] = final_sum
    return final_sum + open_sum


@njit(cache=True)
def advance_and_observe(ints, flags, qf, gen, sti, stf, pi, pf, obs):
    """Runs to the next decision point and observes it; False when the episode ended."""
    if advance(ints, flags, qf, gen, sti, stf, pi, pf) == DECISION:
        observe(ints, qf, gen, sti, stf, pi, pf, obs)
        return True
    return False


@njit(cache=True)
def step_slots(ints, flags, qf, gen, sti, stf, pi, pf, obs, action, scores):
    """One environment step on slot scores: select, apply, run to the next decision point
    and observe it. Returns (decision pending, reward potential after the step)."""
    select_from_slots(ints, flags, sti, pi, action, scores)
    apply_selected(ints, flags, qf, gen, sti, stf, pi, pf)
    pending = advance_and_observe(ints, flags, qf, gen, sti, stf, pi, pf, obs)
    return pending, potential(ints, flags, qf, gen, sti, stf, pi)
