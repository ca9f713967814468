"""Workloads named on the command line: a preset with inline overrides, or a trace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from andes_gym.workloads import (
    TargetConfig,
    load_workload_config,
    make_workload,
    read_trace_workload,
    workload_config_from_dict,
    workload_config_to_dict,
)
from andes_gym.workloads.spec import Workload


def parse_workload_spec(spec: str):
    """`preset@key=value,a.b=value` -> a `WorkloadConfig` with the overrides applied.

    Keys are dotted paths into the config (`num_requests`, `arrivals.rate_rps`, ...);
    values are parsed as YAML scalars.

    Raises:
        ValueError: On a malformed override or an invalid resulting config.
    """
    name, _, overrides = spec.partition("@")
    cfg = load_workload_config(name)
    if not overrides:
        return cfg
    data = workload_config_to_dict(cfg)
    for item in overrides.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"workload override {item!r} in {spec!r} must look like key=value")
        node = data
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return workload_config_from_dict(data, source=spec)


def workload_label(spec: str) -> str:
    return spec.replace("@", "[").replace(",", ";") + ("]" if "@" in spec else "")


def draw_workload(
    spec: str | None, trace: str | None, seed: int, time_scale: float
) -> tuple[str, Workload]:
    """`(label, workload)` of one preset spec or trace for one seed."""
    if trace is not None:
        targets = TargetConfig(kind="reading", time_scale=time_scale)
        wl = read_trace_workload(trace, np.random.default_rng(seed), targets)
        return Path(trace).stem, wl
    cfg = parse_workload_spec(spec)
    return workload_label(spec), make_workload(cfg, seed)
