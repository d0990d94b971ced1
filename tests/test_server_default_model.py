"""The server with the shipped default model (skipped while the package has none).

No ``model`` setting: the server must find the embedded checkpoint itself, load it with
automatic device/dtype/quantization, and answer completion, inline and hover requests with
real (if small-model) code.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from support import SERVER_COMMAND, inline, open_doc, wait_for_state

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.usefixtures("default_model"),  # skips (before a server starts) without one
]

SOURCE = (
    "import os\n\n\n"
    "def read_lines(path):\n"
    '    """Return the lines of the file at path."""\n'
    "    with open(path) as f:\n"
    "        \n"  # the cursor: an empty line inside the with block
    "\n\n"
    "def count_words(text):\n"
    '    """Return the number of words in text."""\n'
    "    pass\n"
)


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER_COMMAND))
async def client(lsp_client: LanguageClient):
    params = types.InitializeParams(
        capabilities=client_capabilities("visual_studio_code"),
        initialization_options={"codegen": {"threads": 1, "filter": "off"}},  # shows all
    )
    await lsp_client.initialize_session(params)
    lsp_client.ready = await wait_for_state(lsp_client, timeout=180)  # type: ignore[attr-defined]
    yield
    await lsp_client.shutdown_session()


async def test_default_model_loaded(client: LanguageClient) -> None:
    status: dict[str, Any] = client.ready  # type: ignore[attr-defined]
    assert status["model"] == "default"
    assert "default_model" in status["message"]


async def test_default_model_completes_code(client: LanguageClient) -> None:
    uri = "file:///work/default_model_example.py"
    open_doc(client, uri, SOURCE)
    start = time.monotonic()
    result = await inline(client, uri, 6, 8)  # the empty line in the with block
    assert time.monotonic() - start < 30  # a 17M model: a second or two; room for a loaded CPU
    assert result.items, "a multi-line suggestion in a with block"
    text = result.items[0].insert_text
    assert text.strip() and "\n" not in text.split("\n")[0]
    for line in text.split("\n")[1:]:  # the suggestion stays inside the with block
        assert not line.strip() or line.startswith("        ")


async def test_default_model_hover_on_stub(client: LanguageClient) -> None:
    uri = "file:///work/default_model_hover.py"
    open_doc(client, uri, SOURCE)
    hover = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(8, 6))
    )
    if hover is not None:  # a small model may produce an empty body; then there is no hover
        assert "def count_words(text):" in hover.contents.value
