"""Definitions from the client's language servers, over LSP with the real server.

A raw client announces ``experimental.codegenDefinitions``, opens a file that calls a
function defined in another module, and plays the editor: it reads the server's
``codegen/resolveDefinitions`` and answers ``codegen/didResolveDefinitions``. Through
``codegen/lastPrompt`` the tests see what the prompt holds: the definition's head after an
answer, the same block while the user types on, nothing (and no wait) from a client that never
answers, and odd or huge answers left out without harm. The shipped model (a real checkpoint)
serves; the model's text is not what is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from raw_lsp import RawServer
from support import cpu_settings, default_model_dir, wait_until

APP = "file:///work/proj/app.py"
LIB = "file:///work/proj/lib.py"
LIB_TEXT = '''"""A library."""


class Page:
    """One page of results."""

    number: int
    items: list

    def next(self) -> "Page":
        return Page()


def fetch_page(url: str, retries: int = 3, *, timeout: float = 10.0) -> Page:
    """Fetch one page of ``url``, retrying ``retries`` times."""
    return Page()
'''
APP_LINES = ["from lib import fetch_page, Page\n", "\n", "\n", "def main(url):\n"]


@pytest.fixture(scope="module")
def model() -> Path:
    found = default_model_dir()
    if found is None:
        pytest.skip("the shipped default model is not there")
    return found


def start(tmp_path: Path, model: Path, capable: bool = True, **extra: Any) -> RawServer:
    server = RawServer(tmp_path / "server.log")
    capabilities: dict[str, Any] = {"experimental": {"codegenDefinitions": True}} if capable else {}
    settings = {"codegen": cpu_settings(model, maxNewTokens=4, contextFiles=0, **extra)}
    params = {"processId": None, "rootUri": "file:///work/proj", "capabilities": capabilities}
    answer = server.call("initialize", {**params, "initializationOptions": settings}, timeout=60)
    assert "result" in answer, answer
    server.notify("initialized", {})
    server.wait_state("ready", timeout=120)
    return server


def typed(server: RawServer, version: int, text: str) -> tuple[int, int]:
    """Replace the cursor line (line 4) by ``text``; the cursor after it."""
    change = {
        "range": {"start": {"line": 4, "character": 0}, "end": {"line": 4, "character": 999}},
        "text": text,
    }
    server.notify(
        "textDocument/didChange",
        {"textDocument": {"uri": APP, "version": version}, "contentChanges": [change]},
    )
    return 4, len(text)


def asked(server: RawServer, since: int = 0) -> list[dict[str, Any]]:
    return [
        m["params"] for m in server.seen[since:] if m.get("method") == "codegen/resolveDefinitions"
    ]


def part(prompt: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in prompt["parts"] if p["name"] == name)


def last_prompt(server: RawServer) -> dict[str, Any]:
    return server.call("codegen/lastPrompt", {"textDocument": {"uri": APP}})["result"]


def answer(server: RawServer, params: dict[str, Any], text: str = LIB_TEXT, uri: str = LIB) -> None:
    """Answer as an editor would: fetch_page and Page in lib.py, nothing for the rest."""
    lines = {"fetch_page": 13, "Page": 3}
    definitions = []
    for entry in params["names"]:
        line = lines.get(entry["name"])
        if line is None:
            definitions.append({"name": entry["name"]})
            continue
        body = "".join(text.splitlines(keepends=True)[line:])
        where = {"start": {"line": line, "character": 4}, "end": {"line": line, "character": 14}}
        definitions.append({"name": entry["name"], "uri": uri, "range": where, "text": body})
    server.notify(
        "codegen/didResolveDefinitions",
        {"textDocument": params["textDocument"], "definitions": definitions},
    )


def test_the_prompt_holds_the_signature_and_keeps_the_block_while_typing(
    tmp_path: Path, model: Path
) -> None:
    server = start(tmp_path, model)
    try:
        server.open(APP, "".join(APP_LINES) + "    ")
        assert server.call("codegen/lastPrompt")["result"] is None  # no request yet
        line, col = typed(server, 2, "    page = fetch_page(url, ")
        server.inline(APP, line, col)
        wait_until(lambda: asked(server) or server.status() and False, 10, "resolveDefinitions")
        request = asked(server)[0]
        names = [n["name"] for n in request["names"]]
        assert names[0] == "fetch_page" and "url" not in names and "page" not in names
        assert request["names"][0]["position"] == {"line": 4, "character": 11}
        assert request["textDocument"] == {"uri": APP, "version": 2}
        answer(server, request)
        before = last_prompt(server)
        assert part(before, "definitions")["text"] == ""  # that keystroke did not wait

        line, col = typed(server, 3, "    page = fetch_page(url, r")
        server.inline(APP, line, col)
        prompt = last_prompt(server)
        block = part(prompt, "definitions")
        assert "# Definition of fetch_page from lib.py:\n" in block["text"]
        signature = "def fetch_page(url: str, retries: int = 3, *, timeout: float = 10.0) -> Page:"
        assert f"# {signature}" in block["text"]
        assert "Fetch one page" in block["text"] and "return Page()" not in block["text"]
        assert block["tokens"] > 20
        assert part(prompt, "window")["text"].endswith("fetch_page(url, r")
        assert prompt["promptTokens"] >= sum(p["tokens"] for p in prompt["parts"])

        for version, text in enumerate(
            ["    page = fetch_page(url, re", "    page = fetch_page(url, ret"], 4
        ):
            server.inline(APP, *typed(server, version, text))
            assert part(last_prompt(server), "definitions")["text"] == block["text"]
        status = server.status()
        assert status["definitionsReceived"] >= 1 and status["contextMsP50"] >= 0
    finally:
        server.close()


def test_a_client_that_never_answers_gets_suggestions_without_the_block(
    tmp_path: Path, model: Path
) -> None:
    server = start(tmp_path, model)
    try:
        server.open(APP, "".join(APP_LINES) + "    ")
        for version, text in enumerate(["    page = fetch_page(", "    page = fetch_page(u"], 2):
            reply = server.inline(APP, *typed(server, version, text), timeout=30)
            assert "result" in reply, reply
            assert part(last_prompt(server), "definitions")["text"] == ""
        status = server.status()
        assert status["definitionsAsked"] >= 1 and status["definitionsReceived"] == 0
        # one name is asked once per version, and not again within the refresh interval
        names = [n["name"] for p in asked(server) for n in p["names"]]
        assert names.count("fetch_page") == 1
    finally:
        server.close()


def test_odd_and_huge_answers_are_left_out_and_the_server_stays_up(
    tmp_path: Path, model: Path
) -> None:
    server = start(tmp_path, model)
    try:
        server.open(APP, "".join(APP_LINES) + "    ")
        server.inline(APP, *typed(server, 2, "    page = fetch_page(url, "))
        wait_until(lambda: asked(server) or server.status() and False, 10, "resolveDefinitions")
        request = asked(server)[0]
        doc = request["textDocument"]
        odd: list[Any] = [
            None,
            3,
            "x",
            [],
            {"definitions": "no"},
            {"textDocument": doc},
            {"textDocument": {"uri": 5}, "definitions": []},
            {
                "textDocument": doc,
                "definitions": [
                    None,
                    1,
                    {"name": 3},
                    {
                        "name": "never_asked",
                        "uri": LIB,
                        "range": {"start": {"line": 0}},
                        "text": "def x(): pass",
                    },
                ],
            },
            {
                "textDocument": doc,
                "definitions": [
                    {
                        "name": "fetch_page",
                        "uri": LIB,
                        "range": {"start": {"line": -1}},
                        "text": "def f(): pass",
                    }
                ],
            },
            {
                "textDocument": doc,
                "definitions": [{"name": "fetch_page", "uri": LIB, "range": "x", "text": ["def"]}],
            },
        ]
        for params in odd:
            server.notify("codegen/didResolveDefinitions", params)
        # huge: a 2 MB one-line definition text and 10,000 entries
        huge = "def fetch_page(" + "a, " * 700_000 + "):\n    pass\n"
        where = {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}}
        entries = [{"name": "fetch_page", "uri": LIB, "range": where, "text": huge}]
        entries += [
            {"name": f"n{i}", "uri": LIB, "range": where, "text": "x = 1"} for i in range(10_000)
        ]
        server.notify(
            "codegen/didResolveDefinitions", {"textDocument": doc, "definitions": entries}
        )
        reply = server.inline(APP, *typed(server, 3, "    page = fetch_page(url, r"))
        assert "result" in reply, reply
        text = part(last_prompt(server), "definitions")["text"]
        assert len(text) < 2_000  # the huge head was cut to its lines and the budget
        status = server.status()
        assert status["definitionsRejected"] >= 3
        assert server.proc.poll() is None
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["workspace", "all"])
def test_library_definitions_are_shown_only_with_all(
    tmp_path: Path, model: Path, mode: str
) -> None:
    server = start(tmp_path, model, definitions=mode)
    try:
        server.open(APP, "".join(APP_LINES) + "    ")
        server.inline(APP, *typed(server, 2, "    page = fetch_page(url, "))
        wait_until(lambda: asked(server) or server.status() and False, 10, "resolveDefinitions")
        answer(server, asked(server)[0], uri="file:///usr/lib/python3/site-packages/lib.py")
        server.inline(APP, *typed(server, 3, "    page = fetch_page(url, r"))
        block = part(last_prompt(server), "definitions")["text"]
        assert ("def fetch_page(" in block) == (mode == "all"), block
    finally:
        server.close()
