"""The one selection rule: scores -> which requests run next, under KV and batch limits.

Every caller (surrogate env, live env, vLLM hook) turns a policy's scores into a decision
with `select`, and checks solver policies' decisions with `check_decision`. Nothing else
decides admission or preemption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from andes_gym.core.candidates import Candidates, Capacity


class InvalidDecision(ValueError):
    """A decision or a score vector that breaks the contract of the selection rule."""


@dataclass(frozen=True, eq=False)
class Decision:
    """Which candidates run in the next iteration.

    Attributes:
        selected: Boolean per candidate: runs next iteration.
        order: Indices of the selected candidates, highest priority first. Engines admit
            waiting requests in this order.
    """

    selected: np.ndarray
    order: np.ndarray

    def preempted(self, candidates: Candidates) -> np.ndarray:
        """Indices of running candidates that are not selected (to preempt)."""
        return np.flatnonzero(candidates.is_running & ~self.selected)

    def admitted(self, candidates: Candidates) -> np.ndarray:
        """Indices of waiting candidates that are selected, in admission order."""
        return self.order[~candidates.is_running[self.order]]


def fits_all(kv_blocks_needed: np.ndarray, total_kv_blocks: int, max_num_seqs: int) -> bool:
    """True when every candidate fits at once, so every policy's decision is the same."""
    return len(kv_blocks_needed) <= max_num_seqs and int(kv_blocks_needed.sum()) <= total_kv_blocks


def priority_order(scores: np.ndarray, candidates: Candidates) -> np.ndarray:
    """Candidate indices by score (high first); ties go to the earlier arrival, then lower id."""
    return np.lexsort((candidates.request_id, candidates.arrival_s, -scores))


def select(scores: np.ndarray, candidates: Candidates, capacity: Capacity) -> Decision:
    """Admits candidates in score order while they fit, skipping those that do not.

    Walks the candidates from the highest score down; a candidate is selected when its
    `kv_blocks_needed` fits in the blocks left and the batch has room. A candidate that
    does not fit is skipped (a smaller one behind it may still fit), so the rule is
    work-conserving. Running candidates left out are preempted by the engine.

    Args:
        scores: One finite score per candidate.
        candidates: The candidates.
        capacity: The engine's limits.

    Returns:
        The decision.

    Raises:
        InvalidDecision: When scores have the wrong shape or are not finite.
    """
    n = len(candidates)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (n,):
        raise InvalidDecision(f"scores must have shape ({n},), got {scores.shape}")
    finite = np.isfinite(scores)
    if not finite.all():
        bad = int(np.argmax(~finite))
        raise InvalidDecision(f"scores[{bad}] = {scores[bad]} is not finite")
    order = priority_order(scores, candidates)
    need = candidates.kv_blocks_needed[order]
    blocks_budget = capacity.total_kv_blocks
    seqs_budget = capacity.max_num_seqs
    # Fast path: the longest prefix that fits is taken whole.
    cum = np.cumsum(need)
    prefix = min(int(np.searchsorted(cum, blocks_budget, side="right")), seqs_budget)
    chosen = [order[:prefix]]
    if prefix:
        blocks_budget -= int(cum[prefix - 1])
        seqs_budget -= prefix
    # The candidate at `prefix` did not fit (or no seat is left); walk on past it.
    chosen += _fill_rest(order[prefix + 1 :], need[prefix + 1 :], blocks_budget, seqs_budget)
    picked = np.concatenate(chosen).astype(np.int64, copy=False)
    selected = np.zeros(n, dtype=bool)
    selected[picked] = True
    return Decision(selected=selected, order=picked)


# `_fill_rest` walks at most this many candidates one by one (plain Python on lists is
# the fastest way through a short rest); a longer rest first goes through numpy rounds.
_WALK_MAX = 128
# Rounds of `_fill_rest` before it walks whatever is left one candidate at a time.
_MAX_FILL_ROUNDS = 8


def _fill_rest(
    order: np.ndarray, need: np.ndarray, blocks_budget: int, seqs_budget: int
) -> list[np.ndarray]:
    """The candidates after the first skipped one that still fit, in order.

    The rule walks them one by one: stop when no seat or no block is left; take one when
    its blocks fit. A long rest (thousands of candidates under a burst) is first cut down
    in rounds of a few numpy calls: the budget only shrinks, so a candidate that does
    not fit now never will and is dropped; of the others the longest prefix that fits
    is taken, and the first one past it is skipped. The walk finishes what is left.
    """
    taken = []
    if seqs_budget == 0 or blocks_budget == 0 or not len(need):
        return taken
    # Rounds need sizes >= 0 (sorted running sums); anything else is walked.
    rounds = 0
    if len(need) > _WALK_MAX and blocks_budget > 0 and np.minimum.reduce(need) >= 0:
        rounds = _MAX_FILL_ROUNDS
    for _ in range(rounds):
        if seqs_budget == 0 or blocks_budget == 0 or len(need) <= _WALK_MAX:
            break
        fits = need <= blocks_budget
        if not fits.all():
            order, need = order[fits], need[fits]
            if not len(need):
                return taken
        cum = np.cumsum(need)
        # Stop after the budget is used up exactly, as the walk does (before any 0-block one).
        num = min(
            int(np.searchsorted(cum, blocks_budget, side="right")),
            int(np.searchsorted(cum, blocks_budget, side="left")) + 1,
            seqs_budget,
        )
        taken.append(order[:num])
        blocks_budget -= int(cum[num - 1])
        seqs_budget -= num
        order, need = order[num + 1 :], need[num + 1 :]
    rest = []
    for cand, blocks in zip(order.tolist(), need.tolist(), strict=True):
        if seqs_budget == 0 or blocks_budget == 0:
            break
        if blocks <= blocks_budget:
            rest.append(cand)
            blocks_budget -= blocks
            seqs_budget -= 1
    if rest:
        taken.append(np.asarray(rest, dtype=np.int64))
    return taken


def decision_from_order(order: np.ndarray, num_candidates: int) -> Decision:
    """A decision that selects exactly `order` (highest priority first)."""
    order = np.asarray(order, dtype=np.int64)
    selected = np.zeros(num_candidates, dtype=bool)
    selected[order] = True
    return Decision(selected=selected, order=order)


def check_decision(decision: Decision, candidates: Candidates, capacity: Capacity) -> None:
    """Checks the invariants every decision must satisfy.

    Raises:
        InvalidDecision: Naming the broken invariant: not a `Decision`, shapes, a
            candidate listed twice or missing from `order`, the KV capacity or the batch
            limit exceeded, or an empty selection while a candidate would fit (nothing
            would run, so the engine would stall on the same decision point forever).
    """
    if not isinstance(decision, Decision):
        raise InvalidDecision(f"a policy must return a Decision, got {type(decision).__name__}")
    n = len(candidates)
    sel = np.asarray(decision.selected)
    if sel.shape != (n,) or sel.dtype != bool:
        raise InvalidDecision(f"selected must be a bool array of shape ({n},), got {sel.shape}")
    order = np.asarray(decision.order)
    if order.dtype.kind not in "iu" and not (order.size == 0 and order.dtype.kind == "f"):
        raise InvalidDecision(f"order must hold integer indices, got dtype {order.dtype}")
    order = order.astype(np.int64, copy=False)
    if order.ndim != 1 or (len(order) and (order.min() < 0 or order.max() >= n)):
        raise InvalidDecision(f"order must index the {n} candidates, got {order!r}")
    if len(np.unique(order)) != len(order):
        raise InvalidDecision("order lists a candidate more than once")
    if len(order) != int(sel.sum()) or not sel[order].all():
        raise InvalidDecision("order must list exactly the selected candidates")
    used = int(candidates.kv_blocks_needed[sel].sum())
    if used > capacity.total_kv_blocks:
        raise InvalidDecision(
            f"selection needs {used} KV blocks, capacity is {capacity.total_kv_blocks}"
        )
    if len(order) > capacity.max_num_seqs:
        raise InvalidDecision(
            f"selection runs {len(order)} requests, max_num_seqs is {capacity.max_num_seqs}"
        )
    if not len(order) and n:
        _check_nothing_fits(candidates, capacity)


def _check_nothing_fits(candidates: Candidates, capacity: Capacity) -> None:
    """Raises when an empty selection leaves out a candidate that would run alone."""
    fits = candidates.kv_blocks_needed <= capacity.total_kv_blocks
    if capacity.max_num_seqs >= 1 and fits.any():
        first = int(np.argmax(fits))
        raise InvalidDecision(
            f"the decision selects nothing of {len(candidates)} candidates although "
            f"candidate {first} ({int(candidates.kv_blocks_needed[first])} KV blocks of "
            f"{capacity.total_kv_blocks}) would fit: nothing would run, and the engine "
            "would stall on this decision point"
        )
