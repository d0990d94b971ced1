"""Open documents, kept as lists of lines and updated by incremental changes.

Lines end where LSP says they do (``\\n``, ``\\r\\n`` or ``\\r``; not at the other breaks
``str.splitlines`` knows), each stored with its line break, the last one without. An edit
rebuilds only the lines it touches, so a 5 MB document costs little per keystroke, and the
text around a cursor is sliced from the lines it needs. Lone UTF-16 surrogates (a JSON
``"\\ud800"`` without its pair, which some clients send) become U+FFFD on the way in: they
cannot be encoded or tokenized, and U+FFFD has the same width in every position encoding.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

from lsprotocol import types

from codegen_lsp.completion.neighbors import INDEX_LINES, clip
from codegen_lsp.completion.recent_edits import RecentEdits
from codegen_lsp.server.positions import from_codepoints, to_codepoints

CLOSED_CHARS = 2_000_000  # characters kept of recently closed documents, over all of them
_serials = itertools.count(1)

_BREAK = re.compile(r"\r\n|\r|\n")
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD (other text is returned as is)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def split_lines(text: str) -> list[str]:
    """``text`` as lines with their breaks; the last element has none (maybe empty)."""
    if "\r" not in text:
        parts = text.split("\n")
        return [p + "\n" for p in parts[:-1]] + [parts[-1]]
    out: list[str] = []
    pos = 0
    for m in _BREAK.finditer(text):
        out.append(text[pos : m.end()])
        pos = m.end()
    out.append(text[pos:])
    return out


def content(line: str) -> str:
    """A line without its line break."""
    return line.rstrip("\r\n")


@dataclass
class Document:
    """One open text document."""

    uri: str
    language_id: str
    version: int
    lines: list[str] = field(default_factory=lambda: [""])
    # tells this document from an earlier one opened under the same uri (and version)
    serial: int = field(default_factory=lambda: next(_serials), compare=False)

    @property
    def state(self) -> tuple[int, int]:
        """(serial, version): equal only while the document's text is the same."""
        return self.serial, self.version

    @classmethod
    def open(cls, uri: str, language_id: str, version: int, text: str) -> Document:
        """A document with the given full text."""
        return cls(uri, language_id, version, split_lines(clean_text(text)))

    @property
    def text(self) -> str:
        """The full text."""
        return "".join(self.lines)

    def index(self, position: types.Position, encoding: str) -> tuple[int, int] | None:
        """(line, code point column) for a client position; None past the end of the file.
        A column past the end of its line means the end of the line."""
        if position.line >= len(self.lines) or position.line < 0:
            return None
        text = content(self.lines[position.line])
        return position.line, to_codepoints(text, position.character, encoding)

    def position(self, line: int, column: int, encoding: str) -> types.Position:
        """The client position of (line, code point column)."""
        line = min(max(line, 0), len(self.lines) - 1)
        return types.Position(line, from_codepoints(content(self.lines[line]), column, encoding))

    def _clamped(self, position: types.Position, encoding: str) -> tuple[int, int]:
        found = self.index(position, encoding)
        if found is None:
            last = len(self.lines) - 1
            return last, len(content(self.lines[last]))
        return found

    def apply(self, change: types.TextDocumentContentChangeEvent, encoding: str) -> None:
        """Apply one content change (incremental with a range, or the full text)."""
        if not isinstance(change, types.TextDocumentContentChangePartial):
            self.lines = split_lines(clean_text(change.text))
            return
        start = self._clamped(change.range.start, encoding)
        end = self._clamped(change.range.end, encoding)
        (sl, sc), (el, ec) = sorted((start, end))
        first = sl - 1 if sl > 0 else sl  # re-split the line above too: "\r" + "\n" merge
        prefix = "".join(self.lines[first:sl]) + self.lines[sl][:sc]
        suffix = self.lines[el][ec:]
        new = split_lines(prefix + clean_text(change.text) + suffix)
        if el < len(self.lines) - 1:
            new.pop()  # lines[el] kept its break; the last element is empty
        self.lines[first : el + 1] = new


class Documents:
    """The open documents by URI."""

    def __init__(self, remember_closed: int = 8, closed_chars: int = CLOSED_CHARS) -> None:
        self._docs: dict[str, Document] = {}
        self._closed: dict[str, Document] = {}  # recently closed, oldest first
        self._remember = remember_closed
        self._closed_chars = closed_chars
        self.edits = RecentEdits()  # the lines each document's changes wrote lately

    def open(self, item: types.TextDocumentItem) -> Document:
        """Add (or replace) a document."""
        doc = Document.open(item.uri, item.language_id, item.version, item.text)
        self._docs[item.uri] = doc
        self._closed.pop(item.uri, None)
        self.edits.forget(item.uri)
        return doc

    def change(self, params: types.DidChangeTextDocumentParams, encoding: str) -> None:
        """Apply changes to an open document (unknown URIs are ignored)."""
        doc = self._docs.get(params.text_document.uri)
        if doc is None:
            return
        for change in params.content_changes:
            doc.apply(change, encoding)
            if isinstance(change, types.TextDocumentContentChangePartial):
                start, end = change.range.start.line, change.range.end.line
                self.edits.record(doc.uri, start, end, len(split_lines(change.text)) - 1)
        doc.version = params.text_document.version

    def close(self, uri: str) -> None:
        """Close a document; the last few closed ones are remembered (for other files'
        snippets) until more are closed: only what snippets read of them (their first
        INDEX_LINES lines, clipped), at most ``closed_chars`` characters in all."""
        doc = self._docs.pop(uri, None)
        if doc is not None and self._remember > 0:
            self._closed.pop(uri, None)
            kept = Document(
                uri, doc.language_id, doc.version, [clip(x) for x in doc.lines[:INDEX_LINES]]
            )
            self._closed[uri] = kept
            while len(self._closed) > self._remember or self.closed_chars() > self._closed_chars:
                self._closed.pop(next(iter(self._closed)))

    def closed_chars(self) -> int:
        """Characters held for recently closed documents."""
        return sum(len(line) for doc in self._closed.values() for line in doc.lines)

    def others(self, uri: str, language_id: str) -> list[Document]:
        """The other open documents of ``language_id``, then the recently closed ones."""
        open_ = [d for u, d in self._docs.items() if u != uri and d.language_id == language_id]
        closed = [
            d
            for u, d in reversed(self._closed.items())
            if u != uri and u not in self._docs and d.language_id == language_id
        ]
        return open_ + closed

    def get(self, uri: str) -> Document | None:
        """The open document for ``uri``, or None."""
        return self._docs.get(uri)

    def __len__(self) -> int:
        return len(self._docs)
