"""What was shown and accepted is counted in ``codegen/status`` (in memory only): inline
items carry the ``codegen.accepted`` command (VS Code runs it on accept), the Neovim plugin
sends ``codegen/didAccept`` for a whole, word or line accept; other kinds are ignored."""

from __future__ import annotations

from pathlib import Path

from raw_lsp import RawServer
from support import cpu_settings, wait_until


def test_shown_and_accepted_counts(tmp_path: Path, steady_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize({"codegen": cpu_settings(steady_checkpoint)})
        uri = "file:///work/accept.py"
        server.open(uri, "value = ")
        items = server.inline(uri, 0, 8)["result"]["items"]
        assert items and items[0]["command"]["command"] == "codegen.accepted"
        assert server.status()["shown"] == 1
        command = items[0]["command"]
        answer = server.call(
            "workspace/executeCommand",
            {"command": command["command"], "arguments": command["arguments"]},
        )
        assert "error" not in answer, answer
        for kind in ("word", "line", "bogus"):
            server.notify("codegen/didAccept", {"kind": kind})
        status = wait_until(
            lambda: (st := server.status())["partlyAccepted"] == 2 and st, 10, "two partial"
        )
        assert status["accepted"] == 1 and status["typeAhead"] == 0
    finally:
        server.close()
