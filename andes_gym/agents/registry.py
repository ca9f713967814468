"""Policies registered by name, with string entry points so importing imports nothing heavy.

Exported checkpoints (`.onnx`) load as `andes_gym.agents.learned.LearnedPolicy`
(onnxruntime is imported only then).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from andes_gym.agents.base import Policy
from andes_gym.agents.learned import load_policy

_ENTRY_POINTS: dict[str, str] = {}


def register(name: str, entry_point: str) -> None:
    """Registers a policy class under `name`.

    Args:
        name: The name users pass to `make_policy`.
        entry_point: `"package.module:ClassName"`.

    Raises:
        ValueError: When `name` is already registered or the entry point is malformed.
    """
    if name in _ENTRY_POINTS:
        raise ValueError(f"policy {name!r} is already registered ({_ENTRY_POINTS[name]})")
    if ":" not in entry_point:
        raise ValueError(f"entry point must look like 'pkg.module:Class', got {entry_point!r}")
    _ENTRY_POINTS[name] = entry_point


def registered_policies() -> list[str]:
    """Names of all registered policies, sorted."""
    return sorted(_ENTRY_POINTS)


def load_entry_point(entry_point: str):
    """The object an entry point `"package.module:Name"` names (the module is imported now).

    Raises:
        ImportError, AttributeError: When the module or the name does not exist.
    """
    module_name, name = entry_point.rsplit(":", 1)
    return getattr(importlib.import_module(module_name), name)


def policy_class(name: str) -> type[Policy]:
    """The class registered under `name`.

    Raises:
        KeyError: Naming the unknown policy and listing the registered ones.
    """
    if name not in _ENTRY_POINTS:
        raise KeyError(f"unknown policy {name!r}; registered: {', '.join(registered_policies())}")
    return load_entry_point(_ENTRY_POINTS[name])


def make_policy(name_or_path: str, **kwargs) -> Policy:
    """A policy from a registered name or from an exported checkpoint path (`.onnx`).

    Args:
        name_or_path: A registered name, or a path to an exported policy.
        **kwargs: Constructor arguments of a registered policy.

    Raises:
        KeyError: Unknown name.
    """
    if name_or_path.endswith(".onnx") or Path(name_or_path).suffix == ".onnx":
        return load_policy(name_or_path)
    return policy_class(name_or_path)(**kwargs)


# One flat list, like gymnasium's registration.
register("fcfs", "andes_gym.agents.fcfs:FCFS")
register("round_robin", "andes_gym.agents.round_robin:RoundRobin")
register("lqf", "andes_gym.agents.lqf:LeastQoEFirst")
register("edf", "andes_gym.agents.edf:EarliestDeadlineFirst")
register("random", "andes_gym.agents.random_policy:RandomPolicy")
register("sjf_oracle", "andes_gym.agents.sjf_oracle:ShortestJobFirstOracle")
register("andes", "andes_gym.agents.andes:Andes")
register("andes_dp", "andes_gym.agents.andes_dp:AndesDP")
register("andes_rollout", "andes_gym.agents.planner:AndesRollout")
