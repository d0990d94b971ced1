"""Cursor context, prompt header and the token window (context.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.completion.context import (
    build_prompt,
    header_text,
    token_budget,
    window_start,
)
from codegen_lsp.completion.languages import language_for

FIXTURE = Path(__file__).parent / "fixtures" / "codegen-tokenizer"


@pytest.fixture(scope="module")
def encode():
    return CodeGenTokenizer.from_dir(FIXTURE).encode


def chars(text: str) -> list[int]:
    """A stand-in tokenizer: one token per character."""
    return [ord(c) for c in text]


def test_cursor_split_and_surroundings(marked) -> None:
    cursor = marked("a = 1\nb = f(█x)\nc = 3\n")
    assert (cursor.line, cursor.before, cursor.after) == (1, "b = f(", "x)")
    assert cursor.text_before(100) == "a = 1\nb = f("
    assert cursor.text_before(3) == " f("
    assert cursor.text_after(100) == "x)\nc = 3\n"
    assert cursor.next_nonblank_line() == "c = 3"
    assert marked("    if x:█").indent == "    "


def test_cursor_column_is_clamped() -> None:
    from codegen_lsp.completion.context import Cursor

    cursor = Cursor.at(["abc\n", "d"], 0, 99, language_for("python"))
    assert (cursor.before, cursor.after) == ("abc", "")


def test_header_text() -> None:
    assert header_text(language_for("python"), "pkg/a.py") == (
        "# language: python\n# path: pkg/a.py\n"
    )
    assert header_text(language_for("go"), "") == "// language: go\n"
    assert header_text(language_for("markdown"), "x.md") == ""


def test_token_budget() -> None:
    assert token_budget(2048, 64) == 1984
    assert token_budget(2048, 64, context_tokens=1024) == 1024
    assert token_budget(256, 300) == 0


def test_window_keeps_everything_that_fits() -> None:
    assert window_start([3, 3, 3], first=0, budget=100, previous=None) == 0


def test_window_jumps_to_leave_room() -> None:
    counts = [10] * 20  # 200 tokens before the cursor, budget 100
    start = window_start(counts, 0, 100, previous=None)
    assert sum(counts[start:]) <= 75  # filled to at most 3/4 of the budget
    assert sum(counts[start - 1 :]) > 75


def test_window_is_stable_while_typing() -> None:
    counts = [10] * 20
    start = window_start(counts, 0, 100, previous=None)
    # a few more lines typed: same start while the window still fits
    grown = counts + [10, 10]
    assert window_start(grown, 0, 100, previous=start) == start
    # grown past the budget: one large jump forward
    grown = counts + [10] * 4
    jumped = window_start(grown, 0, 100, previous=start)
    assert jumped - start >= 3


def test_window_restarts_when_cursor_moves_far_up() -> None:
    counts = [10] * 50
    start = window_start(counts, 0, 100, previous=None)
    # cursor now 2 lines below the old start: that window would be tiny
    moved = counts[: start + 2]
    new_start = window_start(moved, 0, 100, previous=start)
    assert new_start < start


def test_window_with_offset_and_huge_cursor_line() -> None:
    assert window_start([5, 5, 500], first=10, budget=100, previous=None) == 12


def test_build_prompt_fits_and_starts_at_a_line(marked) -> None:
    lines = "".join(f"line_{i} = {i}\n" for i in range(200))
    cursor = marked(lines + "x = █")
    prompt = build_prompt(cursor, chars, budget=300)
    assert len(prompt.ids) <= 300
    assert prompt.text.endswith("x = ")
    assert prompt.text.startswith("line_")
    assert not prompt.truncated


def test_build_prompt_keeps_start_across_keystrokes(marked, encode) -> None:
    body = "".join(f"value_{i} = compute({i}, 'text')\n" for i in range(300))
    first = build_prompt(marked(body + "resu█"), encode, budget=400)
    second = build_prompt(
        marked(body + "resul█"), encode, budget=400, previous_start=first.start_line
    )
    assert second.start_line == first.start_line
    common = 0
    for a, b in zip(first.ids, second.ids, strict=False):
        if a != b:
            break
        common += 1
    assert common >= len(first.ids) - 2  # only the last token or two differ


def test_build_prompt_header(marked) -> None:
    header = "# language: python\n"
    prompt = build_prompt(marked("x = █"), chars, budget=100, header=header)
    assert prompt.ids[: len(header)] == chars(header)
    assert prompt.header == header


def test_build_prompt_cuts_a_huge_single_line(marked) -> None:
    cursor = marked("x" * 10_000 + "█")
    prompt = build_prompt(cursor, chars, budget=50)
    assert len(prompt.ids) == 50
    assert prompt.truncated


def test_build_prompt_empty_document(marked) -> None:
    assert build_prompt(marked("█"), chars, budget=10).ids == []


def test_build_prompt_bos_at_the_start_of_a_file(marked) -> None:
    prompt = build_prompt(marked("import os\nx = █"), chars, budget=100, bos=0)
    assert prompt.ids == [0, *chars("import os\nx = ")]


def test_build_prompt_no_bos_inside_a_file(marked) -> None:
    lines = "".join(f"line_{i} = {i}\n" for i in range(200))
    prompt = build_prompt(marked(lines + "x = █"), chars, budget=300, bos=0)
    assert prompt.start_line > 0 and prompt.ids[0] == ord("l")
    cut = build_prompt(marked("x" * 500 + "█"), chars, budget=100, bos=0)
    assert cut.truncated and 0 not in cut.ids  # a window cut inside the line: not a file start
    assert len(cut.ids) <= 100


def test_build_prompt_bos_before_a_header(marked) -> None:
    header = "# language: python\n"
    lines = "".join(f"line_{i} = {i}\n" for i in range(200))
    prompt = build_prompt(marked(lines + "x = █"), chars, budget=300, header=header, bos=0)
    assert prompt.ids[: 1 + len(header)] == [0, *chars(header)]
    assert len(prompt.ids) <= 300
