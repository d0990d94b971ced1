"""``codegen-lsp complete`` and ``codegen-lsp serve`` as subprocesses."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from pathlib import Path

from raw_lsp import frame
from support import CLI_COMMAND, SERVER_COMMAND, free_port, wait_until

CPU = ["--device", "cpu", "--dtype", "float32", "--quantize", "none", "--filter", "off"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI_COMMAND, *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def test_complete_prints_the_suggestion(tmp_path: Path, steady_checkpoint: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("import os\n\nvalue = valu\n", encoding="utf-8")
    done = run(
        "complete", str(source), "--line", "2", "--character", "12",
        "--model", str(steady_checkpoint), "--max-new-tokens", "5", *CPU,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n").endswith(" 0 0 0")
    assert "single-line" in done.stderr


def test_complete_json_and_candidates(tmp_path: Path, choice_checkpoint: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("def f():\n    ", encoding="utf-8")
    done = run(
        "complete", str(source), "--line", "1", "--json", "--candidates", "2",
        "--temperature", "1.0", "--model", str(choice_checkpoint), "--max-new-tokens", "12",
        *CPU,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    suggestions = json.loads(done.stdout)
    # two samples of 12 tokens from " x", " y", " z" (each about 1/3): equal 3 times in 10**6
    assert len(suggestions) == 2 and suggestions[0] != suggestions[1], suggestions
    assert all(re.fullmatch(r"( [xyz])+", s) for s in suggestions), suggestions


def test_complete_reports_bad_input(tmp_path: Path, steady_checkpoint: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("x = 1\n", encoding="utf-8")
    done = run("complete", str(source), "--line", "7", "--model", str(steady_checkpoint))
    assert done.returncode == 2 and "outside the file" in done.stderr
    done = run("complete", str(source), "--line", "0", "--model", "/no/such/model", *CPU)
    assert done.returncode == 2 and "/no/such/model" in done.stderr
    done = run("complete", str(tmp_path / "missing.py"), "--line", "0")
    assert done.returncode == 2 and "missing.py" in done.stderr


def test_serve_stdio_writes_nothing_but_protocol() -> None:
    done = subprocess.run(SERVER_COMMAND, input=b"", capture_output=True, timeout=120, check=False)
    assert done.stdout == b""


def _read_message(sock: socket.socket) -> dict:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    header, rest = data.split(b"\r\n\r\n", 1)
    length = int(header.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += sock.recv(4096)
    return json.loads(rest[:length])


def test_serve_tcp_on_loopback(tiny_checkpoint: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        [*SERVER_COMMAND, "--tcp", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:

        def connect() -> socket.socket | None:
            assert server.poll() is None, "the server exited"
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=30)
            except OSError:
                return None

        with wait_until(connect, 60, "the server to accept a connection", interval=0.2) as sock:
            options = {"codegen": {"model": str(tiny_checkpoint), "device": "cpu"}}
            init = {"processId": None, "capabilities": {}, "initializationOptions": options}
            sock.sendall(frame({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}))
            reply = _read_message(sock)
            while reply.get("id") != 1:
                reply = _read_message(sock)
            assert reply["result"]["capabilities"]["inlineCompletionProvider"] is not None
            sock.sendall(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}))
            sock.sendall(frame({"jsonrpc": "2.0", "method": "exit"}))
            while sock.recv(4096):  # exit ends this client's session: the server closes
                pass
            assert server.poll() is None  # and goes on listening (tests/test_tcp_clients.py)
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.stdout is not None and server.stdout.read() == b""
