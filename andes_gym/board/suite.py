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

Every mapping rejects unknown keys with an error naming the key, the file and its line.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, MinLen
from pydantic import AfterValidator, BeforeValidator

from andes_gym.board.cells import policy_label
from andes_gym.config_files import ConfigError, KeyLines, read_yaml_lines, resolve_config
from andes_gym.config_schema import (
    Distinct,
    Int,
    NoneIsEmpty,
    Number,
    Str,
    Text,
    none_means,
    section,
    validate,
)
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


def _listed(value: Any) -> Any:
    """One item written without brackets (`seeds: 0`, `policies: fcfs`) as a list of it."""
    return [value] if isinstance(value, str | int | Mapping) else value


def _shorthand(key: str) -> BeforeValidator:
    """A mapping written as its one required value: `fcfs` for `{policy: fcfs}`."""
    return BeforeValidator(lambda value: {key: value} if isinstance(value, str) else value)


Mapping_ = Annotated[dict, NoneIsEmpty]
Seeds = Annotated[tuple[Annotated[Int, Ge(0)], ...], MinLen(1), Distinct, BeforeValidator(_listed)]
Names = Annotated[tuple[Text, ...], MinLen(1), BeforeValidator(_listed)]


@section
@dataclass(frozen=True)
class EnvSpec:
    """The environment every cell runs in.

    Attributes:
        kind: Default environment kind ("surrogate" or "vllm"); `--env` overrides it.
        kwargs: Environment kwargs for every kind.
        surrogate: Extra kwargs on the surrogate (e.g. the engine profile).
        vllm: Extra kwargs on the live engine.
    """

    kind: Literal[ENV_KINDS] = "surrogate"
    kwargs: Mapping_ = field(default_factory=dict)
    surrogate: Mapping_ = field(default_factory=dict)
    vllm: Mapping_ = field(default_factory=dict)

    def kwargs_for(self, kind: str) -> dict:
        """The kwargs for environment `kind` (common ones, then the kind's own)."""
        return {**self.kwargs, **getattr(self, kind)}


@section
@dataclass(frozen=True)
class PolicySpec:
    """A policy of the suite.

    Attributes:
        policy: A registered name, an exported `.onnx` checkpoint path, or `module:Class`.
        label: Name in the tables (default: the registered name or the checkpoint's stem).
        kwargs: Constructor arguments of a registered policy (e.g. a round-robin quantum
            matched to a time-scaled workload).
    """

    policy: Text
    label: Text | None = None
    kwargs: Mapping_ = field(default_factory=dict)


@section
@dataclass(frozen=True)
class SweepSpec:
    """One workload run at several values of a load parameter.

    Attributes:
        parameter: A field of the workload's `arrivals` (see `SWEEP_PARAMETERS`).
        values: The values, each a separate workload named `<name>@<parameter>=<value>`.
    """

    parameter: Literal[SWEEP_PARAMETERS]
    values: Annotated[tuple[Number, ...], MinLen(1)]


@section
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

    name: Text | None = None
    preset: Text | None = None
    config: dict | None = None
    overrides: Mapping_ = field(default_factory=dict)
    sweep: SweepSpec | None = None


def _one_source(spec: WorkloadSpec) -> WorkloadSpec:
    if (spec.preset is None) == (spec.config is None):
        raise ConfigError("needs exactly one of 'preset' or 'config'")
    return spec


def _without_sweep(spec: WorkloadSpec) -> WorkloadSpec:
    if spec.sweep is not None:
        raise ConfigError("a capacity search varies its own parameter: no sweep", key="sweep")
    return spec


Workload = Annotated[WorkloadSpec, AfterValidator(_one_source), _shorthand("preset")]
Policy = Annotated[PolicySpec, _shorthand("policy")]


@section
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

    name: Text
    workload: Annotated[Workload, AfterValidator(_without_sweep)]
    parameter: Literal[CAPACITY_PARAMETERS]
    low: Annotated[Number, Gt(0)]
    high: Number
    tolerance: Annotated[Number, Gt(0)]
    qoe_threshold: Number = 0.95
    qoe_field: Literal["mean_qoe", "mean_qoe_fixed"] = "mean_qoe"
    policies: Names | None = None
    seeds: Seeds | None = None

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ConfigError(
                f"capacity search {self.name!r} needs low < high, got low={self.low}, "
                f"high={self.high}",
                key="high",
            )


@section
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
        source: The file the suite came from (not a key of the file).
    """

    name: Text
    workloads: Annotated[tuple[Workload, ...], MinLen(1)]
    policies: Annotated[tuple[Policy, ...], MinLen(1), BeforeValidator(_listed)]
    seeds: Seeds
    env: Annotated[EnvSpec, NoneIsEmpty] = field(default_factory=EnvSpec)
    capacity: Annotated[tuple[CapacitySpec, ...], none_means(())] = ()
    description: Annotated[Str, none_means(""), AfterValidator(str.strip)] = ""
    trace_targets: Mapping_ = field(default_factory=lambda: {"kind": "reading"})
    source: str = field(default="<dict>", init=False)


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
def _check_capacity_policies(suite: Suite) -> Suite:
    """A capacity search names policies of the suite (by name or label)."""
    labels = {p.label or policy_label(p.policy) for p in suite.policies}
    for i, spec in enumerate(suite.capacity):
        for name in spec.policies or ():
            if policy_label(name) not in labels:
                raise ConfigError(
                    f"capacity[{i}].policies names {name!r}, which is not one of the suite's "
                    f"policies {sorted(labels)}",
                    key=f"capacity[{i}].policies",
                )
    return suite


_SCHEMA = Annotated[Suite, AfterValidator(_check_capacity_policies)]


def suite_from_dict(data: Any, source: str = "<dict>", lines: KeyLines | None = None) -> Suite:
    """Builds and validates a suite from a YAML-shaped mapping.

    Args:
        data: The mapping.
        source: Where it came from (a file path), used in every error message.
        lines: The line of each key in that file, for errors.

    Returns:
        The suite; its workloads are also resolved once here so that a bad preset,
        override or config fails at load time, not in a worker.

    Raises:
        SuiteError: On an unknown or missing key (named with its place and `source`), or an
            invalid value.
    """
    suite = validate(_SCHEMA, data, source=source, lines=lines, error=SuiteError)
    object.__setattr__(suite, "source", source)  # frozen; not a key of the file
    resolve_workloads(suite)  # validates presets, overrides and configs now
    for spec in suite.capacity:
        capacity_workload(suite, spec, spec.low)
        capacity_workload(suite, spec, spec.high)
    return suite


def load_suite(name_or_path: str | Path) -> Suite:
    """Loads a suite by name (`configs/suites/<name>.yaml`) or path.

    Raises:
        FileNotFoundError: When no such suite exists.
        SuiteError: When the file is not valid YAML or not a valid suite.
    """
    path = resolve_config("suites", name_or_path)
    data, lines = read_yaml_lines(path, "suite file")
    return suite_from_dict(data, source=str(path), lines=lines)


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
        raise SuiteError(f"workload {spec.name or spec.preset!r}: {exc}", source=source) from exc
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
        raise SuiteError(
            f"workload name(s) used twice: {', '.join(dupes)}", source=suite.source, key="workloads"
        )
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
