"""A newcomer's mistakes: each gets one line that names the problem and what to do, no
traceback, and no wait for torch where the mistake is visible without it.

The commands run as subprocesses (``python -m codegen_lsp ...``), the server over raw LSP.
"""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from raw_lsp import RawServer
from support import CLI_COMMAND, cpu_settings, wait_until, write_tiny_checkpoint

EOS = 50256  # <|endoftext|> in the CodeGen tokenizer

HINT = "leave the model setting empty"  # every "no model there" message says how to get one


def _cli(*args: str, timeout: float = 300, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI_COMMAND, *args], capture_output=True, text=True, timeout=timeout, input=stdin
    )


def _one_clear_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """The error line of a failed command: it exited non-zero, wrote one line, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _imports_torch(*args: str) -> bool:
    """Whether ``codegen-lsp ARGS`` imported torch before it returned (run in-process in a
    fresh interpreter, which then reports ``sys.modules``)."""
    code = (
        "import sys\nfrom codegen_lsp.cli import main\n"
        f"code = main({list(args)!r})\nprint('torch' in sys.modules, code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    loaded, code_text = proc.stdout.split()
    assert int(code_text) != 0, proc.stderr
    return loaded == "True"


@pytest.fixture(scope="module")
def eos_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose greedy choice is always ``<|endoftext|>``."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("eos-codegen"), pinned=[EOS])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("newcomer") / "app.py"
    path.write_text("def add(a, b):\n    return \n", encoding="utf-8")
    return path


def test_complete_wrong_model_path_is_one_line_without_torch(source: Path, tmp_path: Path) -> None:
    wrong = str(tmp_path / "wrong" / "path")
    line = _one_clear_line(
        _cli("complete", str(source), "--line", "1", "--model", wrong),
        "model directory not found",
        "config.json",
        HINT,
    )
    assert line.count(wrong) == 1, f"the path is said once: {line}"
    assert not _imports_torch("complete", str(source), "--line", "1", "--model", wrong)


def test_complete_model_folder_without_config_says_what_it_needs(source, tmp_path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    _one_clear_line(
        _cli("complete", str(source), "--line", "1", "--model", str(tmp_path)),
        "no config.json",
        "model.safetensors",
    )
    _one_clear_line(
        _cli("complete", str(source), "--line", "1", "--model", str(tmp_path / "weights.bin")),
        "found a file",
    )


@pytest.mark.parametrize("character", ["500", "-3", "12"])
def test_complete_checks_character_like_line(source: Path, character: str) -> None:
    # line 1 is "    return " (11 code points): 0..11 are cursor places, the rest are not
    proc = _cli("complete", str(source), "--line", "1", "--character", character)
    _one_clear_line(proc, f"--character {character}", "0..11", "0-based")
    assert not _imports_torch("complete", str(source), "--line", "1", "--character", character)


def test_complete_line_error_says_0_based(source: Path) -> None:
    _one_clear_line(_cli("complete", str(source), "--line", "3"), "--line 3", "0..2", "0-based")


def test_complete_help_says_0_based() -> None:
    proc = _cli("complete", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "0-based line" in text and "0-based column" in text


def test_complete_without_suggestion_exits_nonzero_with_reason(
    source: Path, eos_checkpoint: Path
) -> None:
    # a model whose greedy choice is always <|endoftext|> (at the end of "def add(a, b):"
    # no token healing constrains the first token): nothing to suggest
    proc = _cli("complete", str(source), "--line", "0", "--model", str(eos_checkpoint))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert "no suggestion here" in proc.stderr and "Traceback" not in proc.stderr


def test_complete_prints_a_suggestion_and_exits_0(source: Path, tiny_checkpoint: Path) -> None:
    # filter off: the gate was fitted on the shipped model, not on this random checkpoint
    args = ("--line", "1", "--model", str(tiny_checkpoint), "--filter", "off")
    proc = _cli("complete", str(source), *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "a suggestion is printed"


def test_serve_on_a_taken_port_is_one_line_without_torch() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        proc = _cli("serve", "--tcp", "--port", port, timeout=60)
        _one_clear_line(proc, f"port {port}", "in use", "--port")
        assert not _imports_torch("serve", "--tcp", "--port", port)


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_with_an_impossible_port_is_one_line(port: str) -> None:
    proc = _cli("serve", "--tcp", "--port", port, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    assert "is not a port number" in proc.stderr


def test_serve_on_a_terminal_says_it_waits_for_a_client() -> None:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*CLI_COMMAND, "serve"], stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    os.close(follower)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline().decode()
        assert "waiting for an LSP client" in first and "codegen-lsp demo" in first
    finally:
        proc.kill()
        proc.wait(30)
        os.close(leader)


def test_help_describes_each_command_in_one_line() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0
    for name in ("serve", "complete", "generate", "bench", "demo", "export"):
        line = next(li for li in proc.stdout.splitlines() if li.strip().startswith(name + " "))
        assert "run 'codegen-lsp" not in line and len(line.split()) > 3, line


def test_editor_wrong_model_path_one_message_no_traceback(tmp_path: Path) -> None:
    wrong = str(tmp_path / "no-model-here")
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize({"codegen": cpu_settings(wrong)}, wait_for="error")
        shown = server.wait_for_message("cannot load")
        assert shown.count(wrong) == 1 and HINT in shown, shown
    finally:
        assert server.close() == 0
    log = server.log()
    assert "Traceback" not in log, log
    assert sum("cannot load" in line for line in log.splitlines()) == 1, log


def test_generate_function_declined_by_the_editor(tmp_path: Path, steady_checkpoint) -> None:
    server = RawServer(tmp_path / "server.log")
    uri = "file:///work/declined.py"
    try:
        server.initialize({"codegen": cpu_settings(steady_checkpoint)})
        server.open(uri, "def add(a, b):\n    pass\n")
        args = [uri, {"line": 0, "character": 5}]
        command = server.request(
            "workspace/executeCommand", {"command": "codegen.generateFunction", "arguments": args}
        )

        def apply_request() -> dict | None:
            message = server.next_message(30)
            return message if message and message.get("method") == "workspace/applyEdit" else None

        asked = wait_until(apply_request, 60, "a workspace/applyEdit request")
        # what eglot answers when the user says no to "Proceed?"
        error = {"code": -32800, "message": "User cancelled server edit"}
        server.send({"id": asked["id"], "error": error})
        answer = server.wait_response(command, 60)
        assert "error" not in answer, answer
        result = answer["result"]
        assert result["applied"] is False and "declined" in result["reason"], result
        assert "User cancelled server edit" in result["reason"]
        assert server.status()["state"] == "ready"
    finally:
        assert server.close() == 0
    assert "Traceback" not in server.log() and " ERROR " not in server.log(), server.log()
