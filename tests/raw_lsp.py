"""A raw LSP client for hardening tests: ``codegen-lsp serve`` as a subprocess, spoken to in
bytes, so tests can write frames no well-behaved client library would (bad headers, bodies
that are not JSON, invalid UTF-8) and still read every answer.

A reader thread parses the server's stdout (strictly: the server's own output must always be
well framed) into a queue; :meth:`RawServer.wait_response` returns the answer with a given id
and keeps everything else it passes (notifications, other answers) in ``seen``. Settings and
commands are ``support``'s, as for the ``pytest-lsp`` tests.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from support import SERVER_COMMAND, wait_until


def frame(body: bytes | dict[str, Any]) -> bytes:
    """One base-protocol frame around ``body`` (a dict is JSON-encoded)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    return b"Content-Length: %d\r\n\r\n" % len(data) + data


def is_response(message: dict[str, Any]) -> bool:
    """An answer to a request (not a notification or a request from the server)."""
    return "id" in message and "method" not in message


INVOKED, AUTOMATIC = 1, 2  # InlineCompletionTriggerKind: the user asked / while typing


def inline_params(uri: str, line: int, character: int, trigger: int = INVOKED) -> dict[str, Any]:
    """inlineCompletion params at a position (invoked, unless ``trigger`` says otherwise)."""
    return {
        "textDocument": {"uri": uri},
        "position": {"line": line, "character": character},
        "context": {"triggerKind": trigger},
    }


class RawClient:
    """An LSP peer spoken to in raw frames over some transport: subclasses feed parsed
    messages into ``messages`` (None at the end of output) and implement :meth:`send_raw`."""

    timeout = 30.0  # default seconds to wait for an answer

    def __init__(self, first_id: int = 1000) -> None:
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._ids = itertools.count(first_id)

    def next_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message from the server, or None at end of output; raises on timeout."""
        message = self.messages.get(timeout=timeout)
        if message is not None:
            self.seen.append(message)
        return message

    def wait_response(self, msg_id: Any, timeout: float | None = None) -> dict[str, Any]:
        """The answer to request ``msg_id`` (it may have been read already)."""
        for message in self.seen:
            if is_response(message) and message["id"] == msg_id:
                return message
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            message = self.next_message(max(0.01, deadline - time.monotonic()))
            if message is None:
                raise AssertionError(f"the server exited before answering {msg_id!r}")
            if is_response(message) and message["id"] == msg_id:
                return message

    def send_raw(self, data: bytes) -> None:
        """Write bytes to the server."""
        raise NotImplementedError

    def send(self, message: dict[str, Any]) -> None:
        """Write one message as a well-formed frame."""
        self.send_raw(frame({"jsonrpc": "2.0", **message}))

    def request(self, method: str, params: Any = None) -> int:
        """Send a request; its id."""
        msg_id = next(self._ids)
        self.send({"id": msg_id, "method": method, "params": params})
        return msg_id

    def call(self, method: str, params: Any = None, timeout: float | None = None) -> dict[str, Any]:
        """Send a request and wait for its answer."""
        return self.wait_response(self.request(method, params), timeout)

    def notify(self, method: str, params: Any = None) -> None:
        """Send a notification."""
        self.send({"method": method, "params": params})

    def status(self) -> dict[str, Any]:
        """The ``codegen/status`` result."""
        return self.call("codegen/status")["result"]

    def wait_state(self, state: str, timeout: float = 90) -> dict[str, Any]:
        """Poll ``codegen/status`` until it reports ``state``."""
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            last.update(self.status())
            return dict(last) if last["state"] == state else None

        return wait_until(reached, timeout, lambda: f"state {state} (last status {last})")


class RawServer(RawClient):
    """The server as a subprocess; raw frames in, parsed messages out."""

    def __init__(
        self,
        log_file: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.log_file = log_file
        self.proc = subprocess.Popen(
            [*SERVER_COMMAND, "--log-file", str(log_file), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        super().__init__()
        self.stdout_errors: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    # --- output -------------------------------------------------------------------------
    def _read(self) -> None:
        assert self.proc.stdout is not None
        out = self.proc.stdout
        while True:
            header = b""
            while not header.endswith(b"\r\n\r\n"):
                try:
                    byte = out.read(1)
                except (OSError, ValueError):  # the test closed the pipe
                    byte = b""
                if not byte:
                    self.messages.put(None)
                    return
                header += byte
            try:
                length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                self.messages.put(json.loads(out.read(length)))
            except (IndexError, ValueError) as exc:
                self.stdout_errors.append(f"{exc}: {header!r}")

    def responses_until(self, msg_id: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """Every answer up to and including the one to ``msg_id``."""
        start = len(self.seen)
        self.wait_response(msg_id, timeout)
        return [m for m in self.seen[start:] if is_response(m)]

    def log(self) -> str:
        """The server's log so far."""
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    # --- input --------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        """Write bytes to the server's stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    # --- LSP helpers ----------------------------------------------------------------------
    def initialize(self, settings: dict[str, Any], wait_for: str | None = "ready") -> None:
        """initialize + initialized with ``codegen`` settings; wait for a model state."""
        params = {"processId": None, "capabilities": {}, "initializationOptions": settings}
        answer = self.call("initialize", {**params, "rootUri": None}, timeout=60)
        assert "result" in answer, answer
        self.notify("initialized", {})
        if wait_for:
            self.wait_state(wait_for)

    def configure(self, settings: dict[str, Any]) -> None:
        """didChangeConfiguration with ``settings`` (``{"codegen": {...}}``)."""
        self.notify("workspace/didChangeConfiguration", {"settings": settings})

    def open(self, uri: str, text: str, language: str = "python", version: int = 1) -> None:
        """didOpen."""
        item = {"uri": uri, "languageId": language, "version": version, "text": text}
        self.notify("textDocument/didOpen", {"textDocument": item})

    def inline(
        self, uri: str, line: int, character: int, timeout: float = 30, trigger: int = INVOKED
    ) -> dict[str, Any]:
        """An inlineCompletion request's answer."""
        params = inline_params(uri, line, character, trigger)
        return self.call("textDocument/inlineCompletion", params, timeout)

    def messages_shown(self) -> list[str]:
        """window/showMessage texts seen so far."""
        return [
            m["params"]["message"] for m in self.seen if m.get("method") == "window/showMessage"
        ]

    def wait_for_message(self, text: str, timeout: float = 30) -> str:
        """The latest window/showMessage text containing ``text`` (waits for one)."""

        def found() -> str | None:
            shown = [m for m in self.messages_shown() if text in m]
            if not shown:
                self.status()  # reads the messages that came meanwhile
            return shown[-1] if shown else None

        return wait_until(found, timeout, lambda: f"{text!r} in {self.messages_shown()}")

    def close(self, timeout: float = 30) -> int:
        """shutdown + exit if it is still running; the exit code."""
        if self.proc.poll() is None:
            try:
                self.call("shutdown", timeout=timeout)
                self.notify("exit")
            except (AssertionError, OSError, queue.Empty):
                pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:
                        pass
