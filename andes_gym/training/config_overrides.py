"""`--config` and `--set KEY=VALUE` of the trainers: parsing overrides and naming them in errors.

An override is a dotted key and a YAML value (`algo.learning_rate=1e-4`,
`eval.seeds=[7,8]`); it is applied to the plain data of the config file before the config
is checked, and a bad value it set is reported as coming from `--set <item>`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from andes_gym.config_files import ConfigError

T = TypeVar("T")


def parse_override(item: str) -> tuple[str, Any]:
    """The dotted key and the YAML-parsed value of one `dotted.key=value` override.

    Raises:
        ConfigError: When the item has no `=` or a key part is empty.
    """
    if "=" not in item:
        raise ConfigError(
            f"override {item!r} must look like key=value (e.g. algo.learning_rate=1e-4)",
            source="--set",
        )
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} has an empty key", source="--set")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_override(data: dict, item: str) -> None:
    """Applies one `dotted.key=value` override to nested plain data in place.

    Raises:
        ConfigError: When the item is malformed or a key's parent holds a non-mapping.
    """
    key, value = parse_override(item)
    _set_key(data, key, value, item)


def with_overrides(data: dict, overrides: list[str], build: Callable[[dict], T]) -> T:
    """`build(data)` after applying `overrides` to `data` (in place).

    Raises:
        ConfigError: From `build`, re-addressed to `--set <item>` when the bad key was set
            by an override (or lies above or below one); or a malformed override.
    """
    by_key = {}
    for item in overrides:
        key, value = parse_override(item)
        _set_key(data, key, value, item)
        by_key[key] = f"--set {item}"
    try:
        return build(data)
    except ConfigError as exc:
        related = [k for k in by_key if exc.key and _related(exc.key, k)]
        if not related:
            raise
        origin = by_key[max(related, key=len)]
        raise ConfigError(exc.reason, source=origin, key=exc.key) from None


def _set_key(data: dict, key: str, value: Any, item: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"override {item!r}: {part!r} holds {child!r}, not a mapping",
                source="--set",
                key=key,
            )
        node = child
    node[parts[-1]] = value


def _related(key: str, other: str) -> bool:
    """Whether one dotted key is the other or lies under it (`a.b[0]` lies under `a.b`)."""
    short, long = sorted((key, other), key=len)
    return long == short or long.startswith((short + ".", short + "["))


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--config` and `--set KEY=VALUE` (into `overrides`), shared by the trainers."""
    parser.add_argument(
        "--config",
        help="YAML file, or a name in ./configs/train/ or the packaged presets "
        "(default: built-in defaults)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set algo.learning_rate=1e-4 (repeatable)",
    )
