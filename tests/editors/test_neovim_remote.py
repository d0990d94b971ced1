"""Remote mode in real Neovim (0.7.2 and 0.11.4): the plugin set up as docs/remote.md says,
`endpoint` pointing at a real vLLM server on loopback, ghost text appears while typing."""

from __future__ import annotations

from typing import Any

import pytest
from support import wait_until
from test_neovim import (
    READY_TIMEOUT,
    SUGGESTION_TIMEOUT,
    ghost,
    open_python_file,
    plugin_nvim,
    status,
)
from vllm_support import remote_checkpoints, vllm, vllm_python  # noqa: F401

pytestmark = [pytest.mark.editors, pytest.mark.remote]


@pytest.mark.parametrize("version", ["0.7", "0.11"])
def test_ghost_text_from_vllm(
    version: str,
    manifest: dict,
    editor_env: dict[str, str],
    server_python: str,
    vllm: Any,  # noqa: F811
    remote_checkpoints: Any,  # noqa: F811
    tmp_path: Any,
) -> None:
    # filter off: the gate was fitted on the shipped model, not on these tiny checkpoints
    server = {"endpoint": vllm.url, "model": str(remote_checkpoints[0]), "filter": "off"}
    with plugin_nvim(manifest, version, editor_env, server, server_python, tmp_path) as nvim:
        open_python_file(nvim, "remote.py", "")
        wait_until(lambda: status(nvim) == "ready", READY_TIMEOUT, "codegen/status ready")
        message = nvim.exec_lua("return require('codegen_lsp.client').status().message")
        assert "remote" in message and vllm.url in message, message
        nvim.input("ivalue = ")
        try:
            text = wait_until(lambda: ghost(nvim), SUGGESTION_TIMEOUT, "ghost text from vLLM")
        except AssertionError as exc:
            state = nvim.exec_lua("return require('codegen_lsp.client').status()")
            raise AssertionError(f"{exc}\nstatus: {state}\nvLLM log:\n{vllm.tail(40)}") from None
        assert text.strip(), text
