"""Fill-in-the-middle for checkpoints with CodeGen2's tokenizer: the exact prompt ids, the
stop at ``<eom>``, CodeGen1 never infilling, the suffix bound, and the served text."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from raw_lsp import RawServer
from support import (
    FIM_TOKENS,
    cpu_settings,
    write_chain_checkpoint,
    write_fim_tokenizer,
    write_tiny_checkpoint,
)

from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import FIM_SUFFIX_TOKENS, Completer, CompletionOptions, EngineInfo
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.postprocess import Around, cut_at_next_line
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.loader import load_engine

PY = language_for("python", "a.py")
BEFORE = "def area(w, h):\n    return "
AFTER = "\n\n\nprint(area(2, 3))\n"
CPU = dict(device="cpu", dtype="float32", quantize="none")


@pytest.fixture(scope="module")
def fim_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fim_tokenizer(tmp_path_factory.mktemp("codegen2-tokenizer"))


@pytest.fixture(scope="module")
def fim_chain(tmp_path_factory, fim_tokenizer_dir) -> Path:
    """Writes " x" after any token, then <eom> after " x"."""
    tokenizer = CodeGenTokenizer.from_dir(fim_tokenizer_dir)
    x, eom = tokenizer.encode(" x")[0], tokenizer.fim_ids()[2]
    directory = tmp_path_factory.mktemp("fim-chain")
    return write_chain_checkpoint(directory, [(None, x), (x, eom)], tokenizer_dir=fim_tokenizer_dir)


def cursor_at(before: str, after: str) -> Cursor:
    lines = (before + after).split("\n")
    line = before.count("\n")
    column = len(before.split("\n")[-1])
    return Cursor.at([s + "\n" for s in lines[:-1]] + [lines[-1]], line, column, PY, "a.py")


def test_the_infill_prompt_ids_and_the_stop_at_eom(fim_chain: Path) -> None:
    engine = load_engine(EngineSpec(model=str(fim_chain), **CPU))
    mask, sep, eom = engine.info.fim
    assert [engine.tokenizer.decode([i]) for i in engine.info.fim] == list(FIM_TOKENS)
    prepared = Completer().prepare("k", cursor_at(BEFORE, AFTER), EngineInfo.of(engine),
                                   CompletionOptions())  # fmt: skip
    eos = engine.tokenizer.eos_id
    want = [*engine.encode(BEFORE), mask, *engine.encode(AFTER), eos, sep, mask]
    assert prepared.request.prompt == want
    assert prepared.request.stop_ids == (eom,) and not prepared.request.heal
    result = engine.generate(prepared.request, threading.Event())
    (candidate,) = result.candidates
    assert candidate.text == " x" and candidate.finish_reason == "eos"
    assert candidate.token_ids == engine.encode(" x")  # <eom> ended it, not part of it


def test_no_text_after_the_cursor_is_a_plain_prompt_unless_fim_is_on(fim_chain: Path) -> None:
    engine = load_engine(EngineSpec(model=str(fim_chain), **CPU))
    info = EngineInfo.of(engine)
    plain = Completer().prepare("k", cursor_at(BEFORE, ""), info, CompletionOptions())
    assert plain.request.prompt == engine.encode(BEFORE) and plain.request.stop_ids == ()
    forced = Completer().prepare("k", cursor_at(BEFORE, ""), info, CompletionOptions(fim="on"))
    assert forced.request.prompt[-3:] == [
        engine.tokenizer.eos_id,
        *engine.info.fim[1::-1][::-1][1:],
        engine.info.fim[0],
    ]
    off = Completer().prepare("k", cursor_at(BEFORE, AFTER), info, CompletionOptions(fim="off"))
    assert engine.info.fim[0] not in off.request.prompt


def test_codegen1_never_gets_the_infill_format(tmp_path: Path) -> None:
    engine = load_engine(EngineSpec(model=str(write_tiny_checkpoint(tmp_path / "cg1")), **CPU))
    assert engine.info.fim is None and engine.info.family == "codegen"
    prepared = Completer().prepare("k", cursor_at(BEFORE, AFTER), EngineInfo.of(engine),
                                   CompletionOptions(fim="on"))  # fmt: skip
    assert prepared.request.stop_ids == ()
    assert prepared.request.prompt == engine.encode(BEFORE)[-len(prepared.request.prompt) :]


def test_the_suffix_is_bounded(fim_chain: Path) -> None:
    engine = load_engine(EngineSpec(model=str(fim_chain), **CPU))
    long_after = "\n" + "".join(f"value_{i} = {i}\n" for i in range(400))
    prepared = Completer().prepare("k", cursor_at(BEFORE, long_after), EngineInfo.of(engine),
                                   CompletionOptions(context_tokens=1024))  # fmt: skip
    ids = prepared.request.prompt
    mask = engine.info.fim[0]
    suffix = ids[ids.index(mask) + 1 : -3]
    assert 0 < len(suffix) <= min(FIM_SUFFIX_TOKENS, 1024 // 4)
    assert suffix == engine.encode(long_after)[: len(suffix)]
    assert len(ids) + prepared.request.max_new_tokens <= engine.n_ctx


def test_a_suggestion_stops_before_the_next_line_of_the_document() -> None:
    around = Around("", "\n    total = a + b\n    return total\n")
    text = "\n    a = 1\n    total = a + b\n    return total"
    assert cut_at_next_line(text, around) == "\n    a = 1"
    assert cut_at_next_line("x = 1", around) == "x = 1"


def test_served_inline_text_is_the_infill(tmp_path: Path, fim_chain: Path) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize({"codegen": cpu_settings(fim_chain)})
        uri = "file:///work/a.py"
        server.open(uri, BEFORE + AFTER)
        items = server.inline(uri, 1, len("    return "))["result"]["items"]
        assert [item["insertText"] for item in items] == [" x"]
    finally:
        server.close()
