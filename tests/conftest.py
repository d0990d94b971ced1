"""Shared test fixtures: tiny random-weight CodeGen checkpoints and LSP client helpers.

``tiny_checkpoint`` is a random-weight CodeGen (n_positions 256, 2 layers, width 64) with
the CodeGen tokenizer beside it: it loads like a published checkpoint and generates fast.
``steady_checkpoint`` is the same model with its output bias pinned on the token ``" x"``,
so greedy generation is predictable (``" x x x ..."``) for tests that need a non-empty
suggestion. ``default_model_dir()`` is the shipped default model, or None while it does not
exist (tests on it skip then).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from codegen_lsp.codegen.checkpoint import save_checkpoint
from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.commands.bench.synthetic import copy_tokenizer

TOKENIZER_FIXTURE = Path(__file__).parent / "fixtures" / "codegen-tokenizer"
TINY_SHAPE = dict(n_positions=256, n_embd=64, n_layer=2, n_head=4, rotary_dim=8)
STEADY_TOKEN = 2124  # " x" in the CodeGen tokenizer
SERVER_COMMAND = [sys.executable, "-m", "codegen_lsp", "serve"]  # also spelled out per module


def tiny_model(
    seed: int = 0, steady_token: int | None = None, n_positions: int = 256
) -> CodeGenForCausalLM:
    """A tiny random-weight CodeGen; with ``steady_token``, greedy always picks that id."""
    config = CodeGenConfig(vocab_size=50304, **{**TINY_SHAPE, "n_positions": n_positions})
    model = CodeGenForCausalLM(config)
    model.init_weights(seed=seed)
    if steady_token is not None:
        with torch.no_grad():
            model.lm_head.bias[steady_token] += 50.0
    return model.eval()


def write_tiny_checkpoint(
    directory: Path, steady_token: int | None = None, n_positions: int = 256
) -> Path:
    """Save a tiny model and copy the tokenizer fixture beside it."""
    save_checkpoint(tiny_model(steady_token=steady_token, n_positions=n_positions), directory)
    copy_tokenizer(TOKENIZER_FIXTURE, directory)
    return directory


def default_model_dir() -> Path | None:
    """The shipped default model's directory, or None if it is not there (yet)."""
    try:
        from codegen_lsp.codegen.default import default_model_dir as shipped
    except ImportError:
        return None
    try:
        path = Path(shipped())
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return None
    return path if (path / "config.json").is_file() else None


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and a loaded machine hurts threads most."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    """The real CodeGen tokenizer (the fixture built from GPT-2's ranks)."""
    from codegen_lsp.codegen.tokenizer import CodeGenTokenizer

    return CodeGenTokenizer.from_dir(TOKENIZER_FIXTURE)


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The shipped default model's directory; skips the test while there is none."""
    path = default_model_dir()
    if path is None:
        pytest.skip("the default model is not shipped yet")
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a tiny random-weight CodeGen checkpoint with its tokenizer."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-codegen"))


@pytest.fixture(scope="session")
def steady_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose greedy output is always ``" x"`` tokens."""
    directory = tmp_path_factory.mktemp("steady-codegen")
    return write_tiny_checkpoint(directory, steady_token=STEADY_TOKEN)


@pytest.fixture(scope="session")
def long_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``steady_checkpoint`` with a 2048-token context: long generations for cancel
    tests (thousands of steps of a few milliseconds each)."""
    directory = tmp_path_factory.mktemp("long-codegen")
    return write_tiny_checkpoint(directory, steady_token=STEADY_TOKEN, n_positions=2048)


def cpu_settings(model: Path | str, **extra: Any) -> dict[str, Any]:
    """``codegen`` settings for a small model on the CPU in float32."""
    return {
        "model": str(model),
        "device": "cpu",
        "dtype": "float32",
        "quantize": "none",
        "threads": 1,
        **extra,
    }


def as_dict(value: Any) -> Any:
    """A pygls ``Object`` (namedtuple) result as plain dicts/lists."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [as_dict(v) for v in value]
    return value


async def server_status(client: Any) -> dict[str, Any]:
    """The ``codegen/status`` request's answer."""
    return as_dict(await client.protocol.send_request_async("codegen/status", None))


async def wait_for_state(client: Any, states: tuple[str, ...] = ("ready",), timeout: float = 90):
    """Poll ``codegen/status`` until its state is one of ``states``; return the status."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = await server_status(client)
        if status["state"] in states:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"server never reached {states}: last status {status}")


CURSOR_MARK = "█"


def cursor_from_marked(marked: str, language_id: str = "python", path: str = "t.py") -> Any:
    """A completion Cursor from text with the cursor marked by ``█``."""
    from codegen_lsp.completion.context import Cursor
    from codegen_lsp.completion.languages import language_for
    from codegen_lsp.server.documents import split_lines

    offset = marked.index(CURSOR_MARK)
    text = marked.replace(CURSOR_MARK, "")
    line = marked[:offset].count("\n")
    column = offset - (marked.rfind("\n", 0, offset) + 1)
    return Cursor.at(split_lines(text), line, column, language_for(language_id, path), path)


@pytest.fixture
def marked() -> Any:
    """``marked(text, language_id="python")``: a Cursor at the ``█`` in ``text``."""
    return cursor_from_marked


@pytest.fixture(scope="session")
def lsp_tools() -> SimpleNamespace:
    """Helpers for LSP tests (test modules do not import conftest): ``settings(model,
    **extra)``, ``status(client)``, ``wait_for_state(client, states, timeout)``,
    ``as_dict(value)`` and ``server_command``."""
    return SimpleNamespace(
        settings=cpu_settings,
        status=server_status,
        wait_for_state=wait_for_state,
        as_dict=as_dict,
        server_command=SERVER_COMMAND,
    )
