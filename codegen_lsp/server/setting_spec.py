"""Declaring a setting: :class:`SettingSpec` (JSON key, kind, default, range, doc) and
the check of a value and its JSON schema, both derived from it. ``settings.py`` declares
every setting with :func:`declare`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["bool", "int", "float", "string", "enum", "strings", "object"]


@dataclass(frozen=True)
class SettingSpec:
    """One setting as data: its JSON key, kind, default, range and documentation."""

    key: str
    kind: Kind
    default: Any
    doc: str
    minimum: int | float | None = None  # numbers: the lowest value (see exclusive_minimum)
    maximum: int | float | None = None  # numbers: the highest value allowed
    exclusive_minimum: bool = False  # numbers: ``minimum`` itself is not allowed
    enum: tuple[str, ...] = ()  # enums: the allowed values
    pattern: str = ""  # strings: a regular expression the whole value must match
    pattern_doc: str = ""  # strings: the pattern in words, for the error message
    aliases: tuple[tuple[str, Any], ...] = ()  # words also accepted, e.g. ("on", True)

    def check(self, value: Any) -> Any:
        """``value`` as this setting's Python value; ValueError saying what was expected."""
        return _KINDS[self.kind][1](self, value)

    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema description of this setting (as in VS Code's ``package.json``)."""
        out: dict[str, Any] = {
            "type": _KINDS[self.kind][0],
            "default": copy.deepcopy(self.default),
            "description": self.doc,
        }
        if self.enum:
            out["enum"] = list(self.enum)
        if self.pattern:
            out["pattern"] = f"^({self.pattern})$"
        if self.minimum is not None:
            out["exclusiveMinimum" if self.exclusive_minimum else "minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.kind == "strings":
            out["items"] = {"type": "string", "minLength": 1}
        if self.kind == "object":
            out["additionalProperties"] = {"type": "boolean"}
        return out


def _check_bool(spec: SettingSpec, value: Any) -> bool:
    aliases = dict(spec.aliases)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in aliases:
        return aliases[value]
    raise ValueError("expected true or false" + "".join(f", {word!r}" for word in aliases))


def _check_number(spec: SettingSpec, value: Any) -> int | float:
    integer = spec.kind == "int"
    what = "an integer" if integer else "a number"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or (integer and value != int(value)):
        raise ValueError(f"expected {what}")
    lo, hi, open_lo = spec.minimum, spec.maximum, spec.exclusive_minimum
    if (lo is not None and (value < lo or (open_lo and value == lo))) or (
        hi is not None and value > hi
    ):
        bounds = f"from {lo} to {hi}" if integer else f"in {'(' if open_lo else '['}{lo}, {hi}]"
        raise ValueError(f"expected {what} {bounds}")
    return int(value) if integer else float(value)


def _check_string(spec: SettingSpec, value: Any) -> str:
    if value is None:  # null: the default
        return spec.default
    if not isinstance(value, str):
        raise ValueError("expected a string")
    value = value.strip()
    if spec.pattern and not re.fullmatch(spec.pattern, value):
        raise ValueError(f"expected {spec.pattern_doc or 'a match of ' + spec.pattern}")
    return value


def _check_enum(spec: SettingSpec, value: Any) -> str:
    if not isinstance(value, str) or value not in spec.enum:
        raise ValueError(f"expected one of {', '.join(spec.enum)}")
    return value


def _check_strings(spec: SettingSpec, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    return list(value)


def _check_object(spec: SettingSpec, value: Any) -> dict[str, bool]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
    ):
        raise ValueError('expected an object of name: true/false, e.g. {"markdown": false}')
    return dict(value)


# Each kind's JSON schema type and check ("strings": a list of non-empty strings; "object": a
# map of string keys to booleans).
_KINDS: dict[str, tuple[str, Callable[[SettingSpec, Any], Any]]] = {
    "bool": ("boolean", _check_bool),
    "int": ("integer", _check_number),
    "float": ("number", _check_number),
    "string": ("string", _check_string),
    "enum": ("string", _check_enum),
    "strings": ("array", _check_strings),
    "object": ("object", _check_object),
}


def declare(key: str, kind: Kind, default: Any, doc: str, **limits: Any) -> Any:
    """A dataclass field carrying its :class:`SettingSpec` (``limits``: range, enum, ...)."""
    spec = SettingSpec(key, kind, default, doc, **limits)
    meta = {"spec": spec}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(spec.default), metadata=meta)
    return field(default=default, metadata=meta)


ON_OFF = (("on", True), ("off", False))
