"""Requests made while the model loads are held until it is ready (within a bound), so a
user who types as soon as the editor opens gets a suggestion without typing again. The
``slow_load`` fault makes the load surely take a while."""

from __future__ import annotations

import time
from pathlib import Path

from raw_lsp import RawServer, inline_params
from support import cpu_settings


def test_a_request_during_the_load_is_answered_when_the_model_is_ready(
    tmp_path: Path, steady_checkpoint: Path
) -> None:
    server = RawServer(tmp_path / "server.log", env={"CODEGEN_LSP_FAULT": "slow_load"})
    try:
        server.initialize({"codegen": cpu_settings(steady_checkpoint)}, wait_for=None)
        uri = "file:///work/early.py"
        server.open(uri, "value =")
        assert server.status()["state"] == "loading"
        started = time.monotonic()
        superseded = server.request("textDocument/inlineCompletion", inline_params(uri, 0, 6))
        held = server.request("textDocument/inlineCompletion", inline_params(uri, 0, 7))
        # the older one is superseded at once, while the load still runs
        assert server.wait_response(superseded, 5)["result"]["items"] == []
        assert server.status()["state"] == "loading"
        items = server.wait_response(held, 90)["result"]["items"]
        assert items and items[0]["insertText"].strip(), items
        assert time.monotonic() - started > 3  # it really waited for the load
        assert server.status()["generateRuns"] >= 1
    finally:
        server.close()
