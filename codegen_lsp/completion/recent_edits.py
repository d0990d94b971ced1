"""Where the user edited lately, per document: the lines recent changes wrote.

The server records every incremental change (``didChange``) here; the other-file snippets
(``neighbors``) rank the windows that hold a recent edit above the others of their document
(:data:`EDIT_BONUS`, more for the latest), so a function the user just changed in another
file is a candidate for the snippet block as soon as they type a call to it (the document
being completed counts too, above its prompt window: ``Neighbor.own``). Lines move with
later edits above them (an inserted line shifts the edits below it), so an edit keeps
pointing at its text. At most :data:`PER_DOCUMENT` regions are kept per document, the latest
first; an edit within :data:`MERGE_LINES` lines of a kept one refreshes that one instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PER_DOCUMENT = 8  # regions kept per document
MERGE_LINES = 3  # an edit this close to a kept region is the same region
MAX_DOCUMENTS = 64  # documents with edits kept (then the oldest are dropped)
EDIT_BONUS = 0.2  # added to the score of a window holding the latest edit (less for older)


@dataclass
class _Edits:
    lines: list[int] = field(default_factory=list)  # the latest first


class RecentEdits:
    """Recently edited lines per document key."""

    def __init__(self) -> None:
        self._docs: dict[str, _Edits] = {}

    def record(self, key: str, start: int, end: int, new_lines: int) -> None:
        """A change replaced lines ``start..end`` (0-based, inclusive) by text that holds
        ``new_lines`` line breaks."""
        if start < 0 or end < start:
            return
        edits = self._docs.pop(key, None) or _Edits()
        self._docs[key] = edits  # the latest edited document last
        shift = new_lines - (end - start)
        moved = []
        for line in edits.lines:
            if line > end:
                line += shift
            elif line > start + new_lines:
                line = start + new_lines  # its lines were replaced: it is inside this edit
            moved.append(line)
        written = start + new_lines // 2  # the middle of what the change wrote
        kept = [line for line in moved if abs(line - written) > MERGE_LINES]
        edits.lines = [written, *kept][:PER_DOCUMENT]
        while len(self._docs) > MAX_DOCUMENTS:
            self._docs.pop(next(iter(self._docs)))

    def lines(self, key: str) -> tuple[int, ...]:
        """The edited lines of ``key``, the latest first."""
        edits = self._docs.get(key)
        return tuple(edits.lines) if edits else ()

    def forget(self, key: str) -> None:
        """The document is gone."""
        self._docs.pop(key, None)


def edit_bonus(edited: tuple[int, ...], start: int, end: int) -> float:
    """The bonus of a window of lines ``start..end - 1`` for the edits in it (the latest
    counts: EDIT_BONUS for the latest edit of the document, halving for each older one)."""
    for rank, line in enumerate(edited):
        if start <= line < end:
            return EDIT_BONUS / (2**rank)
    return 0.0
