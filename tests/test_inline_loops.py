"""No looping text inside a line: the in-line repetition filter on the texts users saw, on
code that must stay as it is, and on a replay of 200 held-out lines (pytest's own source,
outside the shipped model's training corpus) through the completion path on the shipped
model: no suggestion keeps a token, or a group of up to 4 tokens, repeated 4 times in a row.
"""

from __future__ import annotations

import threading
from pathlib import Path

import _pytest.python
import pytest

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import Completer, CompletionOptions, EngineInfo
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.postprocess import Around, cut_inline_loops, postprocess
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.loader import load_engine


@pytest.mark.parametrize(
    "text,kept",
    [
        ("<response> <response> <response> <response> <response>", "<response>"),
        ('s = "a[0] = "a[0] = "a[0] = "a[0] = ', 's = "a[0]'),
        ("return 1\nitems = [x.name x.name x.name x.name]", "return 1\nitems = [x.name"),
        ("f(a, b) f(a, b) f(a, b) f(a, b)", "f(a, b)"),
        ("for arg in arg2fixture_fixture_fixture_fixture_", "for arg in arg2fixture_"),
    ],
)  # fmt: skip
def test_looping_lines_are_cut_after_the_first_copy(text: str, kept: str) -> None:
    assert cut_inline_loops(text, Around()) == kept
    assert postprocess([text], Around()) == [kept]


@pytest.mark.parametrize(
    "text",
    ["x = [0, 0, 0, 0]", "table = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00]", "a.b.c.d.e",
     'print("=" * 40)  # ==========', "foo(bar(baz(qux(1))))", "return (a, b, a, b)",
     "x = y = z = 0", "if a and b and c:", "def __init__(self, a_b_c_d):"],
)  # fmt: skip
def test_code_that_repeats_legitimately_is_kept(text: str) -> None:
    assert cut_inline_loops(text, Around()) == text


def repeated_run(ids: list[int], longest_group: int = 4, copies: int = 4) -> bool:
    """A group of 1..longest_group token ids repeated ``copies`` times in a row."""
    for period in range(1, longest_group + 1):
        for i in range(len(ids) - period * copies + 1):
            group = ids[i : i + period]
            if all(ids[i + k] == group[k % period] for k in range(period * copies)):
                return True
    return False


def held_out_lines(count: int = 200) -> tuple[list[str], list[int]]:
    """A source file outside the training corpus, and ``count`` line numbers to complete."""
    lines = Path(_pytest.python.__file__).read_text(encoding="utf-8").split("\n")
    picked = [i for i, line in enumerate(lines) if len(line.strip()) >= 12 and i > 20]
    step = max(1, len(picked) // count)
    return lines, picked[::step][:count]


def test_replay_of_held_out_lines_has_no_repeated_tokens(default_model: Path) -> None:
    engine = load_engine(EngineSpec(device="cpu"))
    info = EngineInfo.of(engine)
    options = CompletionOptions(max_new_tokens=32, candidates=1)
    lines, picked = held_out_lines()
    assert len(picked) == 200
    completer = Completer()
    raw_loops, shown = 0, 0
    language = language_for("python", "python.py")
    for n, i in enumerate(picked):
        column = len(lines[i]) // 2
        cursor = Cursor.at(lines, i, column, language, "python.py")
        prepared = completer.prepare(f"doc{n}", cursor, info, options)
        result = engine.generate(prepared.request, threading.Event())
        raw_loops += any(repeated_run(c.token_ids) for c in result.candidates)
        for text in completer.finish(prepared, result):
            shown += 1
            assert not repeated_run(engine.encode(text)), (lines[i][:column], text)
    print(f"held-out replay: {raw_loops} of 200 raw outputs looped; {shown} suggestions shown")
    assert shown > 50  # the filter cuts loops, it does not silence the model
