"""The preemption-overhead guard of Andes (v2's "overhead-aware refiner", docs/ANDES.md §2).

A knapsack solution may swap running requests out for waiting ones. Each preemption costs
the victim a re-prefill of its whole context later, which the knapsack value does not see.
The guard walks the solver's admissions in priority order and accepts one only if its QoE
gain exceeds the QoE loss of the preemptions it forces; otherwise the running requests stay.
"""

from __future__ import annotations

import bisect

import numpy as np

from andes_gym.agents.knapsack import pack_in_order

COST_CAP = 1e6
"""Stand-in for an infinite preemption cost (QoE gains are at most 1), kept finite so
cumulative sums stay subtractable."""


def _mandatory_evictions(
    used_w: int, used_n: int, cum_w: np.ndarray, max_weight: int, max_items: int
) -> int:
    """Fewest victims (from the front of the eviction order) that make the running set fit."""
    need_w, need_n = used_w - max_weight, used_n - max_items
    j = max(need_n, 0)
    if need_w > 0:
        j = max(j, int(np.searchsorted(cum_w, need_w, side="left")) + 1)
    return j


def guard_preemptions(
    *,
    selected: np.ndarray,
    is_running: np.ndarray,
    weights: np.ndarray,
    gain: np.ndarray,
    preempt_cost: np.ndarray,
    priority: np.ndarray,
    max_weight: int,
    max_items: int,
) -> np.ndarray:
    """Refines a knapsack selection so that no admission costs more QoE than it gains.

    Steps:

    1. The victims are the running items the solver left out, ordered cheapest first by
       preemption cost per block (ties: lowest priority first).
    2. All running items start kept. If they do not fit on their own (their KV grows every
       step), the fewest victims needed are evicted unconditionally, as any engine must.
    3. The solver's admissions are walked in priority order. One that fits in the room
       left is admitted. Otherwise the fewest further victims that make room are found;
       the admission is accepted (and they are evicted) only if
       `gain[a] > sum(preempt_cost[victims])`, else it is skipped and they stay.
    4. The room left is filled in priority order with any unselected item that fits
       (work conservation; this may re-admit a victim nobody needed the room of).

    Args:
        selected: Boolean per item: the solver's selection (feasible).
        is_running: Boolean per item: holds KV now.
        weights: KV blocks per item (l_i).
        gain: Knapsack value per item (the QoE gain of serving it).
        preempt_cost: QoE loss of preempting each running item (its value plus the
            re-prefill penalty); `inf` marks an item that must not be preempted unless
            the running set does not fit.
        priority: All item indices in priority order (highest first).
        max_weight: KV capacity M.
        max_items: Batch limit B.

    Returns:
        Indices of the items to run, in priority order.
    """
    n = len(selected)
    w = np.asarray(weights, dtype=np.int64)
    rank = np.empty(n, dtype=np.int64)
    rank[priority] = np.arange(n)
    victims = np.flatnonzero(is_running & ~selected)
    keep = is_running & selected if len(victims) == 0 else is_running.copy()
    if len(victims):
        cost = np.minimum(preempt_cost[victims], COST_CAP)
        ev = victims[np.lexsort((-rank[victims], cost / np.maximum(w[victims], 1)))]
        cum_w = np.cumsum(w[ev])
        cum_cost = np.cumsum(np.minimum(preempt_cost[ev], COST_CAP))
        j = _mandatory_evictions(int(w[keep].sum()), int(keep.sum()), cum_w, max_weight, max_items)
        keep[ev[:j]] = False
        admissions = priority[(selected & ~is_running)[priority]]
        j = _walk_admissions(
            keep, admissions, ev, cum_w, cum_cost, j, w, gain, max_weight, max_items
        )
    else:
        keep |= selected
    return fill_in_priority(keep, w, priority, max_weight, max_items)


def fill_in_priority(
    keep: np.ndarray, weights: np.ndarray, priority: np.ndarray, max_weight: int, max_items: int
) -> np.ndarray:
    """Adds, in priority order, every item not in `keep` that fits in the room left.

    Args:
        keep: Boolean per item, a feasible selection; updated in place.
        weights: KV blocks per item.
        priority: All item indices in priority order.
        max_weight: KV capacity M.
        max_items: Batch limit B.

    Returns:
        Indices of the kept items, in priority order.
    """
    w = np.asarray(weights, dtype=np.int64)
    free_w = max_weight - int(w[keep].sum())
    free_n = max_items - int(keep.sum())
    rest = priority[~keep[priority]]
    keep[rest[pack_in_order(w[rest], free_w, free_n)]] = True
    return priority[keep[priority]]


def _walk_admissions(
    keep, admissions, ev, cum_w, cum_cost, j, w, gain, max_weight, max_items
) -> int:
    """Step 3 of `guard_preemptions`; updates `keep` in place, returns victims evicted.

    A scalar loop over Python lists (bisect instead of np.searchsorted): admissions are
    few, and per-element numpy calls would cost more than the arithmetic.
    """
    free_w = max_weight - int(w[keep].sum())
    free_n = max_items - int(keep.sum())
    cum_w_list, cum_cost_list = cum_w.tolist(), cum_cost.tolist()
    ev_list = ev.tolist()
    num_ev = len(ev_list)
    admitted, evicted_upto = [], j
    for a, la, ga in zip(
        admissions.tolist(), w[admissions].tolist(), gain[admissions].tolist(), strict=True
    ):
        if la <= free_w and free_n >= 1:
            admitted.append(a)
            free_w -= la
            free_n -= 1
            continue
        if j >= num_ev:
            continue  # no victim left: only admissions that fit can follow
        base_w = cum_w_list[j - 1] if j else 0
        base_cost = cum_cost_list[j - 1] if j else 0.0
        k = j + (1 if free_n < 1 else 0)
        short_w = la - free_w
        if short_w > 0:
            k = max(k, bisect.bisect_left(cum_w_list, base_w + short_w) + 1)
        if k > num_ev or ga <= cum_cost_list[k - 1] - base_cost:
            continue
        admitted.append(a)
        free_w += cum_w_list[k - 1] - base_w - la
        free_n += (k - j) - 1
        j = k
    keep[ev_list[evicted_upto:j]] = False
    keep[admitted] = True
    return j
