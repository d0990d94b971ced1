"""The server's settings: declared once as data, parsed once per change.

Settings live under ``codegen`` in ``initializationOptions`` and in
``workspace/didChangeConfiguration`` (or are pulled with ``workspace/configuration``). Keys
are flat camelCase names (``codegen.maxNewTokens``). Each setting is declared once, as a field
of the dataclass that uses it: :class:`EngineSpec` (the model's settings: changing one reloads
the model), :class:`CompletionOptions` (generation and prompt) and :class:`Settings` itself
(``languages``). Each such field carries a :class:`SettingSpec` (JSON key, kind, default,
range, doc); the check of a value and the JSON schema (:func:`schema`, from which
``tools/gen_editor_settings.py`` writes the editors' copies) are both derived from it. An
invalid value is reported (naming the key) and that key falls back to its default; the other
keys keep their values. Unknown keys are logged and ignored.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.engine.api import EngineSpec, ModelInfo
from codegen_lsp.engine.setting_spec import SettingSpec, declare, declared

DRAFT_NEEDS_MODEL = (
    "codegen.speculation: draft needs codegen.draftModel (a smaller CodeGen with the same "
    "tokenizer); using lookup"
)


@dataclass
class Settings:
    """All settings under ``codegen``: the model's (declared on :class:`EngineSpec`), the
    generation and prompt settings (declared on :class:`CompletionOptions`) and ``languages``.
    """

    model: EngineSpec = field(default_factory=EngineSpec)
    completion: CompletionOptions = field(default_factory=CompletionOptions)
    languages: dict[str, bool] = declare(
        "languages",
        "object",
        {},
        'Per-language switch by language id, e.g. `{"markdown": false}`; `"*"` sets the '
        "default for the rest.",
    )

    def enabled(self, language_id: str) -> bool:
        """False when the ``languages`` setting turns this language off."""
        return self.languages.get(language_id, self.languages.get("*", True))

    def engine_spec(self) -> EngineSpec:
        """The worker's load spec for these settings (a copy)."""
        return replace(self.model)

    def completion_options(self, model: ModelInfo | None = None) -> CompletionOptions:
        """Per-request options; the loaded ``model`` decides ``header: auto``."""
        multi = model is not None and model.multi_language
        return replace(self.completion, multi_language=multi)


# The groups of settings in Settings (attribute: declaring class), in their keys' order.
GROUPS: dict[str, type] = {"model": EngineSpec, "completion": CompletionOptions}


def _declared() -> Iterator[tuple[str | None, str, SettingSpec]]:
    """(group attribute, or None for Settings' own; attribute name; spec) of every setting,
    in declaration order (groups first)."""
    for group, cls in GROUPS.items():
        for name, spec in declared(cls):
            yield group, name, spec
    for name, spec in declared(Settings):
        yield None, name, spec


def specs() -> list[SettingSpec]:
    """The declaration of every setting, in declaration order."""
    return [spec for _, _, spec in _declared()]


def setting_fields() -> list[tuple[str, Any, str]]:
    """(JSON key, default, documentation) of every setting, in declaration order."""
    return [(s.key, s.json_default, s.doc) for s in specs()]


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
    mine: dict[str, Any] = {}  # top-level fields
    values: dict[str, dict[str, Any]] = {group: {} for group in GROUPS}
    for group, name, spec in _declared():
        if spec.key not in raw:
            continue
        value = raw[spec.key]
        try:
            (mine if group is None else values[group])[name] = spec.check(value)
        except ValueError as exc:
            problems.append(
                f"codegen.{spec.key}: {exc}, got {value!r}; using {spec.json_default!r}"
            )
    settings = replace(
        settings, **mine, **{g: replace(getattr(settings, g), **v) for g, v in values.items()}
    )
    if settings.completion.speculation == "draft" and not settings.model.draft_model:
        problems.append(DRAFT_NEEDS_MODEL)
        settings.completion = replace(settings.completion, speculation="lookup")
    known = {spec.key for _, _, spec in _declared()}
    unknown = sorted(str(k) for k in raw if k not in known)
    return settings, problems, unknown
