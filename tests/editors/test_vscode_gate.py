"""The suggestion gate in real VS Code (code-server) on the shipped model (greedy, so the
positions are fixed): with ``filter: auto``, asking at a position whose suggestion the gate
hides shows no ghost text after the model ran, and typing on to a position it accepts shows
the suggestion (the positions of ``test_neovim_gate.py``); and the manual-only mode,
``codegen.autoTrigger: false``."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_neovim_gate import GATE_SETTINGS, GATE_SHOWN, GATE_SOURCE, GATE_TYPED
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


def test_filter_auto_hides_what_the_gate_rejects(
    tools: dict,  # noqa: F811
    editor_env: dict[str, str],
    server_python: str,
    server_settings: dict,
    tmp_path: Path,
) -> None:
    if server_settings["model"] != "":
        pytest.skip("the positions are the shipped model's")
    log, command = logged_server(server_python, tmp_path)
    with code_server_session(
        tools, editor_env, command, server_python, GATE_SETTINGS, tmp_path
    ) as vscode:
        file = vscode["workspace"] / "gate.py"
        file.write_text(GATE_SOURCE[:-1])  # its last space typed: an automatic request
        report = drive(tools, vscode, file, GATE_TYPED, tmp_path / "screenshots",
                       suggestionTimeoutMs=READY_TIMEOUT_S * 1000, serverLog=str(log),
                       hiddenFirst=GATE_SOURCE[-1])  # fmt: skip
    assert report["rc"] == 0, describe(report)
    assert report["hiddenGhost"] == "", describe(report)  # the model ran; nothing shown
    shown = " ".join(report["ghostText"].split())  # the decoration comes in pieces
    assert shown.startswith(GATE_SHOWN), describe(report)


def test_auto_trigger_off_asks_only_when_told(
    tools: dict,  # noqa: F811
    editor_env: dict[str, str],
    server_python: str,
    server_settings: dict,
    tmp_path: Path,
) -> None:
    """``codegen.autoTrigger: false`` (the manual-only mode): typing brings no ghost text and
    no model run; the Trigger Inline Suggestion command then shows one."""
    log, command = logged_server(server_python, tmp_path)
    settings = {**server_settings, "autoTrigger": False}
    with code_server_session(
        tools, editor_env, command, server_python, settings, tmp_path
    ) as vscode:
        file = vscode["workspace"] / "manual.py"
        file.write_text(ACCEPT_SOURCE)
        report = drive(tools, vscode, file, "return", tmp_path / "screenshots",
                       suggestionTimeoutMs=READY_TIMEOUT_S * 1000, serverLog=str(log),
                       manualOnly=True)  # fmt: skip
    assert report["rc"] == 0, describe(report)
    assert report["typedOnly"] == {"ghost": "", "runs": 0}, describe(report)
    assert report["ghostText"].strip(), describe(report)
