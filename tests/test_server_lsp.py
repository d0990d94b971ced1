"""End to end over LSP: the real server as a subprocess, seen by Neovim and VS Code.

The client replays the capabilities pytest-lsp recorded from Neovim 0.11 (which offers
``utf-8`` first, so positions are in bytes) and VS Code 1.65 (``utf-16``). The model is the
tiny ``steady`` checkpoint, whose greedy output is ``" 0 0 0 ..."``.
"""

from __future__ import annotations

import ast
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from support import (
    SERVER_COMMAND,
    as_dict,
    change,
    codegen_settings,
    complete,
    configure,
    inline,
    open_doc,
    server_status,
    wait_for_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

UNICODE_LINE = 's = "😀 名前"; valu'


@pytest_lsp.fixture(
    scope="module",
    params=["neovim", "visual_studio_code"],
    config=ClientServerConfig(server_command=SERVER_COMMAND),
)
async def client(lsp_client: LanguageClient, request: Any, steady_checkpoint: Any):
    lsp_client.applied_edits = []  # type: ignore[attr-defined]
    lsp_client.statuses = []  # type: ignore[attr-defined]

    @lsp_client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        lsp_client.applied_edits.append(params)  # type: ignore[attr-defined]
        return types.ApplyWorkspaceEditResult(applied=True)

    @lsp_client.feature("codegen/status")
    def on_status(params: Any) -> None:
        lsp_client.statuses.append(as_dict(params))  # type: ignore[attr-defined]

    params = types.InitializeParams(
        capabilities=client_capabilities(request.param),
        initialization_options=codegen_settings(steady_checkpoint),
    )
    lsp_client.init_result = await lsp_client.initialize_session(params)  # type: ignore[attr-defined]
    await wait_for_state(lsp_client)
    yield
    await lsp_client.shutdown_session()


def encoding_of(client: LanguageClient) -> str:
    return str(client.init_result.capabilities.position_encoding)  # type: ignore[attr-defined]


def units(text: str, encoding: str) -> int:
    """Length of ``text`` in the code units of ``encoding`` (computed independently)."""
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    if encoding == "utf-16":
        return len(text.encode("utf-16-le")) // 2
    return len(text)


AUTOMATIC = types.InlineCompletionTriggerKind.Automatic  # as editors ask while typing


async def test_capabilities(client: LanguageClient) -> None:
    caps = client.init_result.capabilities  # type: ignore[attr-defined]
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.completion_provider is not None
    assert caps.inline_completion_provider
    assert caps.hover_provider and caps.code_action_provider
    assert "codegen.generateFunction" in caps.execute_command_provider.commands
    expected = "utf-8" if client.capabilities.general.position_encodings else "utf-16"
    assert encoding_of(client) == expected


async def test_load_reported_progress_and_status(client: LanguageClient) -> None:
    states = [s["state"] for s in client.statuses]  # type: ignore[attr-defined]
    assert "loading" in states and "ready" in states
    (reports,) = client.progress_reports.values()  # one load, one token
    kinds = [value.kind for value in reports]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds


async def test_completion_range_in_non_ascii_line(client: LanguageClient) -> None:
    uri = "file:///work/unicode_completion.py"
    open_doc(client, uri, "import os\n" + UNICODE_LINE)
    enc = encoding_of(client)
    end = units(UNICODE_LINE, enc)
    result = await complete(client, uri, 1, end)
    assert result.is_incomplete
    assert result.items, "the steady model always suggests something"
    item = result.items[0]
    assert item.text_edit.range == types.Range(
        types.Position(1, units(UNICODE_LINE[: -len("valu")], enc)), types.Position(1, end)
    )
    assert item.text_edit.new_text.startswith("valu") and item.text_edit.new_text.endswith(" 0")
    assert item.insert_text_format == types.InsertTextFormat.PlainText


async def test_inline_completion_after_incremental_change(client: LanguageClient) -> None:
    uri = "file:///work/unicode_inline.py"
    open_doc(client, uri, "import os\n" + UNICODE_LINE)
    enc = encoding_of(client)
    change(client, uri, 2, (1, 0), (1, 0), "🎉")  # every later column on the line moves
    line = "🎉" + UNICODE_LINE
    result = await inline(client, uri, 1, units(line, enc), trigger=AUTOMATIC)
    assert result.items
    item = result.items[0]
    assert item.range == types.Range(
        types.Position(1, units(line[: -len("valu")], enc)), types.Position(1, units(line, enc))
    )
    assert item.insert_text.startswith("valu")


def command_of(action: Any) -> dict[str, Any]:
    """The command of a code action. lsprotocol's client-side converter reads any object
    with a ``command`` key as a Command and stringifies the nested command; undo that."""
    if isinstance(action, types.CodeAction):
        return {"command": action.command.command, "arguments": action.command.arguments}
    return ast.literal_eval(action.command)


async def test_hover_and_command_insert_a_body(client: LanguageClient) -> None:
    uri = "file:///work/stub.py"
    open_doc(client, uri, "def add(a, b):\n    pass\n\nx = 1\n")
    doc = types.TextDocumentIdentifier(uri)
    hover = await client.text_document_hover_async(types.HoverParams(doc, types.Position(0, 5)))
    assert hover is not None
    assert "```python\ndef add(a, b):\n    " in hover.contents.value
    here = types.Range(types.Position(0, 5), types.Position(0, 5))
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(doc, here, types.CodeActionContext(diagnostics=[]))
    )
    command = command_of(actions[0])
    assert command["command"] == "codegen.generateFunction"
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command["command"], arguments=command["arguments"])
    )
    assert as_dict(result)["applied"] is True
    edit = client.applied_edits[-1].edit.changes[uri][0]  # type: ignore[attr-defined]
    assert edit.range == types.Range(types.Position(1, 0), types.Position(2, 0))
    assert edit.new_text.startswith("    ") and " 0 0" in edit.new_text
    # no code action where there is nothing to generate
    other = types.Range(types.Position(3, 0), types.Position(3, 0))
    assert not await client.text_document_code_action_async(
        types.CodeActionParams(doc, other, types.CodeActionContext(diagnostics=[]))
    )


async def test_settings_change_takes_effect(client: LanguageClient, steady_checkpoint: Any) -> None:
    uri = "file:///work/settings.py"
    open_doc(client, uri, "value = 1\nother = valu")
    before = await complete(client, uri, 1, len("other = valu"))
    assert before.items[0].text_edit.new_text.count(" 0") > 20
    configure(client, steady_checkpoint, maxNewTokens=3)
    after = await complete(client, uri, 1, len("other = valu"))
    assert 0 < after.items[0].text_edit.new_text.count(" 0") <= 3
    configure(client, steady_checkpoint, languages={"python": False})
    assert not (await complete(client, uri, 1, len("other = valu"))).items
    configure(client, steady_checkpoint)
    assert (await complete(client, uri, 1, len("other = valu"))).items


async def test_status_request_and_command(client: LanguageClient) -> None:
    runs = (await server_status(client))["generateRuns"]
    uri = "file:///work/status.py"
    open_doc(client, uri, "total = valu")
    assert (await complete(client, uri, 0, len("total = valu"))).items
    status = await server_status(client)
    assert status["state"] == "ready" and status["generateRuns"] == runs + 1
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="codegen.status")
    )
    assert as_dict(result)["state"] == "ready"


async def test_type_ahead_answers_without_the_model(client: LanguageClient) -> None:
    uri = "file:///work/typeahead.py"
    open_doc(client, uri, "value = 1\nother = valu")
    enc = encoding_of(client)
    first = await complete(client, uri, 1, len("other = valu"))
    suggestion = first.items[0].text_edit.new_text[len("valu") :]
    runs = (await server_status(client))["generateRuns"]
    typed = suggestion[:2]  # the user types what the suggestion says
    at = (1, len("other = valu"))
    change(client, uri, 2, at, at, typed)
    line = "other = valu" + typed
    second = await complete(client, uri, 1, units(line, enc))
    assert (await server_status(client))["generateRuns"] == runs
    edit = second.items[0].text_edit
    assert edit.range.end == types.Position(1, units(line, enc))
    assert edit.new_text.endswith(suggestion[2:])
