"""Leaderboard suites: which workloads, policies, seeds and capacity searches to run.

A suite is a YAML file (`configs/suites/<name>.yaml`)::

    name: smoke
    description: CI-sized board.
    env:
      kind: surrogate                # default environment: surrogate | vllm
      kwargs: {k_slots: 16}          # kwargs for every environment kind
      surrogate: {engine: cpu_tiny}  # extra kwargs when running on the surrogate
      vllm: {}                       # extra kwargs when running on the live engine
    policies: [fcfs, lqf, andes]
    seeds: [0, 1]
    trace_targets: {kind: reading}   # targets drawn for a --trace file without targets
    workloads:
      - steady_poisson               # a preset name
      - preset: bursty_2x            # a preset with overrides (nested or dotted keys)
        name: burst_2x_small
        overrides: {num_requests: 60, arrivals.intensity: 2.0}
      - name: poisson                # an inline config, swept over a load parameter
        config: {arrivals: {kind: poisson, rate_rps: 2}, num_requests: 60}
        sweep: {parameter: rate_rps, values: [1, 2, 4]}
    capacity:
      - name: burst_capacity
        workload: {preset: bursty_2x, overrides: {num_requests: 60}}
        parameter: intensity         # rate_rps | intensity | rate_scale
        low: 1.0
        high: 2.8
        tolerance: 0.1
        qoe_threshold: 0.95

Every mapping rejects unknown keys with an error naming the key and the file.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from andes_gym.board.cells import policy_label
from andes_gym.config_files import ConfigError, read_yaml, resolve_config
from andes_gym.workloads import (
    load_workload_config,
    workload_config_from_dict,
    workload_config_to_dict,
)

ENV_KINDS = ("surrogate", "vllm")
# Load parameters a capacity search may bisect (fields of the workload's `arrivals`).
CAPACITY_PARAMETERS = ("rate_rps", "intensity", "rate_scale")
# Parameters a sweep may vary (also fields of `arrivals`).
SWEEP_PARAMETERS = (*CAPACITY_PARAMETERS, "duty", "cv")


class SuiteError(ConfigError):
    """A suite file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class EnvSpec:
    """The environment every cell runs in.

    Attributes:
        kind: Default environment kind ("surrogate" or "vllm"); `--env` overrides it.
        kwargs: Environment kwargs for every kind.
        surrogate: Extra kwargs on the surrogate (e.g. the engine profile).
        vllm: Extra kwargs on the live engine.
    """

    kind: str = "surrogate"
    kwargs: dict = field(default_factory=dict)
    surrogate: dict = field(default_factory=dict)
    vllm: dict = field(default_factory=dict)

    def kwargs_for(self, kind: str) -> dict:
        """The kwargs for environment `kind` (common ones, then the kind's own)."""
        return {**self.kwargs, **getattr(self, kind)}


@dataclass(frozen=True)
class PolicySpec:
    """A policy of the suite.

    Attributes:
        policy: A registered name, an exported `.onnx` checkpoint path, or `module:Class`.
        label: Name in the tables (default: the registered name or the checkpoint's stem).
        kwargs: Constructor arguments of a registered policy (e.g. a round-robin quantum
            matched to a time-scaled workload).
    """

    policy: str
    label: str | None = None
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    """One workload run at several values of a load parameter.

    Attributes:
        parameter: A field of the workload's `arrivals` (see `SWEEP_PARAMETERS`).
        values: The values, each a separate workload named `<name>@<parameter>=<value>`.
    """

    parameter: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class WorkloadSpec:
    """A workload of the suite as written in the YAML.

    Attributes:
        name: Name in the tables (default: the preset's or the config's name).
        preset: A workload preset name or YAML path (exclusive with `config`).
        config: An inline workload config mapping (exclusive with `preset`).
        overrides: Changes applied to the config: nested mappings or dotted keys
            (`arrivals.rate_rps: 5`).
        sweep: Run the workload at several values of a load parameter.
    """

    name: str | None = None
    preset: str | None = None
    config: dict | None = None
    overrides: dict = field(default_factory=dict)
    sweep: SweepSpec | None = None


@dataclass(frozen=True)
class CapacitySpec:
    """A capacity search: the highest load at which a policy keeps mean QoE >= threshold.

    Attributes:
        name: Name of the search (and prefix of its workloads).
        workload: The base workload (no sweep).
        parameter: The load parameter bisected (see `CAPACITY_PARAMETERS`).
        low: Low end of the range.
        high: High end of the range.
        tolerance: Width of the final bracket.
        qoe_threshold: Mean QoE to keep (the paper: 0.95).
        qoe_field: Summary field compared with the threshold ("mean_qoe" or
            "mean_qoe_fixed").
        policies: Labels of the policies searched (default: all of the run's).
        seeds: Seeds averaged at each load (default: the suite's).
    """

    name: str
    workload: WorkloadSpec
    parameter: str
    low: float
    high: float
    tolerance: float
    qoe_threshold: float = 0.95
    qoe_field: str = "mean_qoe"
    policies: tuple[str, ...] | None = None
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Suite:
    """A leaderboard suite.

    Attributes:
        name: Suite name (used in output paths and the published board).
        workloads: The workloads of the ranking tables.
        policies: Default policies (registered names, `.onnx` paths, `module:Class`, or
            mappings `{policy, label, kwargs}`).
        seeds: Default seeds; each seed draws one workload realisation per workload.
        env: The environment.
        capacity: Capacity searches.
        description: One paragraph shown on the board.
        trace_targets: Target config for a `--trace` file that lacks target columns.
        source: The file the suite came from.
    """

    name: str
    workloads: tuple[WorkloadSpec, ...]
    policies: tuple[PolicySpec, ...]
    seeds: tuple[int, ...]
    env: EnvSpec = field(default_factory=EnvSpec)
    capacity: tuple[CapacitySpec, ...] = ()
    description: str = ""
    trace_targets: dict = field(default_factory=lambda: {"kind": "reading"})
    source: str = "<dict>"


@dataclass(frozen=True)
class ResolvedWorkload:
    """A concrete workload of a suite: a validated config dict plus where it came from.

    Attributes:
        name: Unique name in the suite.
        config: Workload config as a plain dict (`workload_config_from_dict` accepts it).
        group: Name of the sweep or capacity search it belongs to (None for a plain one).
        parameter: The swept load parameter, if any.
        value: Its value.
    """

    name: str
    config: dict
    group: str | None = None
    parameter: str | None = None
    value: float | None = None


# ------------------------------------------------------------------------------ loading
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}


def _check_keys(cls: type, data: Any, where: str, source: str, skip: tuple = ()) -> dict:
    """Checks that `data` is a mapping of known, present-when-required keys of `cls`."""
    if not isinstance(data, Mapping):
        raise SuiteError(f"{source}: {where} must be a mapping, got {data!r}")
    known = {k: f for k, f in _fields(cls).items() if k not in skip}
    unknown = [k for k in data if k not in known]
    if unknown:
        raise SuiteError(
            f"{source}: unknown key {unknown[0]!r} in {where} (expected one of: {', '.join(known)})"
        )
    missing = [
        k
        for k, f in known.items()
        if f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and k not in data
    ]
    if missing:
        raise SuiteError(f"{source}: {where} is missing required key(s) {', '.join(missing)}")
    return dict(data)


def _number(value: Any, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SuiteError(f"{source}: {where} must be a finite number, got {value!r}")
    return float(value)


def _str_list(value: Any, where: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not (isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value)):
        raise SuiteError(f"{source}: {where} must be a non-empty list of strings, got {value!r}")
    return tuple(value)


def _seed_list(value: Any, where: str, source: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    ok = isinstance(value, list | tuple) and value
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    if not ok:
        raise SuiteError(
            f"{source}: {where} must be a non-empty list of integers >= 0, got {value!r}"
        )
    if len(set(value)) != len(value):
        raise SuiteError(f"{source}: {where} lists a seed twice: {list(value)}")
    return tuple(value)


def _mapping(value: Any, where: str, source: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SuiteError(f"{source}: {where} must be a mapping, got {value!r}")
    return dict(value)


def _parse_policies(value: Any, where: str, source: str) -> tuple[PolicySpec, ...]:
    if isinstance(value, str | Mapping):
        value = [value]
    if not (isinstance(value, list | tuple) and value):
        raise SuiteError(f"{source}: {where} must be a non-empty list, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            out.append(PolicySpec(item))
            continue
        data = _check_keys(PolicySpec, item, f"{where}[{i}]", source)
        label = data.get("label")
        if label is not None:
            _name(label, f"{where}[{i}].label", source)
        out.append(
            PolicySpec(
                _name(data["policy"], f"{where}[{i}].policy", source),
                label,
                _mapping(data.get("kwargs"), f"{where}[{i}].kwargs", source),
            )
        )
    return tuple(out)


def _parse_env(data: Any, source: str) -> EnvSpec:
    data = _check_keys(EnvSpec, data, "env", source)
    kind = data.get("kind", "surrogate")
    if kind not in ENV_KINDS:
        raise SuiteError(f"{source}: env.kind must be one of {list(ENV_KINDS)}, got {kind!r}")
    parts = {k: _mapping(data.get(k), f"env.{k}", source) for k in ("kwargs", *ENV_KINDS)}
    return EnvSpec(kind=kind, **parts)


def _parse_sweep(data: Any, where: str, source: str) -> SweepSpec:
    data = _check_keys(SweepSpec, data, where, source)
    parameter = data["parameter"]
    if parameter not in SWEEP_PARAMETERS:
        raise SuiteError(
            f"{source}: {where}.parameter must be one of {list(SWEEP_PARAMETERS)}, "
            f"got {parameter!r}"
        )
    values = data["values"]
    if not (isinstance(values, list) and values):
        raise SuiteError(f"{source}: {where}.values must be a non-empty list, got {values!r}")
    return SweepSpec(parameter, tuple(_number(v, f"{where}.values", source) for v in values))


def _parse_workload(data: Any, where: str, source: str, allow_sweep: bool = True) -> WorkloadSpec:
    if isinstance(data, str):
        return WorkloadSpec(preset=data)
    skip = () if allow_sweep else ("sweep",)
    data = _check_keys(WorkloadSpec, data, where, source, skip=skip)
    if ("preset" in data) == ("config" in data):
        raise SuiteError(f"{source}: {where} needs exactly one of 'preset' or 'config'")
    name = data.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise SuiteError(f"{source}: {where}.name must be a non-empty string, got {name!r}")
    config = data.get("config")
    if config is not None:
        config = _mapping(config, f"{where}.config", source)
    sweep = data.get("sweep")
    return WorkloadSpec(
        name=name,
        preset=data.get("preset"),
        config=config,
        overrides=_mapping(data.get("overrides"), f"{where}.overrides", source),
        sweep=None if sweep is None else _parse_sweep(sweep, f"{where}.sweep", source),
    )


def _parse_capacity(data: Any, where: str, source: str) -> CapacitySpec:
    data = _check_keys(CapacitySpec, data, where, source)
    parameter = data["parameter"]
    if parameter not in CAPACITY_PARAMETERS:
        raise SuiteError(
            f"{source}: {where}.parameter must be one of {list(CAPACITY_PARAMETERS)}, "
            f"got {parameter!r}"
        )
    low = _number(data["low"], f"{where}.low", source)
    high = _number(data["high"], f"{where}.high", source)
    tolerance = _number(data["tolerance"], f"{where}.tolerance", source)
    threshold = _number(data.get("qoe_threshold", 0.95), f"{where}.qoe_threshold", source)
    if not (0 < low < high) or not tolerance > 0:
        raise SuiteError(
            f"{source}: {where} needs 0 < low < high and tolerance > 0, got "
            f"low={low}, high={high}, tolerance={tolerance}"
        )
    qoe_field = data.get("qoe_field", "mean_qoe")
    if qoe_field not in ("mean_qoe", "mean_qoe_fixed"):
        raise SuiteError(
            f"{source}: {where}.qoe_field must be 'mean_qoe' or 'mean_qoe_fixed', got {qoe_field!r}"
        )
    policies = data.get("policies")
    seeds = data.get("seeds")
    return CapacitySpec(
        name=_name(data["name"], f"{where}.name", source),
        workload=_parse_workload(data["workload"], f"{where}.workload", source, allow_sweep=False),
        parameter=parameter,
        low=low,
        high=high,
        tolerance=tolerance,
        qoe_threshold=threshold,
        qoe_field=qoe_field,
        policies=None if policies is None else _str_list(policies, f"{where}.policies", source),
        seeds=None if seeds is None else _seed_list(seeds, f"{where}.seeds", source),
    )


def _name(value: Any, where: str, source: str) -> str:
    if not (isinstance(value, str) and value):
        raise SuiteError(f"{source}: {where} must be a non-empty string, got {value!r}")
    return value


def suite_from_dict(data: Any, source: str = "<dict>") -> Suite:
    """Builds and validates a suite from a YAML-shaped mapping.

    Args:
        data: The mapping.
        source: Where it came from (a file path), used in every error message.

    Returns:
        The suite; its workloads are also resolved once here so that a bad preset,
        override or config fails at load time, not in a worker.

    Raises:
        SuiteError: On an unknown or missing key (named with its place and `source`), or an
            invalid value.
    """
    data = _check_keys(Suite, data, "the suite", source, skip=("source",))
    workloads = data["workloads"]
    if not (isinstance(workloads, list) and workloads):
        raise SuiteError(f"{source}: workloads must be a non-empty list")
    capacity = data.get("capacity") or []
    if not isinstance(capacity, list):
        raise SuiteError(f"{source}: capacity must be a list, got {capacity!r}")
    suite = Suite(
        name=_name(data["name"], "name", source),
        workloads=tuple(
            _parse_workload(w, f"workloads[{i}]", source) for i, w in enumerate(workloads)
        ),
        policies=_parse_policies(data["policies"], "policies", source),
        seeds=_seed_list(data["seeds"], "seeds", source),
        env=_parse_env(data.get("env") or {}, source),
        capacity=tuple(
            _parse_capacity(c, f"capacity[{i}]", source) for i, c in enumerate(capacity)
        ),
        description=str(data.get("description", "")).strip(),
        trace_targets=_mapping(
            data.get("trace_targets", {"kind": "reading"}), "trace_targets", source
        ),
        source=source,
    )
    resolve_workloads(suite)  # validates presets, overrides and configs now
    labels = {p.label or policy_label(p.policy) for p in suite.policies}
    for i, spec in enumerate(suite.capacity):
        capacity_workload(suite, spec, spec.low)
        capacity_workload(suite, spec, spec.high)
        for name in spec.policies or ():
            if policy_label(name) not in labels:
                raise SuiteError(
                    f"{source}: capacity[{i}].policies names {name!r}, which is not one of "
                    f"the suite's policies {sorted(labels)}"
                )
    return suite


def load_suite(name_or_path: str | Path) -> Suite:
    """Loads a suite by name (`configs/suites/<name>.yaml`) or path.

    Raises:
        FileNotFoundError: When no such suite exists.
        SuiteError: When the file is not valid YAML or not a valid suite.
    """
    path = resolve_config("suites", name_or_path)
    data = read_yaml(path, "suite file")
    return suite_from_dict(data, source=str(path))


# ---------------------------------------------------------------------------- resolving
def _deep_merge(base: dict, overrides: Mapping, where: str) -> dict:
    """`base` with `overrides` applied; dotted keys address nested mappings."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"{where}: override {key!r} descends into non-mapping {part!r}")
            node = child
        leaf = parts[-1]
        if isinstance(value, Mapping) and isinstance(node.get(leaf), dict):
            node[leaf] = _deep_merge(node[leaf], value, where)
        else:
            node[leaf] = copy.deepcopy(value)
    return out


def _base_config(spec: WorkloadSpec, source: str) -> dict:
    if spec.preset is not None:
        return workload_config_to_dict(load_workload_config(spec.preset))
    config = copy.deepcopy(spec.config)
    config.setdefault("name", spec.name or "workload")
    trace_path = (config.get("arrivals") or {}).get("trace_path")
    if trace_path and not Path(trace_path).is_absolute() and source != "<dict>":
        # Like workload presets: a relative trace path is relative to the suite file.
        config["arrivals"]["trace_path"] = str((Path(source).parent / trace_path).resolve())
    return config


def workload_config(spec: WorkloadSpec, source: str, extra: Mapping | None = None) -> dict:
    """The validated config dict of a workload spec, with overrides and `extra` applied.

    Raises:
        SuiteError: Naming the file when the preset, an override or the config is bad.
    """
    try:
        config = _deep_merge(_base_config(spec, source), spec.overrides, source)
        if extra:
            config = _deep_merge(config, extra, source)
        if spec.name is not None:
            config["name"] = spec.name
        validated = workload_config_from_dict(config, source=source)
    except (ValueError, FileNotFoundError) as exc:
        if isinstance(exc, SuiteError):
            raise
        raise SuiteError(f"{source}: workload {spec.name or spec.preset!r}: {exc}") from exc
    return workload_config_to_dict(validated)


def _format_value(value: float) -> str:
    return f"{value:.10g}"


def resolve_workloads(suite: Suite) -> list[ResolvedWorkload]:
    """The suite's concrete workloads, sweeps expanded, in suite order.

    Raises:
        SuiteError: When two workloads share a name, or a config is invalid.
    """
    out: list[ResolvedWorkload] = []
    for spec in suite.workloads:
        if spec.sweep is None:
            cfg = workload_config(spec, suite.source)
            out.append(ResolvedWorkload(cfg["name"], cfg))
            continue
        base = workload_config(spec, suite.source)["name"]
        param = spec.sweep.parameter
        for value in spec.sweep.values:
            name = f"{base}@{param}={_format_value(value)}"
            cfg = workload_config(spec, suite.source, {"arrivals": {param: value}, "name": name})
            out.append(ResolvedWorkload(name, cfg, group=base, parameter=param, value=value))
    names = [w.name for w in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SuiteError(f"{suite.source}: workload name(s) used twice: {', '.join(dupes)}")
    return out


def capacity_workload(suite: Suite, spec: CapacitySpec, value: float) -> ResolvedWorkload:
    """The workload of capacity search `spec` at load `value`."""
    name = f"{spec.name}@{spec.parameter}={_format_value(value)}"
    cfg = workload_config(
        spec.workload, suite.source, {"arrivals": {spec.parameter: value}, "name": name}
    )
    return ResolvedWorkload(name, cfg, group=spec.name, parameter=spec.parameter, value=value)


def trace_workload(suite: Suite, trace_path: str | Path) -> ResolvedWorkload:
    """A project-format CSV trace as one more workload (targets from `suite.trace_targets`).

    Raises:
        FileNotFoundError: When the file does not exist.
        SuiteError: When the trace cannot be turned into a workload config.
    """
    path = Path(trace_path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"trace file not found: {path}")
    spec = WorkloadSpec(
        name=f"trace_{path.stem}",
        config={
            "name": f"trace_{path.stem}",
            "arrivals": {"kind": "trace", "trace_path": str(path), "trace_format": "project"},
            "lengths": {"kind": "trace"},
            "targets": dict(suite.trace_targets),
        },
    )
    cfg = workload_config(spec, suite.source)
    return ResolvedWorkload(cfg["name"], cfg)
