"""Columns in the negotiated position encoding <-> Python string indices (code points).

LSP counts ``Position.character`` in UTF-16 code units unless the client and server agreed
on ``utf-8`` or ``utf-32`` (``positionEncoding``). Python strings index code points, so an
emoji is one index but two UTF-16 units and four UTF-8 bytes. A column that falls inside a
character rounds down to the start of that character; a column past the end of the line
means the end of the line (as the specification says).
"""

from __future__ import annotations

UTF8 = "utf-8"
UTF16 = "utf-16"
UTF32 = "utf-32"
ENCODINGS = (UTF8, UTF16, UTF32)


def _units(ch: str, encoding: str) -> int:
    code = ord(ch)
    if encoding == UTF16:
        return 2 if code > 0xFFFF else 1
    if code < 0x80:
        return 1
    if code < 0x800:
        return 2
    return 3 if code < 0x10000 else 4


def to_codepoints(text: str, units: int, encoding: str) -> int:
    """Index into ``text`` for a column of ``units`` code units (clamped to the line)."""
    if units <= 0:
        return 0
    if encoding == UTF32 or text.isascii():
        return min(units, len(text))
    head = text[:units]  # a code point takes at least one unit: the column lies in here
    codec, width = ("utf-16-le", 2) if encoding == UTF16 else ("utf-8", 1)
    try:
        data = head.encode(codec)[: width * units]
    except UnicodeEncodeError:  # lone surrogates: counted one by one
        return _count_to(text, units, encoding)
    # a character cut by the column is dropped: the column rounds down to its start
    return len(data.decode(codec, "ignore"))


def _count_to(text: str, units: int, encoding: str) -> int:
    count = 0
    for i, ch in enumerate(text):
        count += _units(ch, encoding)
        if count > units:
            return i
    return len(text)


def from_codepoints(text: str, index: int, encoding: str) -> int:
    """Column in code units of the encoding for index ``index`` of ``text``."""
    prefix = text[: max(index, 0)]
    if encoding == UTF32 or prefix.isascii():
        return len(prefix)
    if encoding == UTF16:
        return len(prefix.encode("utf-16-le", "surrogatepass")) // 2
    return len(prefix.encode("utf-8", "surrogatepass"))


def normalize_encoding(value: object) -> str:
    """The encoding name for a ``PositionEncodingKind`` (or its string); UTF-16 otherwise."""
    text = str(getattr(value, "value", value) or UTF16).lower()
    return text if text in ENCODINGS else UTF16
