"""Finding and reading the project's YAML configs: one resolution rule, one error type.

A config is named by kind (`workloads`, `engines`, `train`, `suites`) and by a short name or
a path. Every command and constructor resolves it the same way:

1. an explicit path (a value with a path separator or a `.yaml`/`.yml` suffix);
2. `./configs/<kind>/<name>.yaml` under the current directory (a user's own presets);
3. the presets shipped inside the package (`andes_gym/configs/<kind>/`, read through
   `importlib.resources`, so a wheel installed anywhere finds them).

An unknown name is an error that lists every name available from 2 and 3.

`read_yaml_lines` also returns the line of every key, so that `andes_gym.config_schema`
(the one loader that turns a mapping into a typed config) names the line of a bad value.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

KeyLines = dict[tuple, int]
"""The 1-based line of each key (and list item) of a YAML file, by its path of keys and
indices: `("workloads", 0, "preset")`."""

CONFIG_KINDS = ("workloads", "engines", "train", "suites")


class ConfigError(ValueError):
    """A config, trace or checkpoint that cannot be used.

    The message names where the problem is: the file, and the key or line in it.

    Attributes:
        reason: The message without the place (what is wrong, and the bad value).
        source: The file (or `<dict>` / `--set`) the bad value came from, when known.
        key: The dotted key, when the problem is one key.
        line: The 1-based line, when the problem is one line of a file.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | Path | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = message
        if key is not None and key not in message:
            message = f"{key}: {message}"
        where = [str(source)] if source is not None else []
        if line is not None:
            where.append(f"line {line}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.source = None if source is None else str(source)
        self.key = key
        self.line = line


def packaged_config_dir(kind: str) -> Path:
    """The folder of the presets of `kind` shipped inside the package."""
    _check_kind(kind)
    return Path(str(resources.files("andes_gym") / "configs" / kind))


def user_config_dir(kind: str) -> Path:
    """`./configs/<kind>` under the current directory (looked up before the packaged presets)."""
    _check_kind(kind)
    return Path.cwd() / "configs" / kind


def available_configs(kind: str) -> list[str]:
    """Every config name of `kind` that `resolve_config` finds (user's, then packaged)."""
    names: set[str] = set()
    for root in (user_config_dir(kind), packaged_config_dir(kind)):
        if root.is_dir():
            names.update(p.stem for p in root.glob("*.yaml"))
    return sorted(names)


def is_config_path(name_or_path: str | Path) -> bool:
    """Whether a config value is a path (has a separator or a YAML suffix) or a bare name."""
    text = str(name_or_path)
    return isinstance(name_or_path, Path) or "/" in text or text.endswith((".yaml", ".yml"))


def resolve_config(kind: str, name_or_path: str | Path) -> Path:
    """The YAML file for a config name or path (the rule in this module's docstring).

    Args:
        kind: "workloads", "engines", "train" or "suites".
        name_or_path: A bare name such as `"bursty_2x"`, or a path.

    Raises:
        FileNotFoundError: Naming what was looked for and the names available.
    """
    _check_kind(kind)
    text = str(name_or_path)
    if is_config_path(name_or_path):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"{kind} config file not found: {path}")
        return path
    for root in (user_config_dir(kind), packaged_config_dir(kind)):
        path = root / f"{text}.yaml"
        if path.is_file():
            return path
    available = available_configs(kind)
    raise FileNotFoundError(
        f"no {kind} config named {text!r} (looked in ./configs/{kind} and the packaged "
        f"presets); available: {', '.join(available) or 'none'}"
    )


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file's contents (a leading BOM dropped), or a `ConfigError` naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", source=path) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            source=path,
            line=line,
        ) from None
    return text.removeprefix("\ufeff")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error (PyYAML
    would silently keep the last value, hiding a typo or a merge mistake)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                repeated = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if repeated:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path, what: str = "config", *, allow_empty: bool = False) -> Any:
    """Parses a YAML file; bad encoding, bad YAML or (unless allowed) emptiness name the file.

    Args:
        path: The file.
        what: What the file is, for messages ("engine profile", "suite", ...).
        allow_empty: Return None for an empty file instead of raising.

    Raises:
        FileNotFoundError: No such file.
        ConfigError: Not UTF-8, not YAML (with the line), or empty.
    """
    return read_yaml_lines(path, what, allow_empty=allow_empty)[0]


def read_yaml_lines(
    path: str | Path, what: str = "config", *, allow_empty: bool = False
) -> tuple[Any, KeyLines]:
    """`read_yaml`, plus the line of every key and list item (for errors naming the line).

    Raises:
        FileNotFoundError: No such file.
        ConfigError: As `read_yaml`.
    """
    text = read_text(path, what)
    lines: KeyLines = {}
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            data = None if node is None else loader.construct_document(node)
            if node is not None:
                _collect_lines(loader, node, (), lines)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = None if mark is None else mark.line + 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML: {problem}", source=path, line=line) from None
    if data is None and not allow_empty:
        raise ConfigError(f"empty {what}", source=path)
    return data, lines


def _collect_lines(loader: yaml.SafeLoader, node: yaml.Node, path: tuple, lines: KeyLines) -> None:
    """Records the line of each key and list item under `node` (keys that are scalars)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                here = (*path, loader.construct_object(key_node))
                lines[here] = key_node.start_mark.line + 1
                _collect_lines(loader, value_node, here, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[(*path, index)] = item.start_mark.line + 1
            _collect_lines(loader, item, (*path, index), lines)


def _check_kind(kind: str) -> None:
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind must be one of {list(CONFIG_KINDS)}, got {kind!r}")
