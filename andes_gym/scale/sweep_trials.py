"""The trials of a sweep: the grid (`KEY=[v1,v2]` items), its cartesian product with the
seeds, and each trial's `--set` overrides and training command line.

The sweep that runs them is `andes_gym.scale.sweep`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from andes_gym.config_schema import number_from_text


@dataclass(frozen=True)
class Trial:
    """One training run of the sweep.

    Attributes:
        index: Position in the sweep (grid order, then seeds).
        name: Directory-safe name (`t003__learning_rate=0.0001__seed1`).
        grid: The grid point: `KEY=VALUE` overrides, in the grid's key order.
        seed: The training seed (`--set seed=...`).
    """

    index: int
    name: str
    grid: tuple[str, ...]
    seed: int


def parse_grid_item(item: str) -> tuple[str, list]:
    """`KEY=[v1,v2]` (YAML list) or `KEY=v` into the key and its values.

    Raises:
        ValueError: When the item has no `=`, an empty key, or an empty list.
    """
    if "=" not in item:
        raise ValueError(f"--grid {item!r} must look like key=[v1,v2] (values as YAML)")
    key, raw = (part.strip() for part in item.split("=", 1))
    if not key:
        raise ValueError(f"--grid {item!r} has an empty key")
    try:
        values = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ValueError(f"--grid {item!r}: values are not valid YAML ({exc})") from exc
    values = [number_from_text(v) for v in (values if isinstance(values, list) else [values])]
    if not values:
        raise ValueError(f"--grid {item!r} lists no values")
    return key, values


def format_value(value) -> str:
    """A grid value as `--set` reads it back (YAML flow style, one line)."""
    if isinstance(value, str):
        return value
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")
    )


def _safe(text: str) -> str:
    """`text` with every character a directory name should not hold replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", text)


def make_trials(grid: dict[str, list], seeds: Sequence[int]) -> list[Trial]:
    """The cartesian product of the grid (keys in order) times the seeds."""
    keys = list(grid)
    trials = []
    for values in itertools.product(*(grid[k] for k in keys)):
        point = tuple(f"{k}={format_value(v)}" for k, v in zip(keys, values, strict=True))
        label = "_".join(
            f"{k.rsplit('.', 1)[-1]}={format_value(v)}" for k, v in zip(keys, values, strict=True)
        )
        for seed in seeds:
            index = len(trials)
            parts = [f"t{index:03d}", *([_safe(label)] if label else []), f"seed{seed}"]
            trials.append(Trial(index, "__".join(parts), point, int(seed)))
    return trials


def trial_overrides(overrides: Sequence[str], trial: Trial, run_root: Path) -> list[str]:
    """A trial's `KEY=VALUE` overrides of the config: the fixed ones, its grid point, its
    seed, and its private `run_root`."""
    return [*overrides, *trial.grid, f"seed={trial.seed}", f"run_root={run_root}"]


def trial_argv(config_path: str, sets: Sequence[str]) -> list[str]:
    """The `python -m andes_gym.train` arguments of a trial (what reproduces its run)."""
    return ["--config", config_path, *(arg for s in sets for arg in ("--set", s))]
