"""Definitions from a real Python language server in real Neovim (0.7.2 and 0.11.4):
jedi-language-server is attached to the buffer beside codegen-lsp; typing a call to a function
defined in another file puts that function's signature into the prompt (seen through
``codegen/lastPrompt`` and ``:CodegenShowPrompt``), and ghost text appears."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from support import wait_until
from test_neovim import READY_TIMEOUT, ghost, open_python_file, plugin_nvim, status

pytestmark = pytest.mark.editors

LIB = '''"""Pages."""


def fetch_page(url: str, retries: int = 3, *, timeout: float = 10.0) -> dict:
    """Fetch one page of ``url``."""
    return {"url": url}
'''
APP = "from lib import fetch_page\n\n\ndef main(url):\n    \n"
SIGNATURE = "# def fetch_page(url: str, retries: int = 3, *, timeout: float = 10.0) -> dict:"


def last_prompt(nvim: Any) -> dict | None:
    nvim.exec_lua(
        "vim.g.codegen_test_prompt = nil; require('codegen_lsp.client').request(0,"
        " 'codegen/lastPrompt', { textDocument = { uri = vim.uri_from_bufnr(0) } },"
        " function(err, result) vim.g.codegen_test_prompt = result or vim.NIL end)"
    )
    return wait_until(lambda: nvim.vars.get("codegen_test_prompt"), 10, "codegen/lastPrompt")


def definitions_part(nvim: Any) -> str:
    prompt = last_prompt(nvim)
    if not isinstance(prompt, dict):
        return ""
    return next(p["text"] for p in prompt["parts"] if p["name"] == "definitions")


@pytest.mark.parametrize("version", ["0.7", "0.11"])
def test_a_call_to_another_files_function_brings_its_signature(
    version: str,
    manifest: dict,
    editor_env: dict[str, str],
    server_python: str,
    server_settings: dict,
    tmp_path: Path,
) -> None:
    jedi = shutil.which("jedi-language-server", path=editor_env["PATH"])
    if jedi is None:
        pytest.skip("jedi-language-server not installed (pip install -e '.[test]')")
    (tmp_path / "lib.py").write_text(LIB)
    with plugin_nvim(
        manifest, version, editor_env, server_settings, server_python, tmp_path
    ) as nvim:
        open_python_file(nvim, "app.py", APP)
        # Neovim 0.7 has no vim.lsp.start (0.8+): start_client + buf_attach_client there
        nvim.exec_lua(
            "local cfg = { name = 'jedi', cmd = { ... }, root_dir = vim.g.codegen_test_dir }\n"
            "if vim.lsp.start then vim.g.jedi_id = vim.lsp.start(cfg) else\n"
            "  vim.g.jedi_id = vim.lsp.start_client(cfg)\n"
            "  vim.lsp.buf_attach_client(0, vim.g.jedi_id)\n"
            "end",
            jedi,
        )
        ready = (
            "local c = vim.lsp.get_client_by_id(vim.g.jedi_id)\n"
            "return c ~= nil and vim.lsp.buf_is_attached(0, c.id)"
            " and next(c.server_capabilities or {}) ~= nil"
        )
        wait_until(
            lambda: nvim.exec_lua(ready), 30, "jedi-language-server attached and initialized"
        )
        wait_until(lambda: status(nvim) == "ready", READY_TIMEOUT, "codegen/status ready")
        nvim.command("normal! 5G")
        nvim.input("A    page = fetch_page(")
        wait_until(lambda: ghost(nvim) is not None, 60, "ghost text after the call")
        typed = iter("url, retries=2")

        def signature_in_prompt() -> bool:
            if SIGNATURE in definitions_part(nvim):
                return True
            nvim.input(next(typed, " "))  # a new request: the answer is in by now
            return False

        wait_until(signature_in_prompt, 60, "the signature in codegen/lastPrompt")
        block = definitions_part(nvim)
        assert "# Definition of fetch_page from lib.py:" in block
        assert "Fetch one page" in block and "return" not in block
        text = wait_until(lambda: ghost(nvim), 60, "ghost text with the definitions")
        assert text.strip()
        nvim.input("<Esc>")
        nvim.command("CodegenShowPrompt")
        shown = "return table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\\n')"
        view = wait_until(
            lambda: "=== definitions" in (t := nvim.exec_lua(shown)) and t, 10, "the prompt view"
        )
        assert SIGNATURE in view and "=== window" in view and "tokens) ===" in view
