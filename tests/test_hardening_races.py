"""A document that changes while its suggestion or its function body generates (issue 21).

Through a real ``codegen-lsp serve`` over LSP, on a model that writes for as long as it may
(``timeLimitMs`` ends each generation): each request is sent, the test waits until the server
says it is generating, then edits, shrinks, closes or closes and reopens the document (at
version 1 again, with another function at the same line). Every answer must be a result
(never -32603), and it must not carry text made for the old document: inline and completion
items are empty, a hover is empty, ``codegen.generateFunction`` applies nothing. Bodies are
cached by what the prompt says, not by uri, version and line: a reopened document with
another function gets a body generated for it (a model run), and its own body again from
the cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from raw_lsp import RawServer, inline_params
from support import codegen_settings, wait_until

URI = "file:///races/doc.py"
ABOVE = "".join(f"import mod_{i}\n" for i in range(30))
LINE = 30  # the cursor's line, and the line of the function
TEXT = ABOVE + "value = valu"
FIRST = ABOVE + "def first(a, b):\n    pass\n"
SECOND = ABOVE + "def second(x):\n    pass\n"
LONG = {"maxNewTokens": 2000, "timeLimitMs": 1200}  # each generation runs 1.2 s
SHORT = {"maxNewTokens": 16, "timeLimitMs": 0}


def configure(server: Any, settings: dict[str, Any]) -> None:
    """New completion settings (the model stays loaded)."""
    server.configure(codegen_settings(server.model, **settings))
    server.wait_state("ready")


@pytest.fixture(scope="module")
def server(long_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = RawServer(tmp_path_factory.mktemp("races") / "server.log")
    srv.model = long_checkpoint  # type: ignore[attr-defined]
    srv.initialize(codegen_settings(long_checkpoint, **LONG))
    srv.open("file:///races/other.py", "def helper(value):\n    return value\n")  # a neighbour
    yield srv
    assert srv.close() == 0
    log = srv.log()
    assert "Traceback" not in log and "IndexError" not in log, log


# --- what the test does to the document meanwhile ---------------------------------------
def change(server: Any, first: int, last: int, text: str) -> None:
    """Replace lines ``first`` to ``last`` (exclusive) with ``text`` (incremental change)."""
    span = {"start": {"line": first, "character": 0}, "end": {"line": last, "character": 0}}
    params = {"textDocument": {"uri": URI, "version": 2},
              "contentChanges": [{"range": span, "text": text}]}  # fmt: skip
    server.notify("textDocument/didChange", params)


def shrink(server: Any) -> None:
    """Delete every line above the cursor's: the cursor's line is past the end now."""
    change(server, 0, LINE, "")


def edit_above(server: Any) -> None:
    """Insert lines above the cursor: the document grows, the cursor's line moves."""
    change(server, 0, 0, "import a\nimport b\n")


def close(server: Any) -> None:
    server.notify("textDocument/didClose", {"textDocument": {"uri": URI}})


def reopen(text: str) -> Callable[[Any], None]:
    """Close, and open again at version 1 with ``text``."""

    def action(server: Any) -> None:
        close(server)
        server.open(URI, text, version=1)

    return action


def while_generating(server: Any, method: str, params: Any, action: Callable[[Any], None]) -> Any:
    """Send a request, wait until its generation runs, do ``action``; the answer."""
    msg_id = server.request(method, params)
    wait_until(lambda: server.status()["state"] == "generating", 60, "a generation running")
    action(server)
    return server.wait_response(msg_id, 60)


def answered(answer: dict[str, Any]) -> Any:
    assert "error" not in answer, answer
    assert "result" in answer, answer
    return answer["result"]


def runs(server: Any) -> int:
    return server.status()["generateRuns"]


def hover_params(line: int = LINE, character: int = 5) -> dict[str, Any]:
    return {"textDocument": {"uri": URI}, "position": {"line": line, "character": character}}


# --- suggestions ------------------------------------------------------------------------
ACTIONS = {
    "shrink": shrink,
    "edit above": edit_above,
    "close": close,
    "reopen": reopen("x = 1\n"),
}


@pytest.mark.parametrize("kind", ["inline", "completion"])
@pytest.mark.parametrize("action", list(ACTIONS))
def test_a_changed_document_answers_empty_not_an_error(server: Any, kind: str, action: str) -> None:
    configure(server, LONG)
    server.open(URI, TEXT)
    method = "textDocument/inlineCompletion" if kind == "inline" else "textDocument/completion"
    params = inline_params(URI, LINE, len("value = valu"))
    if kind == "completion":
        params.pop("context")
    result = answered(while_generating(server, method, params, ACTIONS[action]))
    assert result["items"] == [], result  # text made for a document that is no longer there
    # the server is fine afterwards: a request on the document as it is now gets items
    server.open(URI, TEXT, version=5)
    assert server.inline(URI, LINE, len("value = valu"))["result"]["items"]
    close(server)


# --- function bodies --------------------------------------------------------------------
def apply_edits(server: Any, since: int) -> list[dict[str, Any]]:
    """workspace/applyEdit requests the server sent after message ``since`` (each answered)."""
    server.status()  # reads what came meanwhile
    asked = [m for m in server.seen[since:] if m.get("method") == "workspace/applyEdit"]
    return asked


def execute(server: Any, line: int = LINE) -> int:
    args = [URI, {"line": line, "character": 5}]
    return server.request(
        "workspace/executeCommand", {"command": "codegen.generateFunction", "arguments": args}
    )


def test_hover_and_generate_function_while_the_document_changes(server: Any) -> None:
    configure(server, LONG)
    server.open(URI, FIRST)
    # the document shrinks under a hover: no body, no error
    assert answered(while_generating(server, "textDocument/hover", hover_params(), shrink)) is None
    actions = server.call(
        "textDocument/codeAction",
        {"textDocument": {"uri": URI}, "context": {"diagnostics": []},
         "range": {"start": {"line": LINE, "character": 5}, "end": {"line": LINE, "character": 5}}},
    )  # fmt: skip
    assert answered(actions) is None  # the function is gone
    # closed and reopened (version 1 again) with another function at the same line
    server.open(URI, FIRST, version=1)
    assert answered(while_generating(server, "textDocument/hover", hover_params(),
                                     reopen(SECOND))) is None  # fmt: skip
    # generateFunction under the same race applies nothing
    since = len(server.seen)
    command = execute(server)
    wait_until(lambda: server.status()["state"] == "generating", 60, "a generation running")
    reopen(FIRST)(server)
    result = answered(server.wait_response(command, 60))
    assert result["applied"] is False and "changed" in result["reason"], result
    assert apply_edits(server, since) == []
    close(server)


def test_a_reopened_document_gets_the_body_of_its_own_function(server: Any) -> None:
    configure(server, SHORT)
    server.open(URI, FIRST)
    shown = answered(server.call("textDocument/hover", hover_params(), timeout=60))
    assert shown is not None and "def first(a, b):" in shown["contents"]["value"]
    close(server)
    server.open(URI, SECOND, version=1)  # the same uri, version and line: another function
    before = runs(server)
    shown = answered(server.call("textDocument/hover", hover_params(), timeout=60))
    assert shown is not None and "def second(x):" in shown["contents"]["value"]
    assert "first" not in shown["contents"]["value"]
    assert runs(server) == before + 1  # generated for this function, not the cached one
    # the command inserts that body (the same prompt: from the cache, no model run)
    since = len(server.seen)
    command = execute(server)
    asked = wait_until(lambda: apply_edits(server, since), 60, "a workspace/applyEdit request")
    server.send({"id": asked[0]["id"], "result": {"applied": True}})
    assert answered(server.wait_response(command, 60))["applied"] is True
    (edit,) = asked[0]["params"]["edit"]["changes"][URI]
    assert edit["range"]["start"]["line"] == LINE + 1  # the `pass` line of `second`
    body = shown["contents"]["value"].split("def second(x):\n", 1)[1].split("\n```", 1)[0]
    assert edit["newText"].strip() == body.strip()
    assert runs(server) == before + 1
    close(server)
