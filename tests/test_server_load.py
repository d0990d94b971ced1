"""Model loading over LSP: failures are shown and survived; settings changes reload.

One server goes through a missing model path, a corrupt checkpoint, a good model and a
second good model, all on one connection, reporting ``$/progress`` and ``codegen/status``.
Each test sets the model it needs and counts only the loads and states that it caused, so
the tests pass in any order.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from support import (
    SERVER_COMMAND,
    as_dict,
    codegen_settings,
    complete,
    configure,
    open_doc,
    server_status,
    wait_for_message,
    wait_for_state,
)

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
async def client(lsp_client: LanguageClient):
    lsp_client.statuses = []  # type: ignore[attr-defined]

    @lsp_client.feature("codegen/status")
    def on_status(params: Any) -> None:
        lsp_client.statuses.append(as_dict(params))  # type: ignore[attr-defined]

    params = types.InitializeParams(
        capabilities=client_capabilities("neovim"),
        initialization_options=codegen_settings(MISSING),
    )
    await lsp_client.initialize_session(params)
    await wait_for_state(lsp_client, ("error",))  # the first load is over before any test
    yield
    await lsp_client.shutdown_session()


class Since:
    """What the client saw from here on: new progress tokens, codegen/status states."""

    def __init__(self, client: LanguageClient) -> None:
        self.client = client
        self.tokens = set(client.progress_reports)
        self.statuses = len(client.statuses)  # type: ignore[attr-defined]

    def progress(self) -> list[list[Any]]:
        """The reports of each progress token begun since."""
        reports = self.client.progress_reports
        return [reports[token] for token in reports if token not in self.tokens]

    def states(self) -> list[str]:
        return [s["state"] for s in self.client.statuses[self.statuses :]]  # type: ignore[attr-defined]


def assert_loads_reported(since: Since, loads: int) -> None:
    """``loads`` new loads, each reported under its own progress token, begun and ended."""
    progress = since.progress()
    assert len(progress) == loads, progress
    for reports in progress:
        assert reports[0].kind == "begin" and reports[-1].kind == "end", reports


async def test_missing_model_is_reported_and_requests_answer_empty(
    client: LanguageClient,
) -> None:
    configure(client, MISSING)  # the initial setting; a reload after other tests
    status = await wait_for_state(client, ("error",), model=MISSING)
    assert MISSING in status["message"]
    message = await wait_for_message(client, MISSING)
    assert message.type == types.MessageType.Error
    uri = "file:///work/no_model.py"
    open_doc(client, uri, "x = valu")
    assert not (await complete(client, uri, 0, 8)).items
    hover = types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(0, 0))
    assert await client.text_document_hover_async(hover) is None


async def test_corrupt_checkpoint_is_reported(
    client: LanguageClient, corrupt_checkpoint: Path
) -> None:
    since = Since(client)
    configure(client, corrupt_checkpoint)
    message = await wait_for_message(client, str(corrupt_checkpoint))
    assert message.type == types.MessageType.Error
    assert "corrupt" in message.message or "truncated" in message.message
    await wait_for_state(client, ("error",), model=corrupt_checkpoint)
    assert_loads_reported(since, 1)
    assert since.states()[-1] == "error" and "ready" not in since.states()


async def test_good_model_loads_on_the_same_connection(
    client: LanguageClient, tiny_checkpoint: Path, steady_checkpoint: Path
) -> None:
    since = Since(client)
    documents = (await server_status(client))["documents"]
    uri = "file:///work/good_model.py"
    open_doc(client, uri, "x = valu")
    configure(client, tiny_checkpoint)
    await wait_for_state(client, model=tiny_checkpoint)
    random_text = (await complete(client, uri, 0, 8)).items
    configure(client, steady_checkpoint)
    await wait_for_state(client, model=steady_checkpoint)
    steady = (await complete(client, uri, 0, 8)).items
    assert steady and steady[0].text_edit.new_text.endswith(" 0 0 0")
    assert not random_text or random_text[0].text_edit.new_text != steady[0].text_edit.new_text
    assert_loads_reported(since, 2)
    states = since.states()
    assert "error" not in states and states.count("loading") >= 2, states
    assert states[-1] in ("ready", "generating"), states
    assert (await server_status(client))["documents"] == documents + 1
