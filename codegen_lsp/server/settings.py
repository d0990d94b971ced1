"""The server's settings: declared once as data, parsed once per change.

Settings live under ``codegen`` in ``initializationOptions`` and in
``workspace/didChangeConfiguration`` (or are pulled with ``workspace/configuration``). Keys
are flat camelCase names (``codegen.maxNewTokens``); in Python they are grouped in nested
dataclasses. Each field carries a :class:`SettingSpec` (JSON key, kind, default, range, doc);
the check of a value and the JSON schema (:func:`schema`, which the editors' copies are tested
against) are both derived from it. An invalid value is reported (naming the key) and that key
falls back to its default; the other keys keep their values. Unknown keys are logged and ignored.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from codegen_lsp.completion.core import CompletionOptions
from codegen_lsp.engine.api import EngineSpec, ModelInfo, SamplingParams

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


def _declare(key: str, kind: Kind, default: Any, doc: str, **limits: Any) -> Any:
    """A dataclass field carrying its :class:`SettingSpec` (``limits``: range, enum, ...)."""
    spec = SettingSpec(key, kind, default, doc, **limits)
    meta = {"spec": spec}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(spec.default), metadata=meta)
    return field(default=default, metadata=meta)


_ON_OFF = (("on", True), ("off", False))


@dataclass
class ModelSettings:
    """Which model runs and how; changing any of these reloads the model."""

    model: str = _declare(
        "model", "string", "", "Checkpoint directory or hub id; empty: the shipped model."
    )
    device: str = _declare(
        "device",
        "string",
        "auto",
        "Where the model runs: auto, cpu, cuda or cuda:N.",
        pattern=r"auto|cpu|cuda(:\d+)?",
        pattern_doc="auto, cpu, cuda or cuda:N",
    )
    dtype: str = _declare(
        "dtype",
        "enum",
        "auto",
        "Dtype of the weights and activations.",
        enum=("auto", "float32", "bfloat16", "float16"),
    )
    quantize: str = _declare(
        "quantize",
        "enum",
        "auto",
        "Weight-only quantization: auto (int8 on CPUs with bf16), none or int8.",
        enum=("auto", "none", "int8"),
    )
    threads: int = _declare(
        "threads",
        "int",
        0,
        "CPU threads for the model; 0 keeps torch's default.",
        minimum=0,
        maximum=256,
    )
    allow_download: bool = _declare(
        "allowDownload", "bool", False, "Allow fetching a hub id that is not cached locally."
    )
    cache_memory_mb: int = _declare(
        "cacheMemoryMB",
        "int",
        512,
        "Memory budget of the KV prefix cache, MiB.",
        minimum=0,
        maximum=1 << 20,
    )
    prefix_reuse: bool = _declare(
        "prefixReuse",
        "bool",
        True,
        "Reuse the KV cache across keystrokes (also on/off).",
        aliases=_ON_OFF,
    )
    memory_limit_mb: int = _declare(
        "memoryLimitMB",
        "int",
        0,
        "Most memory for the weights plus the KV cache budget, MiB; 0: no limit. Checked "
        "before loading.",
        minimum=0,
        maximum=1 << 24,
    )


@dataclass
class GenerationSettings:
    """How suggestions are generated."""

    max_new_tokens: int = _declare(
        "maxNewTokens",
        "int",
        64,
        "Most tokens generated per suggestion.",
        minimum=1,
        maximum=2048,
    )
    temperature: float = _declare(
        "temperature",
        "float",
        0.0,
        "Sampling temperature; 0 is greedy.",
        minimum=0.0,
        maximum=5.0,
    )
    top_p: float = _declare(
        "topP",
        "float",
        0.95,
        "Nucleus sampling mass, in (0, 1].",
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
    )
    top_k: int = _declare(
        "topK",
        "int",
        0,
        "Sample from the k most likely tokens; 0 is off.",
        minimum=0,
        maximum=100_000,
    )
    candidates: int = _declare(
        "candidates", "int", 1, "Suggestions per request (1 to 10).", minimum=1, maximum=10
    )
    stop_sequences: list[str] = _declare(
        "stopSequences", "strings", [], "Extra strings that end a suggestion."
    )
    time_limit_ms: int = _declare(
        "timeLimitMs",
        "int",
        10_000,
        "Most milliseconds of model time per request (the text so far is kept); 0: no limit.",
        minimum=0,
        maximum=3_600_000,
    )


@dataclass
class PromptSettings:
    """What the model sees."""

    context_tokens: int = _declare(
        "contextTokens",
        "int",
        1024,
        "Most prompt tokens; 0: all the model's context allows.",
        minimum=0,
        maximum=1 << 20,
    )
    multiline: str = _declare(
        "multiline",
        "enum",
        "auto",
        "Single- or multi-line suggestions: auto, always or never.",
        enum=("auto", "always", "never"),
    )
    header: str = _declare(
        "header",
        "enum",
        "auto",
        "Language/path comment header: auto (multi-language models), on or off.",
        enum=("auto", "on", "off"),
    )


@dataclass
class Settings:
    """All settings under ``codegen``."""

    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    languages: dict[str, bool] = _declare(
        "languages",
        "object",
        {},
        'Per-language switch by languageId, e.g. {"markdown": false}; "*" sets the rest.',
    )

    def enabled(self, language_id: str) -> bool:
        """False when the ``languages`` setting turns this language off."""
        return self.languages.get(language_id, self.languages.get("*", True))

    def engine_spec(self) -> EngineSpec:
        """The worker's load spec for these settings."""
        m = self.model
        return EngineSpec(
            model=m.model or None,
            device=m.device,
            dtype=m.dtype,
            quantize=m.quantize,
            threads=m.threads,
            allow_download=m.allow_download,
            cache_memory_mb=m.cache_memory_mb,
            prefix_reuse=m.prefix_reuse,
            memory_limit_mb=m.memory_limit_mb,
        )

    def completion_options(self, model: ModelInfo | None = None) -> CompletionOptions:
        """Per-request options; the loaded ``model`` decides ``header: auto``."""
        g, p = self.generation, self.prompt
        multi = model is not None and model.multi_language
        return CompletionOptions(
            max_new_tokens=g.max_new_tokens,
            sampling=SamplingParams(g.temperature, g.top_p, g.top_k),
            candidates=g.candidates,
            stop_sequences=tuple(g.stop_sequences),
            context_tokens=p.context_tokens,
            multiline=p.multiline,
            header=p.header == "on" or (p.header == "auto" and multi),
            time_limit_s=g.time_limit_ms / 1000 if g.time_limit_ms else None,
        )


def _declared(settings: Settings) -> Iterator[tuple[Any, str, SettingSpec]]:
    """(group, attribute name, spec) of every setting, in declaration order (groups first)."""
    for group in (settings.model, settings.generation, settings.prompt, settings):
        for f in fields(group):
            if "spec" in f.metadata:
                yield group, f.name, f.metadata["spec"]


def specs() -> list[SettingSpec]:
    """The declaration of every setting, in declaration order."""
    return [spec for _, _, spec in _declared(Settings())]


def setting_fields() -> list[tuple[str, Any, str]]:
    """(JSON key, default, documentation) of every setting, in declaration order."""
    return [(s.key, copy.deepcopy(s.default), s.doc) for s in specs()]


def schema() -> dict[str, dict[str, Any]]:
    """JSON-schema-like description of every setting by its key (without ``codegen.``)."""
    return {s.key: s.json_schema() for s in specs()}


def section(raw: Any) -> Any:
    """The ``codegen`` section of an options/settings object (or the object itself)."""
    if isinstance(raw, Mapping) and isinstance(raw.get("codegen"), Mapping):
        return raw["codegen"]
    return raw


def parse_settings(raw: Any) -> tuple[Settings, list[str], list[str]]:
    """Settings from the ``codegen`` object; also (problems to show, unknown keys)."""
    settings = Settings()
    if raw is None:
        return settings, [], []
    if not isinstance(raw, Mapping):
        return settings, [f"codegen: expected an object, got {type(raw).__name__}"], []
    problems: list[str] = []
    known: set[str] = set()
    for group, name, spec in _declared(settings):
        known.add(spec.key)
        if spec.key not in raw:
            continue
        value = raw[spec.key]
        try:
            setattr(group, name, spec.check(value))
        except ValueError as exc:
            problems.append(f"codegen.{spec.key}: {exc}, got {value!r}; using {spec.default!r}")
    unknown = sorted(str(k) for k in raw if k not in known)
    return settings, problems, unknown
