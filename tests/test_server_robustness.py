"""Bad input and load over LSP: the server answers clearly and stays up.

Unknown documents, positions past the end, a 5 MB document, invalid settings, a storm of
500 inline requests (only the newest reaches the model) and ``$/cancelRequest`` in the
middle of a long generation (the answer comes at once and the worker is free again).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

SERVER_COMMAND = [sys.executable, "-m", "codegen_lsp", "serve"]

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, lsp_tools: Any, long_checkpoint: Any):
    params = types.InitializeParams(
        capabilities=client_capabilities("visual_studio_code"),
        initialization_options={"codegen": lsp_tools.settings(long_checkpoint, maxNewTokens=8)},
    )
    await lsp_client.initialize_session(params)
    await lsp_tools.wait_for_state(lsp_client)
    yield
    await lsp_client.shutdown_session()


def configure(client: LanguageClient, settings: dict[str, Any]) -> None:
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams({"codegen": settings})
    )


def open_doc(client: LanguageClient, uri: str, text: str) -> None:
    item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text=text)
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))


def inline_params(uri: str, line: int, character: int) -> types.InlineCompletionParams:
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Invoked),
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(line, character),
    )


async def complete(client: LanguageClient, uri: str, line: int, character: int):
    params = types.CompletionParams(
        types.TextDocumentIdentifier(uri), types.Position(line, character)
    )
    return await client.text_document_completion_async(params)


async def test_unknown_document(client: LanguageClient, lsp_tools: Any) -> None:
    uri = "file:///never/opened.py"
    assert not (await complete(client, uri, 0, 0)).items
    assert not (await client.text_document_inline_completion_async(inline_params(uri, 0, 0))).items
    doc = types.TextDocumentIdentifier(uri)
    assert (
        await client.text_document_hover_async(types.HoverParams(doc, types.Position(0, 0))) is None
    )
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(
            "codegen.generateFunction",
            arguments=[{"textDocument": {"uri": uri}, "position": {"line": 0, "character": 0}}],
        )
    )
    assert (
        lsp_tools.as_dict(result)["applied"] is False
        and "unknown document" in lsp_tools.as_dict(result)["reason"]
    )
    with pytest.raises(JsonRpcInvalidParams, match="codegen.generateFunction"):
        await client.workspace_execute_command_async(
            types.ExecuteCommandParams("codegen.generateFunction", arguments=["nonsense"])
        )
    assert (await lsp_tools.status(client))["state"] == "ready"


async def test_positions_past_the_end(client: LanguageClient) -> None:
    uri = "file:///work/short.py"
    open_doc(client, uri, "x = valu\n")
    result = await complete(client, uri, 0, 999)  # past the end of the line: end of line
    assert result.items
    assert result.items[0].text_edit.range.end == types.Position(0, len("x = valu"))
    assert not (await complete(client, uri, 5, 0)).items  # past the end of the file


async def test_five_megabyte_document(client: LanguageClient) -> None:
    uri = "file:///work/huge.py"
    line = "value_{0} = compute({0}, 'some text to make the line longer')\n"
    text = "".join(line.format(i) for i in range(90_000))
    assert len(text) > 5_000_000
    open_doc(client, uri, text + "result = valu")
    last = text.count("\n")
    start = time.monotonic()
    result = await complete(client, uri, last, len("result = valu"))
    assert result.items and time.monotonic() - start < 20
    end = types.Position(last, len("result = valu"))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            [types.TextDocumentContentChangePartial(range=types.Range(end, end), text="e")],
        )
    )
    start = time.monotonic()
    result = await complete(client, uri, last, len("result = value"))
    assert result.items and time.monotonic() - start < 5
    assert result.items[0].text_edit.new_text.startswith("value")


async def test_invalid_settings_are_reported_and_defaulted(
    client: LanguageClient, lsp_tools: Any, long_checkpoint: Any
) -> None:
    configure(
        client,
        lsp_tools.settings(long_checkpoint, temperature="hot", candidates=99, maxNewTokens=8),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(client.messages) < 2:
        await asyncio.sleep(0.05)
    texts = [m.message for m in client.messages]
    assert any("codegen.temperature" in t for t in texts)
    assert any("codegen.candidates" in t for t in texts)
    uri = "file:///work/after_bad_settings.py"
    open_doc(client, uri, "x = valu")
    assert (await complete(client, uri, 0, len("x = valu"))).items
    configure(client, lsp_tools.settings(long_checkpoint, maxNewTokens=8))


async def test_storm_of_inline_requests(client: LanguageClient, lsp_tools: Any) -> None:
    uri = "file:///work/storm.py"
    open_doc(client, uri, "import os\nx = valu")
    runs_before = (await lsp_tools.status(client))["generateRuns"]
    requests = [
        client.text_document_inline_completion_async(inline_params(uri, 1, len("x = valu")))
        for _ in range(500)
    ]
    results = await asyncio.gather(*requests, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)]
    answered = [r for r in results if r.items]
    assert results[-1].items, "the newest request is computed"
    runs = (await lsp_tools.status(client))["generateRuns"] - runs_before
    assert 1 <= runs <= 10, f"{runs} model runs for one storm"
    assert len(answered) <= 10


async def test_cancel_stops_generation_promptly(
    client: LanguageClient, lsp_tools: Any, long_checkpoint: Any
) -> None:
    configure(client, lsp_tools.settings(long_checkpoint, maxNewTokens=2000))
    uri = "file:///work/slow.py"
    open_doc(client, uri, "x = valu")
    slow = asyncio.ensure_future(
        client.protocol.send_request_async(
            types.TEXT_DOCUMENT_INLINE_COMPLETION,
            inline_params(uri, 0, len("x = valu")),
            msg_id="slow-request",
        )
    )
    await asyncio.sleep(0.5)
    start = time.monotonic()
    status = await lsp_tools.status(client)  # the event loop is not blocked by the model
    assert time.monotonic() - start < 1.0 and status["state"] == "generating"
    client.cancel_request(types.CancelParams(id="slow-request"))
    start = time.monotonic()
    with pytest.raises(JsonRpcException):  # answered as cancelled (-32800)
        await asyncio.wait_for(slow, 10)
    assert time.monotonic() - start < 1.0
    configure(client, lsp_tools.settings(long_checkpoint, maxNewTokens=8))
    other = "file:///work/after_cancel.py"
    open_doc(client, other, "y = valu")
    start = time.monotonic()
    assert (await complete(client, other, 0, len("y = valu"))).items
    assert time.monotonic() - start < 3.0, "the worker was still busy with the cancelled job"
