"""One declaration per setting: the code's defaults and the editors' copies follow it.

Each setting is declared once, as a field of :class:`EngineSpec`, :class:`CompletionOptions`
or :class:`Settings`; the default of that field is the default users get, and the tests here
check it (``CompletionOptions()`` in a test is the users' configuration).

The editors' copies are written by ``tools/gen_editor_settings.py``; a test checks that the
files are current (else: run the script). Independently of the script, checkers read the copies
and compare them with the declaration: VS Code's ``contributes.configuration`` (type, default,
range, enum, pattern), the extension's ``SERVER_SETTING_KEYS`` / ``CLIENT_SETTING_KEYS``
(settings.ts), the Neovim plugin's ``server_types`` / ``SERVER_ENUMS`` (config.lua) and the
defaults table of its help file. Each checker returns a list of differences; the drift tests
feed them altered copies.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.engine.api import SamplingParams
from codegen_lsp.engine.setting_spec import declared
from codegen_lsp.engine.spec import EngineSpec
from codegen_lsp.server.settings import Settings, parse_settings, schema, setting_fields, specs

REPO = Path(__file__).resolve().parent.parent
GENERATOR = REPO / "tools" / "gen_editor_settings.py"
PACKAGE_JSON = REPO / "editors" / "vscode" / "package.json"
SETTINGS_TS = REPO / "editors" / "vscode" / "src" / "settings.ts"
CONFIG_LUA = REPO / "editors" / "neovim" / "lua" / "codegen_lsp" / "config.lua"
HELP_TXT = REPO / "editors" / "neovim" / "doc" / "codegen-lsp.txt"

# `codegen.*` settings that only the VS Code extension reads; never sent to the server.
CLIENT_ONLY = ("enable", "autoTrigger", "serverCommand", "pythonPath", "trace.server")
# The JSON-schema fields of a property that must equal the server's declaration.
SCHEMA_FIELDS = (
    "type",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "enum",
    "pattern",
    "items",
    "additionalProperties",
)
# The Lua type config.lua validates for each kind of setting.
LUA_KINDS = {
    "bool": "boolean",
    "int": "number",
    "float": "number",
    "string": "string",
    "enum": "string",
    "strings": "list",
    "object": "map",
    "word_or_number": "string|number",
}


def same(a: Any, b: Any) -> bool:
    """JSON equality that keeps booleans apart from numbers (``1 == 1.0``, ``True != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and (isinstance(a, int | float) == isinstance(b, int | float))


def vscode_drift(properties: dict[str, Any], declared: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between package.json's ``codegen.*`` properties and the declaration."""
    problems = [
        f"codegen.{k}: client-only key missing"
        for k in CLIENT_ONLY
        if f"codegen.{k}" not in properties
    ]
    server = {
        name.removeprefix("codegen."): prop
        for name, prop in properties.items()
        if name.removeprefix("codegen.") not in CLIENT_ONLY
    }
    for key, want in declared.items():
        have = server.get(key)
        if have is None:
            problems.append(f"codegen.{key}: missing from package.json")
            continue
        for name in SCHEMA_FIELDS:
            if not same(have.get(name), want.get(name)):
                problems.append(
                    f"codegen.{key}: {name} is {have.get(name)!r} in package.json, "
                    f"{want.get(name)!r} in settings.py"
                )
    problems += [f"codegen.{key}: not a server setting" for key in server if key not in declared]
    return problems


def ts_string_list(source: str, name: str) -> list[str]:
    """The strings of ``export const NAME = [...]`` in a TypeScript source."""
    found = re.search(rf"\bconst {name}\s*=\s*\[(.*?)\]", source, re.S)
    return re.findall(r"[\"']([^\"']+)[\"']", found.group(1)) if found else []


def ts_drift(source: str, declared: list[str], package_order: list[str]) -> list[str]:
    """Differences between settings.ts's key lists and the declaration / package.json order."""
    server = ts_string_list(source, "SERVER_SETTING_KEYS")
    client = ts_string_list(source, "CLIENT_SETTING_KEYS")
    problems = [
        f"settings.ts: {k} missing from SERVER_SETTING_KEYS" for k in declared if k not in server
    ]
    problems += [f"settings.ts: {k} is not a server setting" for k in server if k not in declared]
    if not problems and server != package_order:
        problems.append("settings.ts: SERVER_SETTING_KEYS not in package.json order")
    if sorted(client) != sorted(CLIENT_ONLY):
        problems.append(f"settings.ts: CLIENT_SETTING_KEYS is {client}, not {list(CLIENT_ONLY)}")
    return problems


def lua_table(source: str, head: str) -> str:
    """The body of the Lua table assigned at ``head = {`` (up to its closing line ``}``)."""
    found = re.search(rf"^{re.escape(head)}\s*=\s*\{{\n(.*?)^\}}", source, re.S | re.M)
    return found.group(1) if found else ""


def lua_drift(source: str, declared: dict[str, dict[str, Any]], kinds: dict[str, str]) -> list[str]:
    """Differences between config.lua's ``server_types`` / ``SERVER_ENUMS`` and the declaration."""
    types = re.findall(r'\{\s*"(\w+)"\s*,\s*"([\w|]+)"\s*\}', lua_table(source, "M.server_types"))
    enums = {
        name: re.findall(r'"([^"]*)"', values)
        for name, values in re.findall(
            r"(\w+)\s*=\s*\{([^}]*)\}", lua_table(source, "local SERVER_ENUMS")
        )
    }
    problems = []
    if [name for name, _ in types] != list(declared):
        problems.append(
            f"config.lua: server_types keys {[n for n, _ in types]} != {list(declared)}"
        )
    for name, lua_kind in types:
        if name in kinds and LUA_KINDS[kinds[name]] != lua_kind:
            problems.append(f"config.lua: {name} is {lua_kind!r}, not {LUA_KINDS[kinds[name]]!r}")
    want_enums = {k: s["enum"] for k, s in declared.items() if "enum" in s}
    if enums != want_enums:
        problems.append(f"config.lua: SERVER_ENUMS {enums} != {want_enums}")
    return problems


def lua_literal(text: str) -> Any:
    """A default as the help file writes it: ``"auto"``, ``0.95``, ``false``, ``{}``."""
    if text.startswith('"'):
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    if text == "{}":
        return {}
    return float(text) if "." in text else int(text)


def help_drift(text: str, declared: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between the help file's table of server defaults and the declaration."""
    table = text.split("*codegen-lsp-server-settings*", 1)[-1].split("Meaning ~", 1)[-1]
    table = table.split("Example", 1)[0]
    rows = re.findall(r'^ {4}(\w+) +("[^"]*"|\S+)', table, re.M)
    problems = []
    if [key for key, _ in rows] != list(declared):
        problems.append(f"help: keys {[k for k, _ in rows]} != {list(declared)}")
    for key, literal in rows:
        want = declared.get(key, {}).get("default")
        have = lua_literal(literal)
        if have == {} and want in ([], {}):
            continue
        if not same(have, want):
            problems.append(f"help: {key} default is {literal}, settings.py says {want!r}")
    return problems


def kinds() -> dict[str, str]:
    return {s.key: s.kind for s in specs()}


def package_properties() -> dict[str, Any]:
    return json.loads(PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]


def test_vscode_contribution_matches_the_declaration() -> None:
    assert vscode_drift(package_properties(), schema()) == []


def test_vscode_settings_ts_matches_the_declaration() -> None:
    props = package_properties()
    order = [k.removeprefix("codegen.") for k in props if k.removeprefix("codegen.") in schema()]
    assert ts_drift(SETTINGS_TS.read_text(), list(schema()), order) == []


def test_neovim_config_matches_the_declaration() -> None:
    assert lua_drift(CONFIG_LUA.read_text(), schema(), kinds()) == []


def test_neovim_help_defaults_match_the_declaration() -> None:
    assert help_drift(HELP_TXT.read_text(), schema()) == []


def test_the_checkers_catch_drift() -> None:
    declared = schema()
    props = copy.deepcopy(package_properties())
    props["codegen.maxNewTokens"]["default"] = 128
    props["codegen.threads"]["maximum"] = 512
    props["codegen.allowDownload"]["default"] = 0  # a number, not false
    del props["codegen.topK"]
    props["codegen.spare"] = {"type": "string", "default": ""}
    problems = vscode_drift(props, declared)
    for needle in ("maxNewTokens: default", "threads: maximum", "allowDownload: default"):
        assert any(needle in p for p in problems), (needle, problems)
    assert any("topK: missing" in p for p in problems)
    assert any("spare: not a server" in p for p in problems)
    assert len(problems) == 5

    ts = SETTINGS_TS.read_text().replace('  "topK",\n', "", 1)
    assert ts_drift(ts, list(declared), list(declared)) == [
        "settings.ts: topK missing from SERVER_SETTING_KEYS"
    ]

    lua = CONFIG_LUA.read_text()
    lua = lua.replace('{ "threads", "number" }', '{ "threads", "string" }')
    lua = lua.replace('"float16" }', '"float16", "int4" }')
    problems = lua_drift(lua, declared, kinds())
    assert len(problems) == 2 and "threads" in problems[0] and "int4" in problems[1]
    lua = lua.replace('  { "header", "string" },\n', "")
    assert any("server_types keys" in p for p in lua_drift(lua, declared, kinds()))

    help_text = re.sub(r"(\n    maxNewTokens +)64 ", r"\g<1>32 ", HELP_TXT.read_text())
    assert help_drift(help_text, declared) == [
        "help: maxNewTokens default is 32, settings.py says 64"
    ]


def test_declarations_are_consistent() -> None:
    assert [key for key, _, _ in setting_fields()] == list(schema())
    for spec in specs():
        assert spec.doc and spec.check(copy.deepcopy(spec.default)) == spec.default, spec.key
        if spec.kind in ("int", "float"):
            assert spec.minimum is not None and spec.maximum is not None, spec.key
            assert spec.minimum <= spec.default <= spec.maximum, spec.key
        if spec.kind == "enum":
            assert spec.default in spec.enum, spec.key


@pytest.mark.parametrize(
    "spec", [s for s in specs() if s.kind in ("int", "float")], ids=lambda s: s.key
)
def test_number_ranges_are_the_declared_ones(spec: Any) -> None:
    lo, hi = spec.minimum, spec.maximum
    step = 1 if spec.kind == "int" else 1e-6
    for value, ok in [(hi, True), (hi + step, False), (lo, not spec.exclusive_minimum)]:
        _, problems, _ = parse_settings({spec.key: value})
        assert (problems == []) == ok, (value, problems)
    _, problems, _ = parse_settings({spec.key: lo - step})
    assert len(problems) == 1 and f"codegen.{spec.key}" in problems[0]


def test_device_and_non_finite_numbers() -> None:
    settings, problems, _ = parse_settings({"device": "mps"})
    assert settings.model.device == "auto" and "codegen.device" in problems[0]
    for device in ("auto", "cpu", "cuda", "cuda:1"):
        assert parse_settings({"device": device})[0].model.device == device
    settings, problems, _ = parse_settings(
        {"temperature": math.nan, "maxNewTokens": math.inf, "topP": -math.inf}
    )
    assert (
        len(problems) == 3
        and settings.completion.max_new_tokens == CompletionOptions().max_new_tokens
    )
    assert parse_settings({"prefixReuse": "off"})[0].model.prefix_reuse is False
    assert parse_settings({"maxNewTokens": 32.0})[0].completion.max_new_tokens == 32


def generator() -> Any:
    """tools/gen_editor_settings.py as a module."""
    spec = importlib.util.spec_from_file_location("gen_editor_settings", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current() -> None:
    assert generator().stale() == [], "run tools/gen_editor_settings.py"


def test_the_generator_writes_a_new_declaration_and_keeps_hand_written_text(
    tmp_path: Path,
) -> None:
    gen = generator()
    for name in gen.WRITERS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    assert gen.stale(tmp_path) == []
    declared = schema()
    declared["maxNewTokens"]["default"] = 32
    declared["newSetting"] = {"type": "string", "default": "x", "enum": ["x", "y"],
                              "description": "A setting declared since."}  # fmt: skip
    kinds_now = {**kinds(), "newSetting": "enum"}
    assert sorted(gen.stale(tmp_path, declared)) == sorted(gen.WRITERS)
    for name, (_, new) in gen.generate(tmp_path, declared).items():
        (tmp_path / name).write_text(new)
    assert gen.stale(tmp_path, declared) == []

    props = json.loads((tmp_path / gen.PACKAGE_JSON).read_text())
    props = props["contributes"]["configuration"]["properties"]
    assert vscode_drift(props, declared) == []
    assert [p["order"] for p in props.values()] == list(range(len(props)))
    order = [k.removeprefix("codegen.") for k in props if k.removeprefix("codegen.") in declared]
    ts = (tmp_path / gen.SETTINGS_TS).read_text()
    assert ts_drift(ts, list(declared), order) == []
    lua = (tmp_path / gen.CONFIG_LUA).read_text()
    assert lua_drift(lua, declared, kinds_now) == []
    assert help_drift((tmp_path / gen.HELP_TXT).read_text(), declared) == []
    # the hand-written parts are kept as they were
    assert lua.split("-- BEGIN GENERATED")[0] == CONFIG_LUA.read_text().split("-- BEGIN")[0]
    assert lua.split("-- END GENERATED")[1] == CONFIG_LUA.read_text().split("-- END GENERATED")[1]
    assert ts.split("// END GENERATED")[1] == SETTINGS_TS.read_text().split("// END GENERATED")[1]
    help_old, help_new = HELP_TXT.read_text(), (tmp_path / gen.HELP_TXT).read_text()
    assert help_new.split("Key ")[0] == help_old.split("Key ")[0]
    assert help_new.split("\nExample: >lua")[1] == help_old.split("\nExample: >lua")[1]
    assert props["codegen.enable"] == package_properties()["codegen.enable"]

    # an edit inside a generated region is seen
    (tmp_path / gen.CONFIG_LUA).write_text(lua.replace('"y" }', '"y", "z" }'))
    assert gen.stale(tmp_path, declared) == [gen.CONFIG_LUA]


def default_drift(defaults: Any) -> list[str]:
    """Where the fields of ``defaults`` (an instance built with no arguments, or one to test
    the checker) differ from the defaults their settings declare."""
    return [
        f"{type(defaults).__name__}.{name}: {getattr(defaults, name)!r}, declared "
        f"{spec.json_default!r} ({spec.key})"
        for name, spec in declared(type(defaults))
        if not same(json.loads(json.dumps(getattr(defaults, name))), spec.json_default)
    ]


def test_code_defaults_are_the_declared_ones() -> None:
    for cls in (EngineSpec, CompletionOptions, Settings):
        assert default_drift(cls()) == [], cls
    assert len(specs()) == sum(len(declared(c)) for c in (EngineSpec, CompletionOptions, Settings))
    # what code and tests build with no arguments is what a user without settings gets
    users, _, _ = parse_settings({})
    assert users.engine_spec() == EngineSpec()
    assert users.completion_options(None) == CompletionOptions()
    want = schema()
    options = CompletionOptions()
    assert options.sampling == SamplingParams(
        want["temperature"]["default"], want["topP"]["default"], want["topK"]["default"]
    )
    assert options.time_limit_s == want["timeLimitMs"]["default"] / 1000
    assert options.header is False and want["header"]["default"] == "auto"


def test_the_default_check_catches_drift() -> None:
    drifted = dataclasses.replace(CompletionOptions(), top_p=1.0, answer_early=False)
    problems = default_drift(drifted)
    assert len(problems) == 2
    assert "top_p: 1.0, declared 0.95 (topP)" in problems[0]
    assert "answer_early: False, declared True (answerEarly)" in problems[1]
    assert default_drift(EngineSpec(cache_memory_mb=8)) == [
        "EngineSpec.cache_memory_mb: 8, declared 512 (cacheMemoryMB)"
    ]
    with pytest.raises(ValueError, match="top_p"):
        CompletionOptions(top_p=0.0)  # the sampling fields are checked when built
