"""Code from other open files: the snippets most like the code around the cursor.

As Copilot's "neighboring tabs" and Tabby do, every other open (or recently closed)
document of the same language is cut into windows of lines, each window scored by the
Jaccard similarity of its identifier set with the identifiers just above the cursor, and the
best windows go before the file's own window as a comment block ("Compare this snippet from
PATH:"), within a token budget.

The block comes first in the prompt, so a change re-prefills everything after it: it must
change rarely while typing. The query therefore leaves out the cursor's own line (typing in
a line never changes it), and a new choice replaces the kept one only when it scores clearly
better (:data:`SWITCH_MARGIN`), so moving down a line or two keeps the same block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codegen_lsp.completion.context import Cursor

WINDOW_LINES = 20  # lines per candidate snippet
WINDOW_STEP = 10  # windows overlap by half
QUERY_LINES = 20  # lines above the cursor whose identifiers are the query
MIN_SCORE = 0.05  # a window sharing less than this with the query is not worth its tokens
SWITCH_MARGIN = 1.25  # a new choice must score this much better than the kept one
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_COMMON = frozenset(
    "self cls def return if else elif for in while import from as class pass none true false "
    "and or not is with try except finally raise lambda yield var let const function new this "
    "int str i j k x y".split()
)


@dataclass(frozen=True)
class Neighbor:
    """Another document: its path (as shown in the prompt) and its lines."""

    path: str
    lines: Sequence[str]
    version: int = 0  # the document's version: the same version, the same lines


@dataclass(frozen=True)
class Snippet:
    """A window of another document and its similarity to the query."""

    path: str
    start: int
    text: str
    score: float


def identifiers(text: str) -> frozenset[str]:
    """The identifiers of ``text`` that say something (keywords and 1-letter names left out)."""
    return frozenset(w for w in _IDENT.findall(text) if w.lower() not in _COMMON and len(w) > 1)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def query_of(cursor: Cursor) -> frozenset[str]:
    """The identifiers of the lines above the cursor's line (not the line being typed)."""
    first = max(0, cursor.line - QUERY_LINES)
    return identifiers("".join(cursor.lines[first : cursor.line]))


def best_windows(query: frozenset[str], neighbors: Sequence[Neighbor], count: int) -> list[Snippet]:
    """The ``count`` best windows, at most one per document, best first."""
    best: list[Snippet] = []
    for doc in neighbors:
        top: Snippet | None = None
        for start in range(0, max(1, len(doc.lines) - WINDOW_LINES // 2), WINDOW_STEP):
            text = "".join(doc.lines[start : start + WINDOW_LINES])
            score = jaccard(query, identifiers(text))
            if score >= MIN_SCORE and (top is None or score > top.score):
                top = Snippet(doc.path, start, text, score)
        if top is not None:
            best.append(top)
    best.sort(key=lambda s: (-s.score, s.path))
    return best[:count]


def render(
    snippets: Sequence[Snippet], comment: str, tokens: int, count: Callable[[str], int]
) -> str:
    """The comment block for ``snippets`` within ``tokens`` (whole lines; later ones cut)."""
    if not comment:
        return ""
    out: list[str] = []
    used = 0
    for snippet in snippets:
        lines = [f"{comment} Compare this snippet from {snippet.path}:\n"]
        lines += [f"{comment} {line.rstrip()}\n" for line in snippet.text.rstrip("\n").split("\n")]
        for line in lines:
            cost = count(line)
            if used + cost > tokens:
                return "".join(out)
            out.append(line)
            used += cost
    return "".join(out)


class NeighborContext:
    """Chooses and keeps each document's snippets; see the module docstring."""

    def __init__(self) -> None:
        self._kept: dict[str, list[Snippet]] = {}
        self._blocks: dict[str, tuple[tuple[object, ...], str]] = {}  # key -> (inputs, block)

    def forget(self, key: str) -> None:
        """The document was closed."""
        self._kept.pop(key, None)
        self._blocks.pop(key, None)

    def block(
        self,
        key: str,
        cursor: Cursor,
        neighbors: Sequence[Neighbor],
        snippets: int,
        tokens: int,
        count: Callable[[str], int],
    ) -> str:
        """The comment block of other files' code for ``cursor`` ("" when off or none)."""
        if snippets <= 0 or tokens <= 0 or not neighbors:
            return ""
        query = query_of(cursor)
        inputs = (query, snippets, tokens, tuple((n.path, n.version) for n in neighbors))
        last = self._blocks.get(key)
        if last is not None and last[0] == inputs:
            return last[1]  # typing within a line: nothing the choice depends on changed
        fresh = best_windows(query, neighbors, snippets)
        kept = self._kept.get(key)
        if kept is not None:
            by_path = {n.path: n for n in neighbors}
            still = [s for s in kept if s.path in by_path]
            rescored = [_rescore(s, query, by_path[s.path]) for s in still]
            old = sum(s.score for s in rescored)
            new = sum(s.score for s in fresh)
            if rescored and len(rescored) == len(kept) and new <= old * SWITCH_MARGIN:
                fresh = rescored
        self._kept[key] = fresh
        block = render(fresh, cursor.language.comment, tokens, count)
        self._blocks[key] = (inputs, block)
        return block


def _rescore(snippet: Snippet, query: frozenset[str], doc: Neighbor) -> Snippet:
    """``snippet`` with its text and score as they are now in ``doc``."""
    text = "".join(doc.lines[snippet.start : snippet.start + WINDOW_LINES])
    return Snippet(snippet.path, snippet.start, text, jaccard(query, identifiers(text)))
