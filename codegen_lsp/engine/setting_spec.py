"""Declaring a setting: :class:`SettingSpec` (JSON key, kind, default, range, doc) and
the check of a value and its JSON schema, both derived from it.

A setting is declared once, as a field of the dataclass that uses it (:func:`declare`):
:class:`~codegen_lsp.engine.spec.EngineSpec` declares the model's settings,
:class:`~codegen_lsp.completion.options.CompletionOptions` the generation and prompt settings,
and ``server/settings.py`` gathers them, parses them and derives the JSON schema (from which
``tools/gen_editor_settings.py`` writes the editors' copies). This module sits in the engine
layer, the lowest that declares settings, and imports nothing of the package.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

Kind = Literal["bool", "int", "float", "string", "enum", "strings", "object", "word_or_number"]


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
    enum_docs: tuple[str, ...] = ()  # enums: one line per value, in ``enum`` order (editors)

    @property
    def json_default(self) -> Any:
        """The default as JSON has it (a tuple of strings is a list)."""
        return _json(self.default)

    def check(self, value: Any) -> Any:
        """``value`` as this setting's Python value; ValueError saying what was expected."""
        return _KINDS[self.kind][1](self, value)

    def json_schema(self) -> dict[str, Any]:
        """The JSON-schema description of this setting (as in VS Code's ``package.json``)."""
        out: dict[str, Any] = {
            "type": _KINDS[self.kind][0],
            "default": self.json_default,
            "description": self.doc,
        }
        if self.enum and self.kind == "word_or_number":  # enum would rule the numbers out
            out["pattern"] = f"^({'|'.join(map(re.escape, self.enum))})$"
        elif self.enum:
            out["enum"] = list(self.enum)
        if self.enum_docs:
            out["enumDescriptions"] = list(self.enum_docs)
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


def _check_word_or_number(spec: SettingSpec, value: Any) -> str | float:
    if isinstance(value, str) and value in spec.enum:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _check_number(spec, value)
    raise ValueError(f"expected one of {', '.join(spec.enum)} or a number")


def _check_strings(spec: SettingSpec, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    return tuple(value)


def _check_object(spec: SettingSpec, value: Any) -> dict[str, bool]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
    ):
        raise ValueError('expected an object of name: true/false, e.g. {"markdown": false}')
    return dict(value)


def _json(value: Any) -> Any:
    """``value`` with tuples as lists (a fresh copy: defaults are never shared)."""
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


# Each kind's JSON schema type and check ("strings": a tuple of non-empty strings, a list in
# JSON; "object": a map of string keys to booleans; "word_or_number": a word of ``enum`` or a
# number in the range).
_KINDS: dict[str, tuple[str | list[str], Callable[[SettingSpec, Any], Any]]] = {
    "bool": ("boolean", _check_bool),
    "int": ("integer", _check_number),
    "float": ("number", _check_number),
    "string": ("string", _check_string),
    "enum": ("string", _check_enum),
    "strings": ("array", _check_strings),
    "object": ("object", _check_object),
    "word_or_number": (["string", "number"], _check_word_or_number),
}


def declare(key: str, kind: Kind, default: Any, doc: str, **limits: Any) -> Any:
    """A dataclass field carrying its :class:`SettingSpec` (``limits``: range, enum, ...).

    The field's default is the setting's default; :func:`declared` lists the specs."""
    spec = SettingSpec(key, kind, default, doc, **limits)
    meta = {"spec": spec}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(spec.default), metadata=meta)
    return field(default=default, metadata=meta)


def declared(cls: type) -> list[tuple[str, SettingSpec]]:
    """(attribute name, spec) of each setting a dataclass declares, in declaration order."""
    return [(f.name, f.metadata["spec"]) for f in fields(cls) if "spec" in f.metadata]


ON_OFF = (("on", True), ("off", False))
