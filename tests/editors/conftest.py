"""Fixtures for the editor tests: the tools from editors/scripts/setup-test-editors, a model
for the real `codegen-lsp serve`, and the server settings every editor sends.

Model: the shipped default model when it exists (``codegen_lsp/default_model/``), else a
tiny "echo" checkpoint written here. ``CODEGEN_LSP_EDITORS_MODEL=tiny|default|<dir>``
overrides the choice.

The echo checkpoint is a chain model (``support.write_chain_checkpoint``: the next token
depends on the last one only), set so that greedy decoding after any other token writes
`` value = 1`` then ``\\n    value = 1`` lines. That makes suggestions non-empty and
the same on every run, whatever the prompt.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from support import TOKENIZER_DIR, write_chain_checkpoint

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "editors" / "scripts" / "setup-test-editors"
CACHE = Path(
    os.environ.get("CODEGEN_LSP_TEST_EDITORS", Path.home() / ".cache" / "codegen-lsp-test-editors")
)
DEFAULT_MODEL = REPO / "codegen_lsp" / "default_model"

# The echo model's chain: any other token -> " value" -> " =" -> " 1" -> "\n" -> "    " -> "value"
ECHO_CHAIN = [(None, " value"), (" value", " ="), (" =", " 1"), (" 1", "\n"), ("\n", "    "),
              ("    ", "value"), ("value", " =")]  # fmt: skip


def _skip(reason: str) -> None:
    pytest.skip(f"{reason} (run editors/scripts/setup-test-editors first)")


@pytest.fixture(scope="session")
def manifest() -> dict:
    """Paths of the editors and tools that the setup script installed."""
    path = CACHE / "manifest.json"
    if not path.is_file():
        _skip(f"{path} not found")
    return json.loads(path.read_text())


def write_echo_checkpoint(directory: Path) -> Path:
    """Write the tiny deterministic "echo" CodeGen checkpoint (see the module docstring)."""
    from codegen_lsp.codegen.tokenizer import CodeGenTokenizer

    tokenizer = CodeGenTokenizer.from_dir(TOKENIZER_DIR)

    def token(text: str) -> int:
        ids = tokenizer.encode(text)
        assert len(ids) == 1, (text, ids)
        return ids[0]

    chain = [(None if s is None else token(s), token(t)) for s, t in ECHO_CHAIN]
    return write_chain_checkpoint(directory, chain, n_positions=2048)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The `model` setting for the server: "" (the shipped model) or a checkpoint dir."""
    choice = os.environ.get("CODEGEN_LSP_EDITORS_MODEL", "auto")
    if choice == "default" or (choice == "auto" and (DEFAULT_MODEL / "config.json").is_file()):
        return ""
    if choice not in ("auto", "tiny"):
        return choice
    return str(write_echo_checkpoint(tmp_path_factory.mktemp("echo-model")))


@pytest.fixture(scope="session")
def server_settings(model_dir: str) -> dict:
    """The `codegen` settings every editor test sends (camelCase, as the server reads them)."""
    return {
        "model": model_dir,
        "device": "cpu",
        "maxNewTokens": 12,
        "multiline": "always",
        "threads": 1,
        "filter": "off",  # the gate's own editor tests turn it on
    }


@pytest.fixture(scope="session")
def server_cmd() -> list[str] | None:
    """An explicit server command (JSON list in CODEGEN_LSP_EDITORS_SERVER_CMD), else None:
    the editors then find `codegen-lsp` on PATH or run this Python with `-m codegen_lsp`."""
    if os.environ.get("CODEGEN_LSP_EDITORS_SERVER_CMD"):
        return json.loads(os.environ["CODEGEN_LSP_EDITORS_SERVER_CMD"])
    import codegen_lsp.commands.serve  # noqa: F401 - fails loudly if the server cannot start

    return None


@pytest.fixture(scope="session")
def server_python() -> str:
    """The interpreter that has codegen_lsp: `python -m codegen_lsp serve`."""
    return sys.executable


@pytest.fixture(scope="session")
def editor_env() -> dict[str, str]:
    """Environment for editors: this Python's scripts dir first on PATH (`codegen-lsp`)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
