"""Model loading over LSP: failures are shown and survived; settings changes reload.

One server goes through a missing model path, a corrupt checkpoint, a good model and a
second good model, all on one connection, reporting ``$/progress`` and ``codegen/status``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

SERVER_COMMAND = [sys.executable, "-m", "codegen_lsp", "serve"]

pytestmark = pytest.mark.asyncio(loop_scope="module")

MISSING = "/nonexistent/codegen-model"


@pytest.fixture(scope="module")
def corrupt_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    directory = tmp_path_factory.mktemp("corrupt-codegen")
    for f in tiny_checkpoint.iterdir():
        shutil.copy(f, directory / f.name)
    (directory / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    return directory


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient, lsp_tools: Any):
    lsp_client.statuses = []  # type: ignore[attr-defined]

    @lsp_client.feature("codegen/status")
    def on_status(params: Any) -> None:
        lsp_client.statuses.append(lsp_tools.as_dict(params))  # type: ignore[attr-defined]

    params = types.InitializeParams(
        capabilities=client_capabilities("neovim"),
        initialization_options={"codegen": lsp_tools.settings(MISSING)},
    )
    await lsp_client.initialize_session(params)
    yield
    await lsp_client.shutdown_session()


def configure(client: LanguageClient, settings: dict[str, Any]) -> None:
    client.workspace_did_change_configuration(
        types.DidChangeConfigurationParams({"codegen": settings})
    )


async def wait_for_message(client: LanguageClient, text: str) -> types.ShowMessageParams:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for message in client.messages:
            if text in message.message:
                return message
        await asyncio.sleep(0.05)
    raise AssertionError(f"no message with {text!r}: {[m.message for m in client.messages]}")


async def complete(client: LanguageClient, uri: str, line: int, character: int):
    params = types.CompletionParams(
        types.TextDocumentIdentifier(uri), types.Position(line, character)
    )
    return await client.text_document_completion_async(params)


async def test_missing_model_is_reported_and_requests_answer_empty(
    client: LanguageClient, lsp_tools: Any
) -> None:
    status = await lsp_tools.wait_for_state(client, ("error",))
    assert MISSING in status["message"]
    message = await wait_for_message(client, MISSING)
    assert message.type == types.MessageType.Error
    uri = "file:///work/no_model.py"
    item = types.TextDocumentItem(uri=uri, language_id="python", version=1, text="x = valu")
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))
    assert not (await complete(client, uri, 0, 8)).items
    hover = types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(0, 0))
    assert await client.text_document_hover_async(hover) is None


async def test_corrupt_checkpoint_is_reported(
    client: LanguageClient, lsp_tools: Any, corrupt_checkpoint: Path
) -> None:
    configure(client, lsp_tools.settings(corrupt_checkpoint))
    message = await wait_for_message(client, str(corrupt_checkpoint))
    assert message.type == types.MessageType.Error
    assert "corrupt" in message.message or "truncated" in message.message
    assert (await lsp_tools.wait_for_state(client, ("error",)))["state"] == "error"


async def test_good_model_loads_on_the_same_connection(
    client: LanguageClient, lsp_tools: Any, tiny_checkpoint: Path, steady_checkpoint: Path
) -> None:
    configure(client, lsp_tools.settings(tiny_checkpoint))
    status = await lsp_tools.wait_for_state(client)
    assert status["model"] == str(tiny_checkpoint)
    uri = "file:///work/no_model.py"
    random_text = (await complete(client, uri, 0, 8)).items
    configure(client, lsp_tools.settings(steady_checkpoint))
    status = await lsp_tools.wait_for_state(client)
    assert status["model"] == str(steady_checkpoint)
    steady = (await complete(client, uri, 0, 8)).items
    assert steady and steady[0].text_edit.new_text.endswith(" x x x")
    assert not random_text or random_text[0].text_edit.new_text != steady[0].text_edit.new_text
    # every load reported progress under its own token, begun and ended
    assert len(client.progress_reports) == 4
    for reports in client.progress_reports.values():
        assert reports[0].kind == "begin" and reports[-1].kind == "end"
    states = [s["state"] for s in client.statuses]  # type: ignore[attr-defined]
    assert states.count("error") == 2 and states[-1] in ("ready", "generating")
    assert (await lsp_tools.status(client))["documents"] == 1
