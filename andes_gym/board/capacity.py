"""Capacity searches over the surrogate or the live engine, one bisection per policy.

All bisections advance together in rounds: a round collects the pending load of every
search and policy, runs those cells (every seed) in one parallel batch, then updates each
bisection with the mean over seeds of its QoE field. The loads and the outcome depend only
on the cell results, so they are deterministic like the cells.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from andes_gym.board.bisection import Bisection
from andes_gym.board.cells import Cell, policy_label
from andes_gym.board.plan import PolicyEntry, make_cell
from andes_gym.board.suite import CapacitySpec, Suite, capacity_workload


@dataclass
class CapacityOutcome:
    """Capacity of one policy under one search.

    Attributes:
        search: Name of the search.
        policy: Policy label.
        oracle: Whether the policy used oracle information.
        parameter: The bisected load parameter.
        threshold: The QoE kept.
        qoe_field: The summary field compared with it.
        capacity: Highest load meeting the threshold (None: below the range, or failed).
        low: Final bracket low end.
        high: Final bracket high end.
        censored: "within", "below_range", "above_range" or "failed".
        error: Error of a failed cell (the search stops there).
        evaluations: (load, mean QoE over seeds) in evaluation order.
    """

    search: str
    policy: str
    oracle: bool
    parameter: str
    threshold: float
    qoe_field: str
    capacity: float | None = None
    low: float = float("nan")
    high: float = float("nan")
    censored: str = ""
    error: str = ""
    evaluations: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class _Search:
    spec: CapacitySpec
    policy: PolicyEntry
    seeds: tuple[int, ...]
    bisection: Bisection
    outcome: CapacityOutcome


def run_capacity(
    suite: Suite,
    specs: Sequence[CapacitySpec],
    policies: Sequence[PolicyEntry],
    run: Callable[[list[Cell], str], list[dict]],
    env_kind: str,
    env_kwargs: dict,
    seeds: Sequence[int] | None = None,
    restrict_policies: bool = False,
    code: str = "",
) -> tuple[list[CapacityOutcome], list[dict]]:
    """Runs the capacity searches.

    Args:
        suite: The suite (for resolving the searches' workloads).
        specs: The searches.
        policies: The run's policies; a search with its own `policies` list (labels) runs
            those of them that are in the run, else all of them (with
            `restrict_policies`, always all of them).
        run: Runs a batch of cells (with a progress label) and returns their records.
        env_kind: Environment kind.
        env_kwargs: Environment kwargs.
        seeds: Seeds overriding each search's own (the command line's `--seeds`).
        restrict_policies: Use exactly `policies` (the command line's `--policies`).
        code: The run's `code_digest()` (part of each cell's cache key).

    Returns:
        `(outcomes, points)`: one outcome per (search, policy), and one point per evaluated
        cell (search, policy, parameter, load, seed, status, mean_qoe, mean_qoe_fixed).
    """
    by_label = {p.label: p for p in policies}
    searches: list[_Search] = []
    for spec in specs:
        chosen = policies
        if spec.policies is not None and not restrict_policies:
            # Listed by label or by spec (a checkpoint path counts as its stem).
            wanted = [policy_label(name) for name in spec.policies]
            chosen = [by_label[label] for label in wanted if label in by_label]
        spec_seeds = tuple(seeds) if seeds is not None else (spec.seeds or suite.seeds)
        for policy in chosen:
            outcome = CapacityOutcome(
                spec.name,
                policy.label,
                policy.oracle,
                spec.parameter,
                spec.qoe_threshold,
                spec.qoe_field,
            )
            bis = Bisection(spec.low, spec.high, spec.tolerance, spec.qoe_threshold)
            searches.append(_Search(spec, policy, spec_seeds, bis, outcome))
    points: list[dict] = []
    round_no = 0
    while any(not s.bisection.done and not s.outcome.error for s in searches):
        round_no += 1
        active = [s for s in searches if not s.bisection.done and not s.outcome.error]
        cells: dict[tuple, Cell] = {}
        wanted: list[tuple[_Search, float, list[tuple]]] = []
        for s in active:
            for load in s.bisection.pending():
                workload = capacity_workload(suite, s.spec, load)
                keys = []
                for seed in s.seeds:
                    cell = make_cell(workload, s.policy, seed, env_kind, env_kwargs, code=code)
                    cells[cell.key] = cell
                    keys.append(cell.key)
                wanted.append((s, load, keys))
        records = {
            (r["workload"], r["policy"], r["seed"]): r
            for r in run(list(cells.values()), f"capacity round {round_no}")
        }
        _update(wanted, records, points)
    for s in searches:
        _finish(s)
    return [s.outcome for s in searches], points


def _update(wanted, records: dict, points: list[dict]) -> None:
    """Feeds each bisection the mean over seeds at its pending loads."""
    values: dict[int, dict[float, float]] = {}
    for s, load, keys in wanted:
        field_values = []
        for key in keys:
            record = records[key]
            summary = record.get("summary") or {}
            points.append(
                {
                    "search": s.spec.name,
                    "policy": s.policy.label,
                    "parameter": s.spec.parameter,
                    "load": load,
                    "seed": key[2],
                    "status": record["status"],
                    "mean_qoe": summary.get("mean_qoe"),
                    "mean_qoe_fixed": summary.get("mean_qoe_fixed"),
                }
            )
            if record["status"] != "ok":
                s.outcome.error = f"{key[0]} seed {key[2]}: {record['error']}"
            else:
                field_values.append(summary.get(s.spec.qoe_field))
        if not s.outcome.error:
            vals = np.asarray([np.nan if v is None else v for v in field_values], dtype=float)
            values.setdefault(id(s), {})[load] = float(np.nanmean(vals)) if len(vals) else 0.0
    for s, _, _ in wanted:
        if not s.outcome.error and id(s) in values:
            s.bisection.update(values.pop(id(s)))


def _finish(s: _Search) -> None:
    out = s.outcome
    out.evaluations = list(s.bisection.evaluations)
    if out.error:
        out.censored = "failed"
        return
    result = s.bisection.result()
    out.capacity = result.capacity
    out.low = result.low
    out.high = result.high
    out.censored = result.censored
