"""Where an environment's episodes come from: a workload config drawn per seed, or one fixed workload."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from andes_gym.workloads import WorkloadConfig, load_workload_config, make_workload
from andes_gym.workloads.generate import load_trace_rows
from andes_gym.workloads.spec import Workload
from andes_gym.workloads.traces import TraceData


@dataclass(frozen=True)
class ConfigWorkloads:
    """Each episode is a fresh seeded draw of a workload config.

    A trace-based config reads its file once, here, so `reset` never touches disk.
    """

    config: WorkloadConfig
    trace: TraceData | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.trace is None and self.config.arrivals.kind == "trace":
            object.__setattr__(self, "trace", load_trace_rows(self.config))

    def sample(self, seed: int) -> Workload:
        return make_workload(self.config, seed, trace=self.trace)


@dataclass(frozen=True)
class FixedWorkload:
    """Every episode replays the same workload (a trace); the seed only seeds the engine."""

    workload: Workload

    def sample(self, seed: int) -> Workload:
        return self.workload


def workload_source(spec) -> ConfigWorkloads | FixedWorkload:
    """Resolves an env's `workload` argument (read once, at construction).

    Args:
        spec: A preset name (`"bursty_2x"`), a YAML path, a dict of config fields, a
            `WorkloadConfig`, a `Workload`, or an existing source.

    Raises:
        ValueError: For anything else, naming what was passed.
    """
    if isinstance(spec, ConfigWorkloads | FixedWorkload):
        return spec
    if isinstance(spec, Workload):
        return FixedWorkload(spec)
    if isinstance(spec, WorkloadConfig):
        return ConfigWorkloads(spec)
    if isinstance(spec, dict):
        from andes_gym.workloads import workload_config_from_dict

        return ConfigWorkloads(workload_config_from_dict(spec))
    if isinstance(spec, str | Path):
        return ConfigWorkloads(load_workload_config(spec))
    raise ValueError(
        "workload must be a preset name, a YAML path, a dict, a WorkloadConfig or a "
        f"Workload; got {type(spec).__name__}"
    )
