"""0-1 knapsack with a cardinality bound: the optimization inside the Andes scheduler.

    maximize   sum_i v_i x_i
    subject to sum_i l_i x_i <= M,   sum_i x_i <= B,   x_i in {0, 1}

(docs/ANDES.md §2: v_i the QoE gain of serving request i, l_i its KV blocks, M the KV
capacity, B the batch limit.) Two solvers on plain arrays, independent of candidates so
they can be checked against brute force:

- `greedy_knapsack`: by value density v_i / l_i, taking each item that still fits
  (the paper's default solver).
- `dp_knapsack`: exact dynamic programming over [item][count][weight], O(N * B * M).

What the greedy guarantees (proved in `greedy_knapsack`'s docstring and checked in
tests/test_policies_knapsack.py): when it ends with fewer than B items, its value is at
least OPT - max_i v_i. When it fills the batch, no constant bound holds: B small dense
items can crowd out B large valuable ones.
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_MAX_DP_CELLS = 20_000_000
"""Largest DP table (items x counts x weights) `dp_knapsack` builds; bytes of its back-pointers."""


def _check_problem(
    values: np.ndarray, weights: np.ndarray, max_weight: int, max_items: int
) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights)
    if v.ndim != 1 or w.shape != v.shape:
        raise ValueError(
            f"values and weights must be 1-D of equal length, got {v.shape} and {w.shape}"
        )
    if not np.all(np.isfinite(v)):
        bad = int(np.argmax(~np.isfinite(v)))
        raise ValueError(f"values[{bad}] = {v[bad]} is not finite")
    if len(w) and (w.dtype.kind not in "iu" or w.min() < 0):
        raise ValueError(f"weights must be non-negative integers, got dtype {w.dtype}")
    if max_weight < 0 or max_items < 0:
        raise ValueError(f"max_weight and max_items must be >= 0, got {max_weight} and {max_items}")
    return v, w.astype(np.int64, copy=False)


def density_order(values: np.ndarray, weights: np.ndarray, tiebreak: np.ndarray | None = None):
    """Item indices by value density `v / l`, highest first.

    Zero-weight items have infinite density. Ties go to the lower `tiebreak` (default: the
    lower index).
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    density = np.divide(v, w, out=np.full_like(v, np.inf), where=w > 0)
    tie = np.arange(len(v)) if tiebreak is None else np.asarray(tiebreak)
    return np.lexsort((tie, -density))


def pack_in_order(weights: np.ndarray, max_weight: int, max_items: int) -> np.ndarray:
    """Positions taken by walking items in the given order and taking each one that fits.

    Equivalent to the sequential loop, but vectorized in rounds: items that do not fit the
    remaining weight are dropped (they never will), and the longest fitting prefix of the
    rest is taken at once.

    Args:
        weights: Weights in walking order (non-negative integers).
        max_weight: Weight budget M.
        max_items: Item budget B.

    Returns:
        Positions (into `weights`) of the items taken, in walking order.
    """
    w = np.asarray(weights, dtype=np.int64)
    pos = np.arange(len(w))
    budget_w, budget_n = int(max_weight), int(max_items)
    taken = []
    while budget_n > 0 and len(pos):
        pos = pos[w[pos] <= budget_w]
        if not len(pos):
            break
        cum = np.cumsum(w[pos])
        k = min(int(np.searchsorted(cum, budget_w, side="right")), budget_n)
        taken.append(pos[:k])
        budget_w -= int(cum[k - 1])
        budget_n -= k
        pos = pos[k:]
    return np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)


def greedy_knapsack(
    values: np.ndarray,
    weights: np.ndarray,
    max_weight: int,
    max_items: int,
    tiebreak: np.ndarray | None = None,
) -> np.ndarray:
    """The greedy solver: items by value density, each taken if it still fits.

    Bound: let OPT be the optimum and suppose the greedy ends with fewer than `max_items`
    items. Then the item limit never stopped it, so it made exactly the choices of the
    greedy on the problem without the item limit, whose value is at least that of the
    greedy that stops at the first item k that does not fit. The LP relaxation of the
    weight-only problem is that prefix plus a fraction of item k, so
    greedy >= LP - v_k >= OPT - max_i v_i. With the item limit binding there is no such
    bound (B dense cheap items versus B heavy valuable ones).

    Args:
        values: Item values (finite).
        weights: Item weights (non-negative integers).
        max_weight: Weight capacity M.
        max_items: Item limit B.
        tiebreak: Optional rank per item breaking density ties (lower first).

    Returns:
        Indices of the chosen items, highest density first.

    Raises:
        ValueError: For malformed inputs.
    """
    v, w = _check_problem(values, weights, max_weight, max_items)
    order = density_order(v, w, tiebreak)
    return order[pack_in_order(w[order], max_weight, max_items)]


def _dp_scale(n: int, counts: int, max_weight: int, max_cells: int, allow_scaling: bool) -> int:
    """Smallest weight divisor that keeps the DP table within `max_cells`."""
    cells = n * (counts + 1) * (max_weight + 1)
    if cells <= max_cells:
        return 1
    per_weight = n * (counts + 1)
    if not allow_scaling or per_weight * 2 > max_cells:
        raise ValueError(
            f"DP knapsack table of {n} items x {counts + 1} counts x {max_weight + 1} weights "
            f"= {cells} cells exceeds max_cells={max_cells}"
            + ("" if allow_scaling else "; allow weight scaling or raise max_cells")
        )
    return math.ceil((max_weight + 1) / (max_cells // per_weight))


def dp_knapsack(
    values: np.ndarray,
    weights: np.ndarray,
    max_weight: int,
    max_items: int,
    max_cells: int = DEFAULT_MAX_DP_CELLS,
    allow_scaling: bool = False,
) -> np.ndarray:
    """The exact solver: dynamic programming over [item][count][weight].

    `best[c, m]` is the largest value of at most the items seen so far, exactly c of them,
    with total weight at most m. Each item updates the whole table in one vectorized step;
    a boolean back-pointer table (N x (C + 1) x (M + 1) bytes, C = min(N, B)) recovers the
    items. Ties prefer leaving an item out, so zero-value items are never chosen.

    When the table would exceed `max_cells`: with `allow_scaling`, weights are divided by
    the smallest s that fits, rounding each weight up and the capacity down
    (`ceil(l / s)`, `floor(M / s)`). Every scaled-feasible set is feasible for the original
    problem, but the result may then be below the true optimum. Without it, an error.

    Args:
        values: Item values (finite).
        weights: Item weights (non-negative integers).
        max_weight: Weight capacity M.
        max_items: Item limit B.
        max_cells: Largest table allowed.
        allow_scaling: Scale weights down instead of raising when the table is too big.

    Returns:
        Indices of the chosen items, ascending.

    Raises:
        ValueError: For malformed inputs, or a table above `max_cells` without scaling.
    """
    v, w = _check_problem(values, weights, max_weight, max_items)
    items = np.flatnonzero((v > 0) & (w <= max_weight))  # others never help
    n = len(items)
    counts = min(n, int(max_items))
    cap = int(min(max_weight, w[items].sum())) if n else 0
    if n == 0 or counts == 0:
        return np.zeros(0, dtype=np.int64)
    scale = _dp_scale(n, counts, cap, max_cells, allow_scaling)
    wi = -(-w[items] // scale)  # ceil
    cap //= scale
    best = np.full((counts + 1, cap + 1), -np.inf)
    best[0, :] = 0.0
    took = np.zeros((n, counts + 1, cap + 1), dtype=bool)
    for j in range(n):
        lj = int(wi[j])
        if lj > cap:
            continue
        cand = np.full_like(best, -np.inf)
        cand[1:, lj:] = best[:-1, : cap + 1 - lj] + v[items[j]]
        better = cand > best
        took[j] = better
        np.copyto(best, cand, where=better)
    c = int(np.argmax(best[:, cap]))
    m = cap
    chosen = []
    for j in range(n - 1, -1, -1):
        if c > 0 and took[j, c, m]:
            chosen.append(items[j])
            c -= 1
            m -= int(wi[j])
    return np.sort(np.asarray(chosen, dtype=np.int64))
