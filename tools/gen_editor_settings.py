"""Write the editors' copies of the server settings from their one declaration.

The server's settings are declared once (``codegen_lsp/server/settings.py`` gathers them; see
:func:`codegen_lsp.server.settings.schema`). The editors need them too, and this script writes
them:

- VS Code: ``contributes.configuration.properties`` in ``editors/vscode/package.json`` (the
  server's keys; the extension's own keys, such as ``codegen.enable``, are kept as written)
  and ``SERVER_SETTING_KEYS`` in ``editors/vscode/src/settings.ts``;
- Neovim: ``SERVER_ENUMS`` and ``M.server_types`` in ``editors/neovim/lua/codegen_lsp/config.lua``
  and the table of server settings in ``editors/neovim/doc/codegen-lsp.txt``;
- the documents: the settings tables of ``README.md``, ``docs/server.md`` and ``docs/editors.md``
  (between ``<!-- BEGIN GENERATED ... -->`` and ``<!-- END GENERATED -->``).

In the source files the generated text sits between ``BEGIN GENERATED`` and ``END GENERATED``
comment lines; in the help file it is the table under the ``Key  Default  Meaning ~`` line, up
to the first blank line. Everything else in these files is written by hand and kept.

Usage (with the package importable, e.g. ``pip install -e .``)::

    python tools/gen_editor_settings.py          # rewrite the files that are out of date
    python tools/gen_editor_settings.py --check  # list them and exit 1, writing nothing

``tests/test_settings_schema.py`` runs the check. Adding a setting is one declaration (a
``declare(...)`` field) and one run of this script.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codegen_lsp.server.settings import schema

REPO = Path(__file__).resolve().parent.parent
PACKAGE_JSON = "editors/vscode/package.json"
SETTINGS_TS = "editors/vscode/src/settings.ts"
CONFIG_LUA = "editors/neovim/lua/codegen_lsp/config.lua"
HELP_TXT = "editors/neovim/doc/codegen-lsp.txt"

# `codegen.*` settings only the VS Code extension reads: listed before / after the server's.
CLIENT_FIRST = ("enable", "autoTrigger", "serverCommand", "pythonPath")
CLIENT_LAST = ("trace.server",)
# The Lua type config.lua validates for each JSON type ("list": of strings; "map":
# languageId = boolean; "string|number": a word the server checks, or a number).
LUA_TYPES = {
    "boolean": "boolean",
    "integer": "number",
    "number": "number",
    "string": "string",
    "array": "list",
    "object": "map",
    "string|number": "string|number",
}
NOTE = "by tools/gen_editor_settings.py; do not edit"
HELP_HEAD = re.compile(r"^ +Key +Default +Meaning ~\n", re.M)
KEY_WIDTH, DEFAULT_WIDTH, HELP_WIDTH = 18, 10, 78

Schema = dict[str, dict[str, Any]]


def vscode_property(prop: dict[str, Any]) -> dict[str, Any]:
    """A server setting's package.json property: its JSON schema, the doc as markdown."""
    out = {k: v for k, v in prop.items() if k != "description"}
    out["markdownDescription"] = prop["description"]
    return out


def package_json(text: str, declared: Schema) -> str:
    """package.json with the server's properties from ``declared``, in its order."""
    data = json.loads(text)
    props: dict[str, Any] = data["contributes"]["configuration"]["properties"]
    client = {}
    for key in (*CLIENT_FIRST, *CLIENT_LAST):
        if f"codegen.{key}" not in props:
            raise SystemExit(f"{PACKAGE_JSON}: the extension's codegen.{key} is missing")
        client[key] = props[f"codegen.{key}"]
    server = {key: vscode_property(prop) for key, prop in declared.items()}
    ordered = [
        *((k, client[k]) for k in CLIENT_FIRST),
        *server.items(),
        *((k, client[k]) for k in CLIENT_LAST),
    ]
    new = {}
    for order, (key, prop) in enumerate(ordered):
        new[f"codegen.{key}"] = {**prop, "order": order}  # an "order" already there stays put
    data["contributes"]["configuration"]["properties"] = new
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def replace_region(text: str, comment: str, body: str, where: str) -> str:
    """``text`` with the lines between its BEGIN/END GENERATED comments replaced by ``body``."""
    begin = re.search(rf"^{re.escape(comment)} BEGIN GENERATED.*\n", text, re.M)
    end = re.search(rf"^{re.escape(comment)} END GENERATED.*\n", text, re.M)
    if begin is None or end is None or end.start() < begin.end():
        raise SystemExit(f"{where}: no '{comment} BEGIN GENERATED' ... 'END GENERATED' region")
    head = f"{comment} BEGIN GENERATED {NOTE}\n"
    return text[: begin.start()] + head + body + text[end.start() :]


def settings_ts(text: str, declared: Schema) -> str:
    """settings.ts with ``SERVER_SETTING_KEYS`` listing ``declared`` in order."""
    keys = "".join(f'  "{key}",\n' for key in declared)
    body = f"export const SERVER_SETTING_KEYS = [\n{keys}] as const;\n"
    return replace_region(text, "//", body, SETTINGS_TS)


def json_type(prop: dict[str, Any]) -> str:
    """A property's JSON type; a list of types joined with ``|``."""
    kind = prop["type"]
    return "|".join(kind) if isinstance(kind, list) else kind


def config_lua(text: str, declared: Schema) -> str:
    """config.lua with ``SERVER_ENUMS`` and ``M.server_types`` from ``declared``."""
    enums = "".join(
        f"  {key} = {{ {', '.join(json.dumps(v) for v in prop['enum'])} }},\n"
        for key, prop in declared.items()
        if "enum" in prop
    )
    types = "".join(
        f'  {{ "{key}", "{LUA_TYPES[json_type(prop)]}" }},\n' for key, prop in declared.items()
    )
    body = f"local SERVER_ENUMS = {{\n{enums}}}\n\nM.server_types = {{\n{types}}}\n"
    return replace_region(text, "--", body, CONFIG_LUA)


def lua_literal(value: Any) -> str:
    """A default as Lua writes it: ``"auto"``, ``0.95``, ``false``, ``{}``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "{}" if not value else "{ " + ", ".join(map(lua_literal, value)) + " }"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {lua_literal(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    return json.dumps(value) if isinstance(value, str) else str(value)


def help_table(declared: Schema) -> str:
    """The help file's table: one row per setting (key, default, its doc wrapped)."""
    indent = " " * (4 + KEY_WIDTH + DEFAULT_WIDTH)
    rows = [f"    {'Key':<{KEY_WIDTH}}{'Default':<{DEFAULT_WIDTH}}Meaning ~\n"]
    for key, prop in declared.items():
        start = f"    {key:<{KEY_WIDTH - 1}} {lua_literal(prop['default']):<{DEFAULT_WIDTH - 1}} "
        lines = textwrap.wrap(prop["description"], HELP_WIDTH - len(indent))
        rows.append(start + lines[0] + "\n")
        rows += [indent + line + "\n" for line in lines[1:]]
    return "".join(rows)


def help_txt(text: str, declared: Schema) -> str:
    """The help file with its table of server settings from ``declared``."""
    head = HELP_HEAD.search(text)
    end = text.find("\n\n", head.end() - 1) if head else -1
    if head is None or end < 0:
        raise SystemExit(f"{HELP_TXT}: no 'Key  Default  Meaning ~' table ending in a blank line")
    return text[: head.start()] + help_table(declared) + text[end + 1 :]


MD_BEGIN = re.compile(r"^<!-- BEGIN GENERATED .*-->\n", re.M)
MD_END = "<!-- END GENERATED -->\n"


def markdown_table(declared: Schema) -> str:
    """The documents' table of server settings: key, default (JSON), meaning."""
    rows = ["| Setting | Default | Meaning |\n", "| --- | --- | --- |\n"]
    for key, prop in declared.items():
        meaning = prop["description"].replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | `{json.dumps(prop['default'])}` | {meaning} |\n")
    return "".join(rows)


def markdown(text: str, declared: Schema, where: str = "a document") -> str:
    """A Markdown file with the table between its BEGIN/END GENERATED comments rewritten."""
    begin = MD_BEGIN.search(text)
    end = text.find(MD_END, begin.end()) if begin else -1
    if begin is None or end < 0:
        raise SystemExit(f"{where}: no '<!-- BEGIN GENERATED' ... '{MD_END.strip()}' region")
    head = f"<!-- BEGIN GENERATED {NOTE} -->\n"
    return text[: begin.start()] + head + markdown_table(declared) + text[end:]


WRITERS: dict[str, Callable[[str, Schema], str]] = {
    PACKAGE_JSON: package_json,
    SETTINGS_TS: settings_ts,
    CONFIG_LUA: config_lua,
    HELP_TXT: help_txt,
    "README.md": markdown,
    "docs/server.md": markdown,
    "docs/editors.md": markdown,
}


def generate(root: Path = REPO, declared: Schema | None = None) -> dict[str, tuple[str, str]]:
    """(current text, generated text) of each file, by its path under ``root``."""
    declared = schema() if declared is None else declared
    out = {}
    for name, write in WRITERS.items():
        text = (root / name).read_text(encoding="utf-8")
        out[name] = (text, write(text, declared))
    return out


def stale(root: Path = REPO, declared: Schema | None = None) -> list[str]:
    """The files under ``root`` whose generated parts are out of date."""
    return [name for name, (old, new) in generate(root, declared).items() if old != new]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only list out-of-date files")
    args = parser.parse_args(argv)
    changed = [(name, new) for name, (old, new) in generate().items() if old != new]
    for name, new in changed:
        if args.check:
            print(f"{name}: out of date; run tools/gen_editor_settings.py", file=sys.stderr)
        else:
            (REPO / name).write_text(new, encoding="utf-8")
            print(f"wrote {name}")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
