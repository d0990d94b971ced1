"""Documents, incremental sync and position encodings (documents.py, positions.py)."""

from __future__ import annotations

import random

import pytest
from lsprotocol import types

from codegen_lsp.server.documents import Document, split_lines
from codegen_lsp.server.positions import (
    UTF8,
    UTF16,
    UTF32,
    from_codepoints,
    normalize_encoding,
    to_codepoints,
)

LINE = 'x = "😀 名前"; y'  # emoji (2 UTF-16 units, 4 UTF-8 bytes), CJK (1 unit, 3 bytes)


@pytest.mark.parametrize(
    ("encoding", "units_before_y"),
    [(UTF16, 13), (UTF8, 19), (UTF32, 12)],
)
def test_columns_round_trip(encoding: str, units_before_y: int) -> None:
    index = LINE.index("y")
    assert from_codepoints(LINE, index, encoding) == units_before_y
    assert to_codepoints(LINE, units_before_y, encoding) == index
    for i in range(len(LINE) + 1):
        assert to_codepoints(LINE, from_codepoints(LINE, i, encoding), encoding) == i


def test_column_inside_a_character_rounds_down_and_past_end_clamps() -> None:
    emoji = LINE.index("😀")
    assert to_codepoints(LINE, from_codepoints(LINE, emoji, UTF16) + 1, UTF16) == emoji
    assert to_codepoints(LINE, 999, UTF16) == len(LINE)
    assert to_codepoints(LINE, 999, UTF8) == len(LINE)


def test_normalize_encoding() -> None:
    assert normalize_encoding(types.PositionEncodingKind.Utf8) == UTF8
    assert normalize_encoding("utf-32") == UTF32
    assert normalize_encoding(None) == UTF16
    assert normalize_encoding("latin-1") == UTF16


def test_split_lines_uses_lsp_line_breaks() -> None:
    assert split_lines("a\nb\r\nc\rd") == ["a\n", "b\r\n", "c\r", "d"]
    assert split_lines("a\n") == ["a\n", ""]
    assert split_lines("") == [""]
    assert split_lines("a\x0cb\u2028c") == ["a\x0cb\u2028c"]  # not line breaks in LSP


def change(doc: Document, start: tuple[int, int], end: tuple[int, int], text: str, enc=UTF16):
    rng = types.Range(types.Position(*start), types.Position(*end))
    doc.apply(types.TextDocumentContentChangePartial(range=rng, text=text), enc)


def test_incremental_edits() -> None:
    doc = Document.open("file:///a.py", "python", 1, "ab\ncd")
    change(doc, (0, 1), (0, 1), "X\n")
    assert doc.text == "aX\nb\ncd"
    change(doc, (0, 1), (2, 1), "")
    assert doc.text == "ad"
    change(doc, (5, 0), (5, 0), "!")  # past the end: appended
    assert doc.text == "ad!"
    doc.apply(types.TextDocumentContentChangeWholeDocument(text="new\n"), UTF16)
    assert doc.lines == ["new\n", ""]


def test_edit_merging_cr_and_lf() -> None:
    doc = Document.open("u", "python", 1, "a\rX\nb")
    change(doc, (1, 0), (1, 1), "")
    assert doc.lines == ["a\r\n", "b"]


def test_edits_in_utf16_after_emoji() -> None:
    doc = Document.open("u", "python", 1, LINE + "\n")
    y = from_codepoints(LINE, LINE.index("y"), UTF16)
    change(doc, (0, y), (0, y + 1), "z")
    assert doc.text == LINE[:-1] + "z\n"
    assert doc.index(types.Position(0, y), UTF16) == (0, LINE.index("y"))
    assert doc.position(0, LINE.index("y"), UTF8) == types.Position(0, 19)
    assert doc.index(types.Position(5, 0), UTF16) is None


def test_random_edits_match_a_string_model() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", "\n", "\r\n", "😀", "名", " "]
    text = "start\n"
    doc = Document.open("u", "plaintext", 1, text)
    for _ in range(400):
        lines = split_lines(text)
        l1 = rng.randrange(len(lines))
        l2 = rng.randrange(l1, len(lines))
        c1 = rng.randrange(len(lines[l1].rstrip("\r\n")) + 1)
        c2 = rng.randrange(len(lines[l2].rstrip("\r\n")) + 1) if l2 > l1 else c1
        c2 = max(c1, c2) if l1 == l2 else c2
        new = "".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))
        start = sum(len(x) for x in lines[:l1]) + c1
        end = sum(len(x) for x in lines[:l2]) + c2
        enc = rng.choice([UTF8, UTF16, UTF32])
        s = (l1, from_codepoints(lines[l1].rstrip("\r\n"), c1, enc))
        e = (l2, from_codepoints(lines[l2].rstrip("\r\n"), c2, enc))
        change(doc, s, e, new, enc)
        text = text[:start] + new + text[end:]
        assert doc.text == text
        assert doc.lines == split_lines(text)
