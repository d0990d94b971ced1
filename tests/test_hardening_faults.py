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
import time
from pathlib import Path

import pytest
from raw_lsp import CPU, RawServer

STEADY_TEXT = "value = valu"


def settings(model: Path | str, **extra: object) -> dict[str, object]:
    return {"codegen": {"model": str(model), **CPU, "maxNewTokens": 4, **extra}}


def wait_for_message(server: RawServer, text: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in server.messages_shown() if text in m]
        if found:
            return found[-1]
        server.status()  # reads the messages that came meanwhile
        time.sleep(0.05)
    raise AssertionError(f"no message with {text!r}: {server.messages_shown()}")


def configure(server: RawServer, model: Path | str, **extra: object) -> None:
    server.notify("workspace/didChangeConfiguration", {"settings": settings(model, **extra)})


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
        assert "/nonexistent/model" in wait_for_message(server, "cannot load")
        assert steady_items(server) == []  # no model: answers empty
        configure(server, corrupt)
        assert "corrupt or truncated" in wait_for_message(server, str(corrupt))
        configure(server, steady_checkpoint, memoryLimitMB=1, cacheMemoryMB=1)
        message = wait_for_message(server, "memoryLimitMB=1")
        assert "does not fit" in message and "MiB in float32" in message
        assert server.wait_state("error")["message"].startswith("model load failed")
        configure(server, steady_checkpoint, memoryLimitMB=1024)
        server.wait_state("ready")
        items = steady_items(server, "file:///faults/b.py")
        assert items and " x x" in items[0]["insertText"]
    finally:
        assert server.close() == 0


def test_worker_exception_during_generation(tmp_path: Path, steady_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log", env={"CODEGEN_LSP_FAULT": "generate_once"})
    try:
        server.initialize(settings(steady_checkpoint))
        assert steady_items(server) == []  # the failed generation answers empty
        message = wait_for_message(server, "a suggestion failed")
        assert "injected fault" in message and "still serving" in message
        items = steady_items(server, "file:///faults/after.py")
        assert items and " x x" in items[0]["insertText"]
        status = server.status()
        assert status["failures"] == 1 and status["state"] == "ready"
        assert "generation failed" in server.log()
    finally:
        assert server.close() == 0


def test_client_disconnects_during_generation(tmp_path: Path, long_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log")
    server.initialize(settings(long_checkpoint, maxNewTokens=2000, timeLimitMs=0))
    server.open("file:///faults/slow.py", STEADY_TEXT)
    server.request(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": "file:///faults/slow.py"},
            "position": {"line": 0, "character": len(STEADY_TEXT)},
            "context": {"triggerKind": 1},
        },
    )
    deadline = time.monotonic() + 20
    while server.status()["state"] != "generating":
        assert time.monotonic() < deadline, "the generation never started"
        time.sleep(0.05)
    assert server.proc.stdin is not None and server.proc.stdout is not None
    server.proc.stdin.close()  # the editor is gone: end of input (and no reader)
    server.proc.stdout.close()
    start = time.monotonic()
    assert server.proc.wait(15) == 1
    assert time.monotonic() - start < 10
    log = server.log()
    assert "went away" in log and "Traceback" not in log and "Fatal" not in log


@pytest.mark.parametrize("initialize", [False, True], ids=["before-initialize", "initialized"])
def test_exit_without_shutdown(tmp_path: Path, initialize: bool) -> None:
    server = RawServer(tmp_path / "server.log")
    if initialize:
        server.initialize(settings("/nonexistent/model"), wait_for="error")
    start = time.monotonic()
    server.notify("exit")
    assert server.proc.wait(10) == 1
    assert time.monotonic() - start < 5
    assert "exit (without shutdown)" in server.log()
