"""The server's settings: one object, parsed once per change.

Settings live under ``codegen`` in ``initializationOptions`` and in
``workspace/didChangeConfiguration`` (or are pulled with ``workspace/configuration``). Keys
are flat camelCase names (``codegen.maxNewTokens``); in Python they are grouped in nested
dataclasses. Each field is declared with its JSON key, its documentation and a check. An
invalid value is reported (naming the key) and that key falls back to its default; the
other keys keep their values. Unknown keys are logged and ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from codegen_lsp.completion.core import CompletionOptions
from codegen_lsp.engine.worker import EngineSpec

Check = Callable[[Any], Any]


def _setting(default: Any, key: str, doc: str, check: Check, factory: bool = False) -> Any:
    meta = {"key": key, "doc": doc, "check": check}
    if factory:
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return check


def _int(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
            raise ValueError("expected an integer")
        if not lo <= value <= hi:
            raise ValueError(f"expected an integer from {lo} to {hi}")
        return int(value)

    return check


def _float(lo: float, hi: float, lo_open: bool = False) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("expected a number")
        if value > hi or value < lo or (lo_open and value == lo):
            raise ValueError(f"expected a number in {'(' if lo_open else '['}{lo}, {hi}]")
        return float(value)

    return check


def _switch(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("on", "off"):
        return value == "on"
    raise ValueError("expected true/false or on/off")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _model(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("expected a checkpoint directory or hub id (a string)")
    return value.strip()


def _device(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", value):
        raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
    return value


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of non-empty strings")
    return list(value)


def _enabled_map(value: Any) -> dict[str, bool]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, bool) for k, v in value.items()
    ):
        raise ValueError('expected an object of languageId: true/false, e.g. {"markdown": false}')
    return dict(value)


@dataclass
class ModelSettings:
    """Which model runs and how; changing any of these reloads the model."""

    model: str = _setting(
        "", "model", "Checkpoint directory or hub id; empty: the shipped model.", _model
    )
    device: str = _setting("auto", "device", "auto, cpu, cuda, cuda:N or mps.", _device)
    dtype: str = _setting(
        "auto",
        "dtype",
        "auto, float32, bfloat16 or float16.",
        _choice("auto", "float32", "bfloat16", "float16"),
    )
    quantize: str = _setting(
        "auto",
        "quantize",
        "Weight-only quantization: auto (int8 on CPUs with bf16), none or int8.",
        _choice("auto", "none", "int8"),
    )
    threads: int = _setting(
        0, "threads", "CPU threads for the model; 0 keeps torch's default.", _int(0, 256)
    )
    allow_download: bool = _setting(
        False, "allowDownload", "Allow fetching a hub id that is not cached locally.", _flag
    )
    cache_memory_mb: int = _setting(
        512, "cacheMemoryMB", "Memory budget of the KV prefix cache, MiB.", _int(0, 1 << 20)
    )
    prefix_reuse: bool = _setting(
        True, "prefixReuse", "Reuse the KV cache across keystrokes (on/off).", _switch
    )
    memory_limit_mb: int = _setting(
        0,
        "memoryLimitMB",
        "Most memory for the weights plus the KV cache budget, MiB; 0: no limit. Checked "
        "before loading.",
        _int(0, 1 << 24),
    )


@dataclass
class GenerationSettings:
    """How suggestions are generated."""

    max_new_tokens: int = _setting(
        64, "maxNewTokens", "Most tokens generated per suggestion.", _int(1, 2048)
    )
    temperature: float = _setting(
        0.0, "temperature", "Sampling temperature; 0 is greedy.", _float(0.0, 5.0)
    )
    top_p: float = _setting(
        0.95, "topP", "Nucleus sampling mass, in (0, 1].", _float(0.0, 1.0, lo_open=True)
    )
    top_k: int = _setting(
        0, "topK", "Sample from the k most likely tokens; 0 is off.", _int(0, 100_000)
    )
    candidates: int = _setting(1, "candidates", "Suggestions per request (1 to 10).", _int(1, 10))
    stop_sequences: list[str] = _setting(
        [], "stopSequences", "Extra strings that end a suggestion.", _strings, factory=True
    )
    time_limit_ms: int = _setting(
        10_000,
        "timeLimitMs",
        "Most milliseconds of model time per request (the text so far is kept); 0: no limit.",
        _int(0, 3_600_000),
    )


@dataclass
class PromptSettings:
    """What the model sees."""

    context_tokens: int = _setting(
        1024,
        "contextTokens",
        "Most prompt tokens; 0: all the model's context allows.",
        _int(0, 1 << 20),
    )
    multiline: str = _setting(
        "auto", "multiline", "auto, always or never.", _choice("auto", "always", "never")
    )
    header: str = _setting(
        "auto",
        "header",
        "Language/path comment header: auto (multi-language models), on or off.",
        _choice("auto", "on", "off"),
    )


@dataclass
class Settings:
    """All settings under ``codegen``."""

    model: ModelSettings = field(default_factory=ModelSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    languages: dict[str, bool] = _setting(
        {},
        "languages",
        'Per-language switch by languageId, e.g. {"markdown": false}.',
        _enabled_map,
        factory=True,
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
        )

    def completion_options(self, model_name: str = "") -> CompletionOptions:
        """Per-request options; ``model_name`` decides ``header: auto``."""
        g, p = self.generation, self.prompt
        header = p.header == "on" or (p.header == "auto" and "multi" in model_name.lower())
        return CompletionOptions(
            max_new_tokens=g.max_new_tokens,
            temperature=g.temperature,
            top_p=g.top_p,
            top_k=g.top_k,
            candidates=g.candidates,
            stop_sequences=tuple(g.stop_sequences),
            context_tokens=p.context_tokens,
            multiline=p.multiline,
            header=header,
            time_limit_s=g.time_limit_ms / 1000 if g.time_limit_ms else None,
        )


def _groups(settings: Settings) -> list[Any]:
    return [settings, settings.model, settings.generation, settings.prompt]


def setting_fields() -> list[tuple[str, Any, str]]:
    """(JSON key, default, documentation) of every setting, in declaration order."""
    out = []
    for group in _groups(Settings()):
        for f in fields(group):
            if "key" in f.metadata:
                out.append((f.metadata["key"], getattr(group, f.name), f.metadata["doc"]))
    return out


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
    for group in _groups(settings):
        for f in fields(group):
            key = f.metadata.get("key")
            if key is None:
                continue
            known.add(key)
            if key not in raw:
                continue
            try:
                setattr(group, f.name, f.metadata["check"](raw[key]))
            except ValueError as exc:
                default = getattr(group, f.name)
                problems.append(f"codegen.{key}: {exc}, got {raw[key]!r}; using {default!r}")
    unknown = sorted(str(k) for k in raw if k not in known)
    return settings, problems, unknown
