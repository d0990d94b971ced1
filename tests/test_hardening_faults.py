"""Faults: each one shows a message (or exits as LSP says) and the server goes on serving.

- The model fails to load: a missing path, a corrupt weights file, a model larger than
  ``memoryLimitMB`` (out of memory, refused before loading): ``window/showMessage`` names the
  problem, ``codegen/status`` says ``error``, and a good model then loads on the same
  connection.
- A worker exception in the middle of a generation (``CODEGEN_LSP_FAULT=generate_once``):
  that request answers empty, one message is shown, the next request works.
- The client goes away in the middle of a long generation: the server exits on its own.
- ``exit`` without ``shutdown``: exit code 1 at once (0 after ``shutdown``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from raw_lsp import RawServer, inline_params
from support import codegen_settings

STEADY_TEXT = "value = valu"


def settings(model: Path | str, **extra: object) -> dict[str, object]:
    return codegen_settings(model, **{"maxNewTokens": 4, **extra})


def steady_items(server: RawServer, uri: str = "file:///faults/a.py") -> list[dict[str, object]]:
    server.open(uri, STEADY_TEXT)
    return server.inline(uri, 0, len(STEADY_TEXT))["result"]["items"]


def test_load_failures_are_shown_and_survived(
    tmp_path: Path, tiny_checkpoint: Path, steady_checkpoint: Path
) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_checkpoint, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00not weights" * 50)
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize(settings("/nonexistent/model"), wait_for="error")
        assert "/nonexistent/model" in server.wait_for_message("cannot load")
        assert steady_items(server) == []  # no model: answers empty
        server.configure(settings(corrupt))
        assert "corrupt or truncated" in server.wait_for_message(str(corrupt))
        server.configure(settings(steady_checkpoint, memoryLimitMB=1, cacheMemoryMB=1))
        message = server.wait_for_message("memoryLimitMB=1")
        assert "does not fit" in message and "MiB in float32" in message
        assert server.wait_state("error")["message"].startswith("model load failed")
        server.configure(settings(steady_checkpoint, memoryLimitMB=1024))
        server.wait_state("ready")
        items = steady_items(server, "file:///faults/b.py")
        assert items and " 0 0" in items[0]["insertText"]
    finally:
        assert server.close() == 0


def test_worker_exception_during_generation(tmp_path: Path, steady_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log", env={"CODEGEN_LSP_FAULT": "generate_once"})
    try:
        server.initialize(settings(steady_checkpoint))
        assert steady_items(server) == []  # the failed generation answers empty
        message = server.wait_for_message("a suggestion failed")
        assert "injected fault" in message and "still serving" in message
        items = steady_items(server, "file:///faults/after.py")
        assert items and " 0 0" in items[0]["insertText"]
        status = server.status()
        assert status["failures"] == 1 and status["state"] == "ready"
        assert "generation failed" in server.log()
    finally:
        assert server.close() == 0


def test_client_disconnects_during_generation(tmp_path: Path, long_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log")
    server.initialize(settings(long_checkpoint, maxNewTokens=2000, timeLimitMs=0))
    server.open("file:///faults/slow.py", STEADY_TEXT)
    server.request("textDocument/inlineCompletion", inline_params("file:///faults/slow.py", 0, 12))
    server.wait_state("generating", timeout=20)
    assert server.proc.stdin is not None and server.proc.stdout is not None
    server.proc.stdin.close()  # the editor is gone: end of input (and no reader)
    server.proc.stdout.close()
    assert server.proc.wait(15) == 1  # on its own (15 s only bounds a hang)
    log = server.log()
    assert "went away" in log and "Traceback" not in log and "Fatal" not in log


@pytest.mark.parametrize("initialize", [False, True], ids=["before-initialize", "initialized"])
def test_exit_without_shutdown(tmp_path: Path, initialize: bool) -> None:
    server = RawServer(tmp_path / "server.log")
    if initialize:
        server.initialize(settings("/nonexistent/model"), wait_for="error")
    server.notify("exit")
    assert server.proc.wait(10) == 1  # at once; 10 s only bounds a hang
    assert "exit (without shutdown)" in server.log()
