"""Where an environment's episodes come from: a workload config drawn per seed, one fixed
workload, or a mixture of configs (one chosen per episode, for training across loads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from andes_gym.workloads import (
    StreamsConfig,
    WorkloadConfig,
    load_workload_config,
    make_workload,
    workload_config_from_dict,
)
from andes_gym.workloads.generate import load_trace_rows
from andes_gym.workloads.spec import Workload
from andes_gym.workloads.traces import TraceData


@dataclass(frozen=True)
class ConfigWorkloads:
    """Each episode is a fresh seeded draw of a workload config.

    A trace-based config reads its file once, here, so `reset` never touches disk.
    """

    config: WorkloadConfig | StreamsConfig
    trace: TraceData | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        cfg = self.config
        if self.trace is None and isinstance(cfg, WorkloadConfig) and cfg.arrivals.kind == "trace":
            object.__setattr__(self, "trace", load_trace_rows(self.config))

    def sample(self, seed: int) -> Workload:
        return make_workload(self.config, seed, trace=self.trace)


@dataclass(frozen=True)
class FixedWorkload:
    """Every episode replays the same workload (a trace); the seed only seeds the engine."""

    workload: Workload

    def sample(self, seed: int) -> Workload:
        return self.workload


@dataclass(frozen=True)
class MixtureWorkloads:
    """Each episode draws one of several workload configs (uniformly, from the episode
    seed), then a fresh draw of it: domain randomization over loads and shapes.

    Attributes:
        sources: The component sources (config-based; fixed traces are not mixed).
    """

    sources: tuple[ConfigWorkloads, ...]

    def __post_init__(self) -> None:
        if len(self.sources) < 2:
            raise ValueError(
                f"a workload mixture needs at least 2 entries, got {len(self.sources)}"
            )

    def choose(self, seed: int) -> int:
        """Index of the component that episode `seed` plays (deterministic in the seed)."""
        return int(np.random.default_rng([int(seed), 0x4D49]).integers(len(self.sources)))

    def sample(self, seed: int) -> Workload:
        return self.sources[self.choose(seed)].sample(seed)


WorkloadSource = ConfigWorkloads | FixedWorkload | MixtureWorkloads


def workload_source(spec) -> WorkloadSource:
    """Resolves an env's `workload` argument (read once, at construction).

    Args:
        spec: A preset name (`"bursty_2x"`), a YAML path, a dict of config fields, a
            `WorkloadConfig`, a `Workload`, an existing source, or a list of two or more
            names / paths / dicts / configs (a `MixtureWorkloads`: one per episode).

    Raises:
        ValueError: For anything else, naming what was passed (for a list, which entry).
    """
    if isinstance(spec, ConfigWorkloads | FixedWorkload | MixtureWorkloads):
        return spec
    if isinstance(spec, list | tuple):
        return _mixture(spec)
    if isinstance(spec, Workload):
        return FixedWorkload(spec)
    source = _config_source(spec)
    if source is None:
        raise ValueError(
            "workload must be a preset name, a YAML path, a dict, a WorkloadConfig, a "
            f"Workload or a list of configs; got {type(spec).__name__}"
        )
    return source


def _mixture(entries: list | tuple) -> MixtureWorkloads:
    """A mixture of the configs `entries` name; an error names the entry at fault."""
    sources = []
    for i, entry in enumerate(entries):
        try:
            source = workload_source(entry)
        except ValueError as exc:
            raise ValueError(f"workload[{i}]: {exc}") from None
        if not isinstance(source, ConfigWorkloads):
            raise ValueError(
                f"workload[{i}]: a mixture takes workload configs (names, paths, dicts), "
                f"got {type(entry).__name__}"
            )
        sources.append(source)
    return MixtureWorkloads(tuple(sources))


def _config_source(spec) -> ConfigWorkloads | None:
    """A config, a dict of its fields, or a preset name / YAML path as a source; None for
    anything else."""
    if isinstance(spec, WorkloadConfig | StreamsConfig):
        return ConfigWorkloads(spec)
    if isinstance(spec, dict):
        return ConfigWorkloads(workload_config_from_dict(spec))
    if isinstance(spec, str | Path):
        return ConfigWorkloads(load_workload_config(spec))
    return None
