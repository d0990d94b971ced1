"""Typing right after opening a file, before the model is loaded, in real Neovim (0.7.2 and
0.11.4) on the shipped model: the ghost text appears once the model is ready, with no
further keystroke. The server's ``slow_load`` fault makes sure the typing happens while the
model loads (the shipped model alone loads in about a second)."""

from __future__ import annotations

from typing import Any

import pytest
from support import wait_until
from test_neovim import READY_TIMEOUT, ghost, open_python_file, plugin_nvim, status

pytestmark = pytest.mark.editors


@pytest.mark.parametrize("version", ["0.7", "0.11"])
def test_typing_during_the_load_gets_ghost_text(
    version: str,
    manifest: dict,
    editor_env: dict[str, str],
    server_python: str,
    server_settings: dict,
    tmp_path: Any,
) -> None:
    fault = {"CODEGEN_LSP_FAULT": "slow_load"}
    with plugin_nvim(
        manifest, version, editor_env, server_settings, server_python, tmp_path, fault
    ) as nvim:
        open_python_file(nvim, "early.py", "")
        nvim.input("idef add(a, b):<CR>return")
        wait_until(lambda: nvim.api.get_current_line().endswith("return"), 10, "the typed text")
        st = nvim.exec_lua("return require('codegen_lsp.client').status()")
        assert st["state"] in ("stopped", "loading"), st  # typed before the model is ready
        text = wait_until(lambda: ghost(nvim), READY_TIMEOUT, "ghost text after the load")
        assert text.strip() and status(nvim) in ("ready", "generating"), (text, status(nvim))
