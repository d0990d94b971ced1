"""The README's remote section as a new user follows it on this machine (no GPU): export a
CodeGen checkpoint to GPT-J with ``codegen-lsp export --format gptj``, serve it with vLLM's CPU
wheel as the README's CPU lines say (``python -m vllm.entrypoints.openai.api_server``: that
wheel's ``vllm`` command does not start, it looks up a package named ``vllm``), with an API key,
then set ``endpoint``, ``remoteModel``, ``apiKeyEnv`` and ``model`` (the export's folder
without its weights: tokenizer and config) in Neovim: ghost text appears while typing and the
status says remote.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import TOKENIZER_DIR, wait_until
from test_neovim import (
    READY_TIMEOUT,
    SUGGESTION_TIMEOUT,
    ghost,
    open_python_file,
    plugin_nvim,
    status,
)
from vllm_support import SERVED, SHAPE, VllmServer, vllm_python  # noqa: F401

from codegen_lsp.commands.bench.synthetic import random_model, write_checkpoint

pytestmark = [pytest.mark.editors, pytest.mark.remote]
KEY_ENV = "CODEGEN_README_KEY"


def test_readme_remote_section_gives_ghost_text_in_neovim(
    manifest: dict,
    editor_env: dict[str, str],
    server_python: str,
    vllm_python: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = write_checkpoint(
        tmp_path / "codegen-tiny-mono",
        TOKENIZER_DIR,
        random_model(SHAPE, vocab_size=50304, seed=0, std=0.1),
    )
    exported = tmp_path / "srv" / "codegen-tiny-gptj"
    done = subprocess.run(
        [server_python, "-m", "codegen_lsp", "export", "--format", "gptj", str(source),
         str(exported)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    tokenizer_only = tmp_path / "codegen-tiny-tokenizer"
    shutil.copytree(exported, tokenizer_only, ignore=shutil.ignore_patterns("*.safetensors"))
    server = VllmServer(vllm_python, exported, tmp_path / "vllm.log", "readme-key")
    try:
        server.start()
        settings = {"endpoint": server.url, "remoteModel": SERVED, "apiKeyEnv": KEY_ENV,
                    "model": str(tokenizer_only), "filter": "off"}  # fmt: skip
        with plugin_nvim(
            manifest, "0.11", editor_env, settings, server_python, tmp_path,
            extra_env={KEY_ENV: "readme-key"},
        ) as nvim:  # fmt: skip
            open_python_file(nvim, "readme.py", "")
            wait_until(lambda: status(nvim) == "ready", READY_TIMEOUT, "codegen/status ready")
            message: Any = nvim.exec_lua("return require('codegen_lsp.client').status().message")
            assert f"remote {SERVED} at {server.url}" in message, message
            nvim.input("ivalue = ")
            text = wait_until(lambda: ghost(nvim), SUGGESTION_TIMEOUT, "ghost text via vLLM")
            assert text.strip(), text
    finally:
        server.stop()
