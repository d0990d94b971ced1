"""Type-ahead: serve the rest of a suggestion while the user types what it says.

After a suggestion is shown, the user often types its first characters. Each keystroke
brings a new request; when the text typed since the suggestion was made is a prefix of it,
the rest is the answer, with no model call. Entries stay put while the user types through
them (like Tabby's "forwarding" cache entries), so every further keystroke hits too, and
so does deleting back to where the suggestion started.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

ANCHOR_CHARS = 256  # text before the cursor that identifies where a suggestion was made
TYPED_MAX = 4096  # most characters of a suggestion typed through that are still served
ANCHORED_TRIES = 16  # places where the anchor matches that are tried (each costs a copy)


@dataclass(frozen=True)
class Entry:
    """Suggestions made at one place: the text before it (its last characters) and after it
    on the line."""

    anchor: str
    line_after: str
    suggestions: tuple[str, ...]


def _anchored(before: str, end: int, anchor: str) -> bool:
    """Whether ``before[:end]`` ends with the anchor (compared in place, without a copy).
    A short anchor is the whole text before the suggestion (start of a document)."""
    if len(anchor) >= ANCHOR_CHARS:
        return before.endswith(anchor, 0, end)
    return end == len(anchor) and before.startswith(anchor)


def remaining(entry: Entry, before: str, line_after: str) -> list[str]:
    """What is left of the entry's suggestions when ``before`` is the text now before the
    cursor; empty when the user has typed something else (or all of it). Each length typed
    (up to TYPED_MAX) costs one anchor comparison, not a copy of ``before``."""
    if line_after != entry.line_after:
        return []
    longest = max((len(s) for s in entry.suggestions), default=0)
    out: list[str] = []
    tries = 0
    for typed_len in range(0, min(longest, len(before), TYPED_MAX) + 1):
        if not _anchored(before, len(before) - typed_len, entry.anchor):
            continue
        tries += 1
        if tries > ANCHORED_TRIES:  # a periodic text matches the anchor everywhere
            break
        typed = before[len(before) - typed_len :]
        for s in entry.suggestions:
            if s.startswith(typed) and len(s) > typed_len and s[typed_len:] not in out:
                out.append(s[typed_len:])
        if out:
            break
    return out


class TypeAhead:
    """Recent suggestions per document key, newest first."""

    def __init__(self, per_key: int = 4, keys: int = 64) -> None:
        self._entries: OrderedDict[str, list[Entry]] = OrderedDict()
        self._per_key = per_key
        self._keys = keys

    def remember(self, key: str, before: str, line_after: str, suggestions: list[str]) -> None:
        """Record suggestions made with ``before`` as the text before the cursor."""
        if not suggestions:
            return
        entry = Entry(before[-ANCHOR_CHARS:], line_after, tuple(suggestions))
        entries = [e for e in self._entries.pop(key, []) if e.anchor != entry.anchor]
        self._entries[key] = [entry, *entries][: self._per_key]
        while len(self._entries) > self._keys:
            self._entries.popitem(last=False)

    def lookup(self, key: str, before: str, line_after: str) -> list[str]:
        """The rest of a remembered suggestion the user is typing through, if any.

        ``before`` must hold at least ``ANCHOR_CHARS`` plus the longest suggestion's length
        of text before the cursor (less only at the start of a document).
        """
        for entry in self._entries.get(key, []):
            rest = remaining(entry, before, line_after)
            if rest:
                self._entries.move_to_end(key)
                return rest
        return []

    def forget(self, key: str) -> None:
        """Drop everything remembered for ``key``."""
        self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything (the model or the settings changed)."""
        self._entries.clear()
