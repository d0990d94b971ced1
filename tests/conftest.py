"""Shared test fixtures: tiny random-weight CodeGen checkpoints, the tokenizer, cursors.

``tiny_checkpoint`` is a random-weight CodeGen (n_positions 256, 2 layers, width 64) with
the CodeGen tokenizer beside it: it loads like a published checkpoint and generates fast.
``steady_checkpoint`` is the same model with its output bias pinned on the token ``" 0"``,
so its output is predictable (``" 0 0 0 ..."``) for tests that need a non-empty suggestion;
``choice_checkpoint`` pins three tokens (``" x"``, ``" y"``, ``" z"``), so sampled output is
a random string of those three. The helpers behind them are in ``support.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch

# Test modules import ``support`` and ``raw_lsp`` from this folder, and so do the editor
# tests one folder down: put it on sys.path whatever pytest's import mode.
TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from support import (  # noqa: E402
    CHOICE_TOKENS,
    STEADY_TOKEN,
    TOKENIZER_DIR,
    default_model_dir,
    write_tiny_checkpoint,
)


@pytest.fixture(scope="session", autouse=True)
def weight_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Quantized-weight cache entries of every test (and the servers it starts) go to a temp
    folder, never the user's ~/.cache (tests that check the cache point it elsewhere)."""
    import os

    previous = os.environ.get("CODEGEN_WEIGHT_CACHE_DIR")
    os.environ["CODEGEN_WEIGHT_CACHE_DIR"] = str(tmp_path_factory.mktemp("weight-cache"))
    yield
    if previous is None:
        os.environ.pop("CODEGEN_WEIGHT_CACHE_DIR", None)
    else:
        os.environ["CODEGEN_WEIGHT_CACHE_DIR"] = previous


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

    return CodeGenTokenizer.from_dir(TOKENIZER_DIR)


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
    """A tiny checkpoint whose output is always ``" 0"`` tokens."""
    directory = tmp_path_factory.mktemp("steady-codegen")
    return write_tiny_checkpoint(directory, pinned=[STEADY_TOKEN])


@pytest.fixture(scope="session")
def choice_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint that only ever writes ``" x"``, ``" y"`` or ``" z"``, about evenly
    when sampled: two samples of a dozen tokens differ, and no filter cuts them."""
    directory = tmp_path_factory.mktemp("choice-codegen")
    return write_tiny_checkpoint(directory, pinned=CHOICE_TOKENS)


@pytest.fixture(scope="session")
def long_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``steady_checkpoint`` with a 2048-token context: long generations for cancel
    tests (thousands of steps of a few milliseconds each)."""
    directory = tmp_path_factory.mktemp("long-codegen")
    return write_tiny_checkpoint(directory, pinned=[STEADY_TOKEN], n_positions=2048)


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
