"""The training config in words, for `--help`: each key's default, domain and docstring.

The domain is read from the field's type (the same declaration the loader checks), so the
help cannot drift from what is accepted.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import types
import typing
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, Le, Lt, MinLen
from typing_extensions import is_typeddict

from andes_gym.config_schema import Rule, format_number

_TYPE_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a finite number",
    str: "a string",
    dict: "a mapping with string keys",
}
_BOUNDS = (Ge, Gt, Le, Lt, Interval)


def domain_text(hint: Any) -> str:
    """A field's type and domain in words (`an integer >= 1`, `a finite number in (0, 1] or null`)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        return _annotated_text(args[0], hint.__metadata__)
    if origin in (typing.Union, types.UnionType):
        inner = [domain_text(a) for a in args if a is not type(None)]
        return " or ".join(inner + (["null"] if type(None) in args else []))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"list of {_plural(domain_text(args[0]))}"
    if is_typeddict(hint):  # a mapping whose known keys are checked
        return _TYPE_NAMES[dict]
    return _TYPE_NAMES.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _annotated_text(base_hint: Any, metadata: tuple) -> str:
    base, notes, bounds = domain_text(base_hint), [], {}
    for rule in metadata:
        if isinstance(rule, Rule):
            if rule.note:
                notes.append(rule.expected)
            else:
                base = rule.expected
        elif isinstance(rule, MinLen) and rule.min_length == 1:
            if base_hint is str:
                base = "a non-empty string"
            else:
                notes.append("non-empty")
        elif isinstance(rule, _BOUNDS):
            bounds.update({f.name: getattr(rule, f.name) for f in dataclasses.fields(rule)})
    if bounds:
        base = f"{base} {_bounds_text(bounds)}"
    return f"{base} ({', '.join(notes)})" if notes else base


def _bounds_text(bounds: dict) -> str:
    """`{"gt": 0, "le": 1}` -> `in (0, 1]`; `{"ge": 1}` -> `>= 1`."""
    bounds = {name: value for name, value in bounds.items() if value is not None}
    low = next(((name, bounds[name]) for name in ("ge", "gt") if name in bounds), None)
    high = next(((name, bounds[name]) for name in ("le", "lt") if name in bounds), None)
    if low and high:
        return (
            f"in {'[' if low[0] == 'ge' else '('}{format_number(low[1])}, "
            f"{format_number(high[1])}{']' if high[0] == 'le' else ')'}"
        )
    name, value = low or high
    return f"{dict(ge='>=', gt='>', le='<=', lt='<')[name]} {format_number(value)}"


def _plural(text: str) -> str:
    """`an integer >= 1` -> `integers >= 1` (for `list of ...`)."""
    for one, many in (
        ("an integer", "integers"),
        ("a finite number", "finite numbers"),
        ("a non-empty string", "non-empty strings"),
        ("a string", "strings"),
    ):
        if text.startswith(one):
            return many + text[len(one) :]
    return text


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstrings under each field of a config dataclass."""
    return _class_field_docs(inspect.getmodule(cls)).get(cls.__qualname__, {})


@functools.cache
def _class_field_docs(module: types.ModuleType) -> dict[str, dict[str, str]]:
    """Field docstrings of every class of a module (its source parsed once: `--help` is quick)."""
    docs: dict[str, dict[str, str]] = {}
    for cls_node in ast.parse(inspect.getsource(module)).body:
        if not isinstance(cls_node, ast.ClassDef):
            continue
        body = cls_node.body
        fields = docs.setdefault(cls_node.name, {})
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                fields[node.target.id] = nxt.value.value.strip()
    return docs


def describe_keys(cls: type, prefix: str = "") -> list[str]:
    """Two lines per config key: `key = default  [domain]` and its docstring (for --help)."""
    lines = []
    docs = field_docs(cls)
    defaults = cls()
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        section = typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint
        if dataclasses.is_dataclass(section):
            lines.extend(describe_keys(section, prefix + f.name + "."))
        else:
            default = getattr(defaults, f.name)
            lines.append(
                f"  {prefix + f.name} = {default!r}  [{domain_text(hint)}]\n"
                f"      {docs.get(f.name, '')}"
            )
    return lines
