"""TCP mode (``codegen-lsp serve --tcp``) as editors meet it: a real server subprocess.

What docs/server.md promises: every connection is a session of its own, served at the same
time as the others; a port check (connect, close) is no session at all; ``exit`` or a
vanished editor ends that editor's session and never the listener; SIGTERM ends the process
with exit code 0.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from raw_lsp import RawClient, inline_params
from support import SERVER_COMMAND, codegen_settings, free_port, wait_until

TEXT = "value = valu"


class Editor(RawClient):
    """One LSP client over a TCP connection; parsed messages arrive on a reader thread."""

    timeout = 60.0

    def __init__(self, port: int) -> None:
        super().__init__(first_id=1)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise EOFError
                    data += chunk
                header, data = data.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"Content-Length: (\d+)", header)[1])  # type: ignore[index]
                while len(data) < length:
                    chunk = self.sock.recv(65536)
                    if not chunk:
                        raise EOFError
                    data += chunk
                self.messages.put(json.loads(data[:length]))
                data = data[length:]
        except (EOFError, OSError):
            self.messages.put(None)  # the server closed the connection

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def initialize(self, settings: dict[str, Any]) -> None:
        params = {"processId": None, "capabilities": {}, "initializationOptions": settings}
        answer = self.call("initialize", {**params, "rootUri": None})
        assert answer["result"]["capabilities"]["inlineCompletionProvider"] is not None
        self.notify("initialized", {})
        self.wait_state("ready")

    def suggest(self, uri: str, text: str = TEXT) -> list[dict[str, Any]]:
        """Open ``uri`` and ask for an inline completion at its end; the items."""
        item = {"uri": uri, "languageId": "python", "version": 1, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": item})
        answer = self.call("textDocument/inlineCompletion", inline_params(uri, 0, len(text)))
        assert "result" in answer, answer
        return answer["result"]["items"]

    def closed_by_server(self, timeout: float = 30) -> bool:
        """True once the server closed the connection (messages before that are kept)."""
        while (message := self.messages.get(timeout=timeout)) is not None:
            self.seen.append(message)
        return True

    def vanish(self) -> None:
        """Go away without a word: the connection is reset (RST), not closed."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class TcpServer:
    """``codegen-lsp serve --tcp --port N`` as a subprocess, once it listens."""

    def __init__(self, log_file: Path) -> None:
        self.log_file = log_file
        self.port = free_port()
        command = [*SERVER_COMMAND, "--tcp", "--port", str(self.port), "--log-file", str(log_file)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def listening() -> bool:
            assert self.proc.poll() is None, "the server exited"
            return f"listening on 127.0.0.1:{self.port}" in self.log()

        wait_until(listening, 60, "the server to listen", interval=0.1)

    def log(self) -> str:
        return self.log_file.read_text() if self.log_file.exists() else ""

    def editor(self) -> Editor:
        assert self.proc.poll() is None, f"the server exited ({self.proc.returncode})"
        return Editor(self.port)

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TcpServer]:
    srv = TcpServer(tmp_path / "server.log")
    try:
        yield srv
    finally:
        code = srv.stop()
        assert srv.proc.stdout is not None and srv.proc.stdout.read() == b""
        log = srv.log()
        assert "Traceback" not in log, log
    assert code == 0


def settings(model: Path, **extra: Any) -> dict[str, Any]:
    return codegen_settings(model, **{"maxNewTokens": 4, **extra})


def test_port_probe_then_editor(server: TcpServer, steady_checkpoint: Path) -> None:
    for _ in range(3):  # a port check: connect and close, before any editor
        socket.create_connection(("127.0.0.1", server.port), timeout=10).close()
    wait_until(lambda: server.log().count("closed before sending anything") == 3, 30, "the probes")
    editor = server.editor()
    editor.initialize(settings(steady_checkpoint))
    items = editor.suggest("file:///tcp/probe.py")
    assert items and " 0 0" in items[0]["insertText"]
    assert editor.call("shutdown")["result"] is None
    editor.notify("exit")
    assert editor.closed_by_server()  # exit ends this session: the server closes
    ended = "client 1: session over (exit code 0); still listening"
    wait_until(lambda: ended in server.log(), 30, "the session to end")
    assert server.proc.poll() is None  # the server goes on listening
    again = server.editor()
    again.initialize(settings(steady_checkpoint))
    assert again.suggest("file:///tcp/again.py")
    again.close()


def test_two_editors_at_once(server: TcpServer, steady_checkpoint: Path) -> None:
    first, second = server.editor(), server.editor()
    first.initialize(settings(steady_checkpoint))
    second.initialize(settings(steady_checkpoint, maxNewTokens=2))
    one, two = first.suggest("file:///tcp/one.py"), second.suggest("file:///tcp/two.py")
    assert one and two
    assert len(one[0]["insertText"]) > len(two[0]["insertText"])  # each its own settings
    assert first.status()["documents"] == 1 and second.status()["documents"] == 1
    first.call("shutdown")
    first.notify("exit")
    assert first.closed_by_server()
    assert second.suggest("file:///tcp/two-again.py")  # the other session is untouched
    assert second.status()["state"] == "ready"
    second.close()


def test_editor_vanishes_mid_request(server: TcpServer, long_checkpoint: Path) -> None:
    gone = server.editor()
    gone.initialize(settings(long_checkpoint, maxNewTokens=1000, timeLimitMs=0))
    item = {"uri": "file:///tcp/slow.py", "languageId": "python", "version": 1, "text": TEXT}
    gone.notify("textDocument/didOpen", {"textDocument": item})
    gone.request("textDocument/inlineCompletion", inline_params(item["uri"], 0, len(TEXT)))
    gone.wait_state("generating", timeout=30)
    gone.vanish()
    wait_until(lambda: "session over (exit code 1)" in server.log(), 30, "the session to end")
    assert server.proc.poll() is None
    editor = server.editor()
    editor.initialize(settings(long_checkpoint))
    items = editor.suggest("file:///tcp/after.py")
    assert items and " 0 0" in items[0]["insertText"]
    assert editor.status()["generateRuns"] == 1  # a fresh session of its own
    editor.close()
