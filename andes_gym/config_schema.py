"""The one loader of every config: a mapping and a schema in, a typed config or one error out.

A config is declared once, as dataclasses whose field types carry their domains
(`Annotated[int, Strict(), Ge(1)]`, `Literal["poisson", "gamma"]`, a nested dataclass);
pydantic checks a mapping against that declaration. `validate` turns any failure into a
`ConfigError` that names the file, the dotted key (`arrivals.rate_rps`, `workloads[0].preset`)
and, when the mapping came from `config_files.read_yaml_lines`, the line of that key.

Rules between fields live in the schema too, as validators that raise a `ConfigError` whose
`key` is relative to where they run (a rule of the `arrivals` section that names `cv` is
reported as `arrivals.cv`). Unknown keys are errors that list the known ones.

Configs that check themselves when built directly (`ArrivalConfig(...)`,
`LiveEngineConfig(...)`) are `config_dataclass`es: their constructor raises the same
`ConfigError`, without a file.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import pydantic
from annotated_types import MinLen
from pydantic import AllowInfNan, BeforeValidator, Strict, Tag, TypeAdapter, ValidationError
from pydantic_core import core_schema
from typing_extensions import is_typeddict

from andes_gym.config_files import ConfigError, KeyLines

# --------------------------------------------------------------------------- value types
Int = Annotated[int, Strict()]
"""An integer (a bool or a float is not one)."""
Number = Annotated[float, Strict(), AllowInfNan(False)]
"""A finite number; an integer is read as a float, a bool or a string is refused."""


def _as_written(value: Any, handler: Callable[[Any], Any]) -> Any:
    checked = handler(value)
    return value if type(value) is int else checked


WrittenNumber = Annotated[Number, pydantic.WrapValidator(_as_written)]
"""A finite number kept as written: an integer stays an int (so a config round-trips as is)."""
Bool = Annotated[bool, Strict()]
"""true or false (not 0 or 1)."""
Str = Annotated[str, Strict()]
"""A string (a number is not one)."""
Text = Annotated[str, Strict(), MinLen(1)]
"""A non-empty string."""


def number_from_text(value: Any) -> Any:
    """A string that parses as a float, as that float (else unchanged).

    YAML 1.1 reads `1e-4` and `6.7e9` (an exponent without a dot or a sign) as strings.
    """
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _int_from_number(value: Any) -> Any:
    """A whole float (or numeric string: `1e6`) as an int (else unchanged)."""
    value = number_from_text(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


YamlNumber = Annotated[Number, BeforeValidator(number_from_text)]
"""A finite number, also written as a string that YAML 1.1 left unread (`1e-4`)."""
YamlInt = Annotated[Int, BeforeValidator(_int_from_number)]
"""An integer, also written as a whole float (`16.0`) or a numeric string (`1e6`)."""


def none_means(empty: Any) -> BeforeValidator:
    """Marks a field whose `null` means `empty` (`""`, `()`; validation copies a mapping)."""
    return BeforeValidator(lambda value: empty if value is None else value)


NoneIsEmpty = none_means({})
"""Marks a section or mapping whose `null` means "empty" (every default)."""


@dataclass(frozen=True)
class Rule:
    """A rule that a value's type cannot say, declared with it: `Annotated[str, Rule(...)]`.

    Attributes:
        test: True when the (already typed) value follows the rule.
        expected: The rule in words, completing "must be ..." ("a torch device").
        note: Whether `expected` qualifies the type (shown after it, "without repeats")
            rather than replacing it in descriptions.
    """

    test: Callable[[Any], bool]
    expected: str
    note: bool = False

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def _check(self, value: Any) -> Any:
        if not self.test(value):
            raise ValueError(f"must be {self.expected}")
        return value


def _distinct(items: Any) -> bool:
    return len(set(items)) == len(items)


Distinct = Rule(_distinct, "without repeats", note=True)
"""A list without repeated items."""


def as_one_value(expected: str) -> pydantic.WrapValidator:
    """Checks a compound value (a pair, a list) as one: a bad item is reported at the field.

    Args:
        expected: What the value must be, completing "must be ...".
    """

    def check(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"must be {expected}") from None

    return pydantic.WrapValidator(check)


def one_of(choices: dict[str, type], key: str = "kind") -> Any:
    """A union of dataclasses chosen by a key of the mapping (`kind: linear`), which is dropped.

    Args:
        choices: The dataclass of each value of the key.
        key: The key that chooses.
    """

    def check(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ConfigError(f"must be a mapping, got {_short(value)}")
        if not (isinstance(value.get(key), str) and value[key] in choices):
            raise ConfigError(
                f"must be one of {list(choices)}, got {_short(value.get(key))}", key=key
            )
        return value

    def without_key(value: Mapping) -> dict:
        return {name: item for name, item in value.items() if name != key}

    members = tuple(
        Annotated[cls, BeforeValidator(without_key), Tag(tag)] for tag, cls in choices.items()
    )
    return Annotated[
        typing.Union[members],  # noqa: UP007 (a tuple of members)
        pydantic.Discriminator(lambda value: value[key]),
        BeforeValidator(check),
    ]


# --------------------------------------------------------------------------- loading
_SECTION_CONFIG = pydantic.ConfigDict(extra="forbid")


def config_dataclass(cls: type) -> type:
    """A frozen dataclass that checks its fields when built, raising `ConfigError`.

    Unknown keys are refused; rules between fields go in `__post_init__` (raise a
    `ConfigError` whose key is relative to the class).
    """
    checked = pydantic.dataclasses.dataclass(frozen=True, config=_SECTION_CONFIG)(cls)
    init = checked.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, checked) from None

    checked.__init__ = __init__
    return checked


def section(cls: type) -> type:
    """Marks a plain dataclass as a config section: unknown keys are refused when loaded.

    Unlike a `config_dataclass`, it is checked only by `validate` (building one directly
    checks nothing, as tests and calibration code do with partial profiles).
    """
    cls.__pydantic_config__ = _SECTION_CONFIG
    return cls


@functools.cache
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


def validate(
    schema: Any,
    data: Any,
    *,
    source: str | None = "<dict>",
    lines: KeyLines | None = None,
    error: type[ConfigError] = ConfigError,
) -> Any:
    """The typed config that `data` describes, checked against `schema`.

    Args:
        schema: A dataclass (or an `Annotated` one, with rules across its fields).
        data: The mapping, as read from YAML.
        source: Where the data came from (a file path), named in errors.
        lines: The line of each key in that file (`read_yaml_lines`), named in errors.
        error: The `ConfigError` subclass to raise.

    Raises:
        ConfigError: (of class `error`) For the first problem: an unknown key (before any
            other), a missing key, a bad value or a broken rule; naming `source`, the
            dotted key and its line.
    """
    try:
        return _adapter(schema).validate_python(data)
    except ValidationError as exc:
        raise config_error(exc, schema, source=source, lines=lines, error=error) from None


# --------------------------------------------------------------------------- errors
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_RANK = dict.fromkeys(_UNKNOWN, 0) | {"missing": 1}
_MAPPING = ("dataclass_type", "dataclass_args_type", "dict_type", "model_type")
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "string_too_short": "a non-empty string",
    "invalid_key": "a string key",
    **dict.fromkeys(_MAPPING, "a mapping"),
}
_BOUNDS = {
    "greater_than": ("> ", "gt"),
    "greater_than_equal": (">= ", "ge"),
    "less_than": ("< ", "lt"),
    "less_than_equal": ("<= ", "le"),
}


def config_error(
    exc: ValidationError,
    schema: Any,
    *,
    source: str | None = None,
    lines: KeyLines | None = None,
    error: type[ConfigError] = ConfigError,
) -> ConfigError:
    """The first problem of a pydantic `ValidationError` as a `ConfigError` (see `validate`)."""
    errors = exc.errors(include_url=False)
    first = min(errors, key=lambda e: _RANK.get(e["type"], 2))
    parts, parent = _walk(schema, first["loc"])
    inner = (first.get("ctx") or {}).get("error")
    if isinstance(inner, ConfigError):  # a rule: its key is relative to where it ran
        parts += split_key(inner.key or "")
        message = inner.reason
    elif first["type"] in _UNKNOWN:
        message = _unknown_key(parts, parent)
    elif first["type"] == "missing":
        missing = [
            dotted_key(_walk(schema, e["loc"])[0])
            for e in errors
            if e["type"] == "missing" and e["loc"][:-1] == first["loc"][:-1]
        ]
        message = f"missing required key(s) {', '.join(missing)}"
    else:
        message = _bad_value(first, top_level=not parts)
    return error(message, source=source, key=dotted_key(parts) or None, line=_line(lines, parts))


def _line(lines: KeyLines | None, parts: list) -> int | None:
    """The line of the key, or of the nearest key above it that the file has."""
    for end in range(len(parts), 0, -1):
        if lines and tuple(parts[:end]) in lines:
            return lines[tuple(parts[:end])]
    return None


def _unknown_key(parts: list, parent: Any) -> str:
    where = f" of {dotted_key(parts[:-1])}" if len(parts) > 1 else ""
    known = ", ".join(_known_keys(parent))
    return (
        f"unknown key {dotted_key(parts)} ({parts[-1]!r} is not one of the known keys{where}: "
        f"{known})"
    )


def _bad_value(err: dict, *, top_level: bool) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in _EXPECTED:
        reason = f"must be {_EXPECTED[kind]}"
    elif kind in _BOUNDS:
        sign, name = _BOUNDS[kind]
        reason = f"must be {sign}{format_number(ctx[name])}"
    elif kind == "literal_error":
        reason = f"must be {ctx['expected']}"
    elif kind == "too_short":
        reason = f"must hold at least {ctx['min_length']} item(s)"
    else:  # a rule's own words, or pydantic's
        reason = re.sub(r"^Input should be ", "must be ", err["msg"].removeprefix("Value error, "))
        reason = reason[:1].lower() + reason[1:]
    subject = "the config " if top_level else ""
    return f"{subject}{reason}, got {_short(err['input'])}"


def format_number(x: float) -> str:
    """`1.0` -> `1`, `0.5` -> `0.5` (a bound as a person writes it)."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def dotted_key(parts: list | tuple) -> str:
    """`["workloads", 0, "preset"]` -> `"workloads[0].preset"`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def split_key(key: str) -> list:
    """The inverse of `dotted_key`."""
    return [int(p[1:-1]) if p.startswith("[") else p for p in re.findall(r"\[\d+\]|[^.\[]+", key)]


def _walk(schema: Any, loc: tuple) -> tuple[list, Any]:
    """The key parts of a pydantic error location, and the type that holds the last one.

    Pydantic's own markers in `loc` (the tag of a union member, `[key]` for a bad mapping
    key) are left out.
    """
    parts: list = []
    parent, hint = None, schema
    for part in loc:
        hint = _bare(hint)
        if part == "[key]":
            continue
        member = _tagged_member(hint, part)
        if member is not None:
            hint = member
            continue
        parent, hint = hint, _child(hint, part)
        parts.append(part)
    return parts, parent


def _bare(hint: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    while True:
        args = typing.get_args(hint)
        if typing.get_origin(hint) is Annotated:
            hint = args[0]
        elif _is_union(hint) and type(None) in args and len(args) == 2:
            hint = next(a for a in args if a is not type(None))
        else:
            return hint


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _tagged_member(hint: Any, tag: Any) -> Any:
    if not _is_union(hint):
        return None
    for member in typing.get_args(hint):
        metadata = getattr(member, "__metadata__", ())
        if any(isinstance(m, Tag) and m.tag == tag for m in metadata):
            return member
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _child(hint: Any, part: Any) -> Any:
    """The type of item `part` of a value of type `hint` (None when unknown)."""
    if dataclasses.is_dataclass(hint) or is_typeddict(hint):
        return _hints(hint).get(part)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple) and args and isinstance(part, int):
        if origin is tuple and args[-1] is not Ellipsis:
            return args[part] if part < len(args) else None
        return args[0]
    if origin is dict and args:
        return args[1]
    return None


def _known_keys(hint: Any) -> list[str]:
    if dataclasses.is_dataclass(hint):
        return [f.name for f in dataclasses.fields(hint) if f.init]
    if is_typeddict(hint):
        return list(_hints(hint))
    return []
