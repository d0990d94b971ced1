"""Settings (settings.py): defaults, camelCase keys, invalid values fall back per key."""

from __future__ import annotations

from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.engine.api import ModelInfo
from codegen_lsp.server.settings import (
    Settings,
    parse_settings,
    section,
    setting_fields,
)


def test_defaults() -> None:
    settings, problems, unknown = parse_settings({})
    assert settings == Settings()
    assert problems == unknown == []
    assert settings.completion.max_new_tokens == 64
    assert settings.completion.multiline == "auto"


def test_values_are_read_from_flat_camel_case_keys() -> None:
    raw = {
        "model": "/models/codegen",
        "maxNewTokens": 32,
        "temperature": 0.2,
        "topP": 0.9,
        "topK": 40,
        "candidates": 3,
        "stopSequences": ["\n\n"],
        "contextTokens": 512,
        "multiline": "never",
        "prefixReuse": "off",
        "cacheMemoryMB": 256,
        "threads": 2,
        "allowDownload": True,
        "languages": {"markdown": False},
        "header": "on",
        "quantize": "int8",
        "dtype": "bfloat16",
        "device": "cuda:1",
    }
    settings, problems, unknown = parse_settings(raw)
    assert problems == [] and unknown == []
    spec = settings.engine_spec()
    assert (spec.model, spec.device, spec.dtype, spec.quantize) == (
        "/models/codegen",
        "cuda:1",
        "bfloat16",
        "int8",
    )
    assert (spec.prefix_reuse, spec.cache_memory_mb, spec.threads, spec.allow_download) == (
        False,
        256,
        2,
        True,
    )
    options = settings.completion_options()
    assert options.max_new_tokens == 32 and options.candidates == 3 and options.header
    assert options.stop_sequences == ("\n\n",) and options.multiline == "never"
    assert not settings.enabled("markdown") and settings.enabled("python")


def test_invalid_values_name_the_key_and_fall_back() -> None:
    raw = {"temperature": "hot", "maxNewTokens": 0, "candidates": 2, "multiline": "sometimes"}
    settings, problems, _ = parse_settings(raw)
    assert settings.completion.temperature == 0.0
    assert settings.completion.max_new_tokens == 64
    assert settings.completion.candidates == 2  # valid keys keep their values
    assert settings.completion.multiline == "auto"
    assert len(problems) == 3
    assert any("codegen.temperature" in p and "'hot'" in p for p in problems)
    assert any("codegen.maxNewTokens" in p for p in problems)


def test_type_confusions_are_rejected() -> None:
    raw = {"topK": True, "topP": 0, "stopSequences": "\n", "languages": ["python"], "model": 3}
    settings, problems, _ = parse_settings(raw)
    assert len(problems) == 5
    assert settings == Settings()


def test_unknown_keys_and_non_objects() -> None:
    _, problems, unknown = parse_settings({"modle": "x"})
    assert problems == [] and unknown == ["modle"]
    settings, problems, _ = parse_settings(["not", "an", "object"])
    assert settings == Settings() and problems


def test_section_and_header_auto() -> None:
    assert section({"codegen": {"a": 1}}) == {"a": 1}
    assert section({"a": 1}) == {"a": 1}
    settings = Settings()
    assert settings.completion_options(ModelInfo("m", "codegen", "multi")).header
    assert not settings.completion_options(ModelInfo("m", "codegen", "mono")).header
    assert not settings.completion_options(None).header
    assert Settings(completion=CompletionOptions(header_mode="on")).completion_options(None).header


def test_every_setting_is_documented() -> None:
    keys = [key for key, _, doc in setting_fields() if doc]
    assert len(keys) == len(setting_fields()) >= 18
    assert len(set(keys)) == len(keys)
