"""Fixtures for the editor tests: the tools from editors/scripts/setup-test-editors, a model
for the real `codegen-lsp serve`, and the server settings every editor sends.

Model: the shipped default model when it exists (``codegen_lsp/default_model/``), else a
tiny "echo" checkpoint written here. ``CODEGEN_LSP_EDITORS_MODEL=tiny|default|<dir>``
overrides the choice.

The echo checkpoint is a 1-layer CodeGen whose attention and MLP write nothing, so the
next token depends on the last one only; its embedding and head are set so that greedy
decoding after any other token writes `` value = 1`` then ``\\n    value = 1`` lines. That
makes suggestions non-empty and the same on every run, whatever the prompt.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "editors" / "scripts" / "setup-test-editors"
CACHE = Path(
    os.environ.get("CODEGEN_LSP_TEST_EDITORS", Path.home() / ".cache" / "codegen-lsp-test-editors")
)
TOKENIZER = REPO / "tests" / "fixtures" / "codegen-tokenizer"
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
    import torch

    from codegen_lsp.codegen.checkpoint import save_checkpoint
    from codegen_lsp.codegen.config import CodeGenConfig
    from codegen_lsp.codegen.modeling import CodeGenForCausalLM
    from codegen_lsp.codegen.tokenizer import CodeGenTokenizer

    tokenizer = CodeGenTokenizer.from_dir(TOKENIZER)

    def token(text: str) -> int:
        ids = tokenizer.encode(text)
        assert len(ids) == 1, (text, ids)
        return ids[0]

    config = CodeGenConfig(
        vocab_size=51200, n_positions=2048, n_embd=64, n_layer=1, n_head=4, rotary_dim=8
    )
    model = CodeGenForCausalLM(config)
    model.init_weights(seed=0)
    with torch.no_grad():
        for block in model.transformer.h:  # blocks add nothing: hidden = wte[token]
            block.attn.out_proj.weight.zero_()
            block.mlp.fc_out.weight.zero_()
            block.mlp.fc_out.bias.zero_()
        wte = model.transformer.wte.weight
        head = model.lm_head
        wte.zero_()
        wte[:, 0] = 1.0  # every token starts as "state 0"
        head.weight.zero_()
        head.bias.zero_()
        for state, (source, target) in enumerate(ECHO_CHAIN):
            if source is not None:
                wte[token(source)] = 0.0
                wte[token(source), state] = 1.0
            head.weight[token(target), state] = 10.0
    save_checkpoint(model, directory)
    for file in TOKENIZER.iterdir():
        shutil.copy(file, directory / file.name)
    return directory


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
    }


@pytest.fixture(scope="session")
def server_cmd() -> list[str] | None:
    """An explicit server command (JSON list in CODEGEN_LSP_EDITORS_SERVER_CMD), else None:
    the editors then find `codegen-lsp` on PATH or run this Python with `-m codegen_lsp`."""
    if os.environ.get("CODEGEN_LSP_EDITORS_SERVER_CMD"):
        return json.loads(os.environ["CODEGEN_LSP_EDITORS_SERVER_CMD"])
    try:
        import codegen_lsp.server.main  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"codegen_lsp.server is not importable ({exc})")
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
