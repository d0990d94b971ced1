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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from codegen_lsp.completion.core import CompletionOptions
from codegen_lsp.engine.api import EngineSpec, ModelInfo, SamplingParams
from codegen_lsp.server.setting_spec import ON_OFF, SettingSpec, declare

DRAFT_NEEDS_MODEL = (
    "codegen.speculation: draft needs codegen.draftModel (a smaller CodeGen with the same "
    "tokenizer); using lookup"
)


@dataclass
class ModelSettings:
    """Which model runs and how; changing any of these reloads the model."""

    model: str = declare(
        "model", "string", "", "Checkpoint directory or hub id; empty: the shipped model."
    )
    device: str = declare(
        "device",
        "string",
        "auto",
        "Where the model runs: auto, cpu, cuda or cuda:N.",
        pattern=r"auto|cpu|cuda(:\d+)?",
        pattern_doc="auto, cpu, cuda or cuda:N",
    )
    dtype: str = declare(
        "dtype",
        "enum",
        "auto",
        "Dtype of the weights and activations.",
        enum=("auto", "float32", "bfloat16", "float16"),
    )
    quantize: str = declare(
        "quantize",
        "enum",
        "auto",
        "Weight-only quantization: auto (int8 on CPUs with bf16), none or int8.",
        enum=("auto", "none", "int8"),
    )
    threads: int = declare(
        "threads",
        "int",
        0,
        "CPU threads for the model; 0 keeps torch's default.",
        minimum=0,
        maximum=256,
    )
    allow_download: bool = declare(
        "allowDownload", "bool", False, "Allow fetching a hub id that is not cached locally."
    )
    cache_memory_mb: int = declare(
        "cacheMemoryMB",
        "int",
        512,
        "Memory budget of the KV prefix cache, MiB.",
        minimum=0,
        maximum=1 << 20,
    )
    prefix_reuse: bool = declare(
        "prefixReuse",
        "bool",
        True,
        "Reuse the KV cache across keystrokes (also on/off).",
        aliases=ON_OFF,
    )
    memory_limit_mb: int = declare(
        "memoryLimitMB",
        "int",
        0,
        "Most memory for the weights plus the KV cache budget, MiB; 0: no limit. Checked "
        "before loading.",
        minimum=0,
        maximum=1 << 24,
    )
    draft_model: str = declare(
        "draftModel",
        "string",
        "",
        "A smaller CodeGen with the same tokenizer (a directory or hub id) whose greedy tokens "
        "are the drafts of speculative decoding, e.g. Salesforce/codegen-350M-mono for the "
        "2B/6B/16B-mono checkpoints; empty: none (lookup drafts). Local models only.",
    )


@dataclass
class RemoteSettings:
    """Remote mode: an OpenAI-compatible server (vLLM) runs the model; see docs/remote.md."""

    endpoint: str = declare(
        "endpoint",
        "string",
        "",
        "Base URL of an OpenAI-compatible server (vLLM), e.g. http://gpu-box:8000/v1; "
        "empty: run the model in the server's own process.",
        pattern=r"|https?://\S+",
        pattern_doc="empty or an http:// or https:// URL",
    )
    remote_model: str = declare(
        "remoteModel", "string", "", "The served model's name; empty: the first it lists."
    )
    api_key_env: str = declare(
        "apiKeyEnv",
        "string",
        "",
        "Name of the environment variable holding the endpoint's API key (never the key).",
        pattern=r"|[A-Za-z_][A-Za-z0-9_]*",
        pattern_doc="empty or an environment variable name",
    )
    request_timeout_ms: int = declare(
        "requestTimeoutMs",
        "int",
        30_000,
        "Most milliseconds to wait for the endpoint's next bytes.",
        minimum=100,
        maximum=600_000,
    )
    ca_bundle: str = declare(
        "caBundle",
        "string",
        "",
        "A CA certificate file for the endpoint's TLS; empty: the system's.",
    )


@dataclass
class GenerationSettings:
    """How suggestions are generated."""

    max_new_tokens: int = declare(
        "maxNewTokens",
        "int",
        64,
        "Most tokens generated per suggestion.",
        minimum=1,
        maximum=2048,
    )
    temperature: float = declare(
        "temperature",
        "float",
        0.0,
        "Sampling temperature; 0 is greedy.",
        minimum=0.0,
        maximum=5.0,
    )
    top_p: float = declare(
        "topP",
        "float",
        0.95,
        "Nucleus sampling mass, in (0, 1].",
        minimum=0.0,
        maximum=1.0,
        exclusive_minimum=True,
    )
    top_k: int = declare(
        "topK",
        "int",
        0,
        "Sample from the k most likely tokens; 0 is off.",
        minimum=0,
        maximum=100_000,
    )
    candidates: int = declare(
        "candidates", "int", 1, "Suggestions per request (1 to 10).", minimum=1, maximum=10
    )
    stop_sequences: list[str] = declare(
        "stopSequences", "strings", [], "Extra strings that end a suggestion."
    )
    time_limit_ms: int = declare(
        "timeLimitMs",
        "int",
        10_000,
        "Most milliseconds of model time per request (the text so far is kept); 0: no limit.",
        minimum=0,
        maximum=3_600_000,
    )
    speculation: str = declare(
        "speculation",
        "enum",
        "auto",
        "Speculative decoding of greedy suggestions, exact (the text never changes): auto (a "
        "draft model when draftModel is set, else lookup), lookup (drafts from the prompt's own "
        "text), draft (the draft model's tokens), off; needs int8/int4 weights.",
        enum=("auto", "off", "lookup", "draft"),
    )


@dataclass
class PromptSettings:
    """What the model sees."""

    context_tokens: int = declare(
        "contextTokens",
        "int",
        1024,
        "Most prompt tokens; 0: all the model's context allows.",
        minimum=0,
        maximum=1 << 20,
    )
    multiline: str = declare(
        "multiline",
        "enum",
        "auto",
        "Single- or multi-line suggestions: auto, always or never.",
        enum=("auto", "always", "never"),
    )
    answer_early: bool = declare(
        "answerEarly",
        "bool",
        True,
        "Show a multi-line suggestion's first line as soon as it is complete and decode the "
        "rest in the background (accepting or typing on serves it without a new model call).",
    )
    context_files: int = declare(
        "contextFiles",
        "int",
        2,
        "Snippets from other open files of the language put before the window; 0: off.",
        minimum=0,
        maximum=10,
    )
    context_file_tokens: int = declare(
        "contextFileTokens",
        "int",
        256,
        "Most tokens for the other files' snippets (at most a quarter of the prompt).",
        minimum=0,
        maximum=8192,
    )
    fim: str = declare(
        "fim",
        "enum",
        "auto",
        "Fill-in-the-middle for CodeGen2 checkpoints: auto (when text follows the cursor), "
        "on or off.",
        enum=("auto", "on", "off"),
    )
    header: str = declare(
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
    remote: RemoteSettings = field(default_factory=RemoteSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    languages: dict[str, bool] = declare(
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
        m, r = self.model, self.remote
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
            draft_model=m.draft_model,
            endpoint=r.endpoint,
            remote_model=r.remote_model,
            api_key_env=r.api_key_env,
            request_timeout_ms=r.request_timeout_ms,
            ca_bundle=r.ca_bundle,
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
            answer_early=p.answer_early,
            header=p.header == "on" or (p.header == "auto" and multi),
            time_limit_s=g.time_limit_ms / 1000 if g.time_limit_ms else None,
            fim=p.fim,
            context_files=p.context_files,
            context_file_tokens=p.context_file_tokens,
            speculation=g.speculation,
        )


def _declared(settings: Settings) -> Iterator[tuple[Any, str, SettingSpec]]:
    """(group, attribute name, spec) of every setting, in declaration order (groups first)."""
    for group in (settings.model, settings.remote, settings.generation, settings.prompt, settings):
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
    if settings.generation.speculation == "draft" and not settings.model.draft_model:
        problems.append(DRAFT_NEEDS_MODEL)
        settings.generation.speculation = "lookup"
    unknown = sorted(str(k) for k in raw if k not in known)
    return settings, problems, unknown
