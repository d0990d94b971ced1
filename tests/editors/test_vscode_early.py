"""Typing right after VS Code (code-server) opens, before the model is loaded, on the shipped
model: the ghost text appears once the model is ready, with no further keystroke, and Tab
accepts it. The server's ``slow_load`` fault (20 s here) makes sure the typing happens while
the model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_vscode import (
    ACCEPT_SOURCE,
    READY_TIMEOUT_S,
    code_server_session,
    describe,
    drive,
    logged_server,
    tools,  # noqa: F401
)

pytestmark = pytest.mark.editors


def type_in_a_fresh_code_server(
    tools: dict,  # noqa: F811
    env: dict[str, str],
    command: list[str] | None,
    python: str,
    settings: dict,
    tmp_path: Path,
    name: str,
    **driver: object,
) -> tuple[dict, str]:
    """Start code-server, open ``name`` (ACCEPT_SOURCE), type "return" at its end, wait for
    ghost text and accept it (vscode_driver.js, with ``driver`` options); the driver's report
    and the saved file."""
    with code_server_session(tools, env, command, python, settings, tmp_path) as vscode:
        file = vscode["workspace"] / name
        file.write_text(ACCEPT_SOURCE)
        report = drive(tools, vscode, file, "return", tmp_path / "screenshots",
                       suggestionTimeoutMs=READY_TIMEOUT_S * 1000, **driver)  # fmt: skip
    assert report["rc"] == 0, describe(report)
    return report, file.read_text()


def test_typing_during_the_load_gets_ghost_text(
    tools: dict,  # noqa: F811
    editor_env: dict[str, str],
    server_cmd: list[str] | None,
    server_python: str,
    server_settings: dict,
    tmp_path: Path,
) -> None:
    env = {**editor_env, "CODEGEN_LSP_FAULT": "slow_load", "CODEGEN_LSP_SLOW_LOAD_S": "20"}
    report, saved = type_in_a_fresh_code_server(
        tools, env, server_cmd, server_python, server_settings, tmp_path, "early.py",
        earlyType=True,
    )  # fmt: skip
    typed = report.get("typedStatus", "")
    assert "CodeGen: loading" in typed or "CodeGen: starting" in typed, describe(report)
    assert report["ghostText"].strip(), describe(report)
    assert saved.startswith(ACCEPT_SOURCE + "return") and saved[len(ACCEPT_SOURCE) + 6 :].strip()


def test_accepting_a_word_keeps_the_rest_without_a_model_run(
    tools: dict,  # noqa: F811
    editor_env: dict[str, str],
    server_python: str,
    server_settings: dict,
    tmp_path: Path,
) -> None:
    log, command = logged_server(server_python, tmp_path)
    report, saved = type_in_a_fresh_code_server(
        tools, editor_env, command, server_python, server_settings, tmp_path, "word.py",
        serverLog=str(log),
    )  # fmt: skip
    word = report["wordAccept"]
    shown = report["ghostText"].strip()
    rest = word["ghostAfter"].strip()
    assert shown and rest and rest != shown and shown.endswith(rest), (shown, word)
    assert word["runsAfter"] == word["runsBefore"], (word, log.read_text()[-3000:])
    # Tab then took the rest: the whole first suggestion went in
    assert saved.startswith(ACCEPT_SOURCE + "return") and rest.split("\n")[0].strip() in saved
