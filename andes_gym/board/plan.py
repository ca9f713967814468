"""From a suite and the command line to the list of cells to run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from andes_gym.board.cells import Cell, file_digest, policy_is_oracle, policy_label
from andes_gym.board.suite import PolicySpec, ResolvedWorkload


@dataclass(frozen=True)
class PolicyEntry:
    """A policy on the board.

    Attributes:
        label: Name in the tables.
        spec: Registered name, `.onnx` path or `module:Class`.
        kwargs: Constructor arguments.
        oracle: Reads the true remaining lengths (runs with `oracle=True`, marked on the board).
        digest: Content hash of a checkpoint file ("" otherwise).
    """

    label: str
    spec: str
    kwargs: dict = field(default_factory=dict)
    oracle: bool = False
    digest: str = ""


def choose_policies(
    cli: Sequence[str] | None, suite_policies: Sequence[PolicySpec]
) -> list[PolicySpec]:
    """The run's policies: the command line's when given, else the suite's.

    A command-line name equal to a suite policy's label takes that policy's kwargs, so
    `--policies andes model.onnx` runs the suite's configured `andes` beside a checkpoint.
    """
    if not cli:
        return list(suite_policies)
    by_label = {p.label or policy_label(p.policy): p for p in suite_policies}
    return [by_label.get(name) or PolicySpec(name) for name in cli]


def policy_entries(specs: Sequence[PolicySpec | str]) -> list[PolicyEntry]:
    """Resolves policy specs to board entries.

    Raises:
        ValueError: When two specs get the same label.
    """
    entries = []
    for spec in specs:
        if isinstance(spec, str):
            spec = PolicySpec(spec)
        entries.append(
            PolicyEntry(
                label=spec.label or policy_label(spec.policy),
                spec=spec.policy,
                kwargs=dict(spec.kwargs),
                oracle=policy_is_oracle(spec.policy),
                digest=_checkpoint_digest(spec.policy) if spec.policy.endswith(".onnx") else "",
            )
        )
    labels = [e.label for e in entries]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"two policies share the label(s) {dupes}; give them distinct labels")
    return entries


def _checkpoint_digest(path: str) -> str:
    """sha256 prefix of an exported policy.

    Raises:
        FileNotFoundError: When the file does not exist (a relative path is read from the
            current directory; the cpu-live suite names one of the source checkout).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"policy checkpoint {path} not found (relative paths are read from the current "
            f"directory, {Path.cwd()}); a suite that names a checkpoint of the source "
            "checkout, like cpu-live, runs from the repository root, or pass --policies "
            "without it"
        )
    return file_digest(path)


def make_cell(
    workload: ResolvedWorkload,
    policy: PolicyEntry,
    seed: int,
    env_kind: str,
    env_kwargs: dict,
    num_timelines: int = 0,
    code: str = "",
) -> Cell:
    """The cell of one (policy, workload, seed); oracle policies get `oracle=True`.

    `code` is the `code_digest()` of the run (part of the cell's cache key).
    """
    kwargs = dict(env_kwargs)
    if policy.oracle:
        kwargs["oracle"] = True
    return Cell(
        workload=workload.name,
        policy=policy.label,
        seed=int(seed),
        policy_spec=policy.spec,
        workload_config=workload.config,
        env_kind=env_kind,
        env_kwargs=kwargs,
        oracle=policy.oracle,
        num_timelines=num_timelines,
        policy_digest=policy.digest,
        policy_kwargs=dict(policy.kwargs),
        code_digest=code,
    )


def board_cells(
    workloads: Sequence[ResolvedWorkload],
    policies: Sequence[PolicyEntry],
    seeds: Sequence[int],
    env_kind: str,
    env_kwargs: dict,
    num_timelines: int = 4,
    code: str = "",
) -> list[Cell]:
    """Every (policy, workload, seed) cell of the ranking tables."""
    return [
        make_cell(w, p, s, env_kind, env_kwargs, num_timelines, code)
        for w in workloads
        for p in policies
        for s in seeds
    ]
