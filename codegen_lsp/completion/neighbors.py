"""Code from other open files: the snippets most like the code around the cursor.

As Copilot's "neighboring tabs" and Tabby do, every other open (or recently closed)
document of the same language is cut into windows of lines, each window scored by the
Jaccard similarity of its identifier set with the identifiers just above the cursor, and the
best windows go before the file's own window as a comment block ("Compare this snippet from
PATH:"), within a token budget. A window holding a recent edit of its document scores more
(``recent_edits``): what the user just changed elsewhere is likely what they use next.

The block comes first in the prompt, so a change re-prefills everything after it: it must
change rarely while typing. The query therefore leaves out the cursor's own line (typing in
a line never changes it), and a new choice replaces the kept one only when it scores clearly
better (:data:`SWITCH_MARGIN`), so moving down a line or two keeps the same block.

The work per request is bounded whatever the documents: each contributes its first
:data:`INDEX_LINES` lines, each line its first :data:`LINE_CHARS` characters, at most
:data:`MAX_DOCUMENTS` documents and :data:`SCAN_LINES` lines in all. Identifiers are read
once per line text (:class:`LineIndex`, keyed by content): an edit makes only the lines it
wrote be read again, and a window's set is the union of its lines' sets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.languages import IDENTIFIER
from codegen_lsp.completion.recent_edits import edit_bonus

WINDOW_LINES = 20  # lines per candidate snippet
WINDOW_STEP = 10  # windows overlap by half
QUERY_LINES = 20  # lines above the cursor whose identifiers are the query
MIN_SCORE = 0.05  # a window sharing less than this with the query is not worth its tokens
SWITCH_MARGIN = 1.25  # a new choice must score this much better than the kept one
INDEX_LINES = 5_000  # lines of each other document that are looked at (its first ones)
LINE_CHARS = 200  # characters of a line that are looked at (and shown)
MAX_DOCUMENTS = 16  # other documents looked at per request (open ones first)
SCAN_LINES = 40_000  # lines looked at per request, over all documents
QUERY_CHARS = 4_000  # characters above the cursor line whose identifiers are the query
INDEX_CACHE_LINES = 60_000  # line texts whose identifiers are kept (then all are dropped)
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
    edited: tuple[int, ...] = ()  # lines edited lately, the latest first (recent_edits)
    # the document being completed itself: only its windows that hold a recent edit and end
    # by line ``until`` (where its prompt window starts) are candidates
    own: bool = False
    until: int = 0


@dataclass(frozen=True)
class Snippet:
    """A window of another document and its similarity to the query."""

    path: str
    start: int
    text: str
    score: float


def identifiers(text: str) -> frozenset[str]:
    """The identifiers of ``text`` that say something (keywords and 1-letter names left out)."""
    return frozenset(w for w in IDENTIFIER.findall(text) if w.lower() not in _COMMON and len(w) > 1)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (0 for two empty sets)."""
    common = len(a & b)
    union = len(a) + len(b) - common
    return common / union if union else 0.0


def clip(line: str) -> str:
    """A line cut to LINE_CHARS characters (keeping a line break)."""
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS].rstrip("\r\n") + "\n"


def query_of(cursor: Cursor) -> frozenset[str]:
    """The identifiers of the lines above the cursor's line (not the line being typed), in
    their last QUERY_CHARS characters."""
    first = max(0, cursor.line - QUERY_LINES)
    parts: list[str] = []
    size = 0
    for line in reversed(cursor.lines[first : cursor.line]):
        if size >= QUERY_CHARS:
            break
        parts.append(clip(line))
        size += len(parts[-1])
    return identifiers("".join(reversed(parts))[-QUERY_CHARS:])


class LineIndex:
    """The identifiers of line texts, read once per text (the incremental part of the
    index: an edited document only has the lines it changed read again). At most
    ``size`` texts are kept; beyond that the index starts empty again."""

    def __init__(self, size: int = INDEX_CACHE_LINES) -> None:
        self._sets: dict[str, frozenset[str]] = {}
        self._size = size

    def __len__(self) -> int:
        return len(self._sets)

    def of(self, line: str) -> frozenset[str]:
        """The identifiers of ``line`` (cut to LINE_CHARS)."""
        line = clip(line)
        found = self._sets.get(line)
        if found is None:
            if len(self._sets) >= self._size:
                self._sets.clear()
            found = self._sets[line] = identifiers(line)
        return found

    def blocks(self, lines: Sequence[str]) -> list[frozenset[str]]:
        """The identifiers of each WINDOW_STEP-line block of ``lines``."""
        return [
            frozenset().union(*(self.of(line) for line in lines[b : b + WINDOW_STEP]))
            for b in range(0, len(lines), WINDOW_STEP)
        ]


def windows(blocks: Sequence[frozenset[str]], lines: int) -> Iterator[tuple[int, frozenset[str]]]:
    """(start, identifiers) of each window of a document of ``lines`` lines, from the sets of
    its blocks (a window is two blocks)."""
    per = WINDOW_LINES // WINDOW_STEP
    for start in range(0, max(1, lines - WINDOW_LINES // 2), WINDOW_STEP):
        first = start // WINDOW_STEP
        yield start, frozenset().union(*blocks[first : first + per])


def window_text(lines: Sequence[str], start: int) -> str:
    """The text of the window at ``start`` (lines clipped)."""
    return "".join(clip(line) for line in lines[start : start + WINDOW_LINES])


BlockCache = dict[str, tuple[int, int, list[frozenset[str]]]]  # path -> (version, lines, blocks)


def best_windows(
    query: frozenset[str],
    neighbors: Sequence[Neighbor],
    count: int,
    index: LineIndex | None = None,
    cache: BlockCache | None = None,
) -> list[Snippet]:
    """The ``count`` best windows, at most one per document, best first (within the bounds
    in the module docstring). ``cache`` keeps each document's block sets per version (only
    the documents of this call stay in it)."""
    index = index if index is not None else LineIndex()
    cache = cache if cache is not None else {}
    best: list[Snippet] = []
    budget = SCAN_LINES
    seen: set[str] = set()
    for doc in neighbors[:MAX_DOCUMENTS]:
        if budget <= 0:
            break
        lines = doc.lines[: min(INDEX_LINES, budget)]
        budget -= len(lines)
        seen.add(doc.path)
        kept = cache.get(doc.path)
        if kept is None or kept[:2] != (doc.version, len(lines)) or not doc.version:
            kept = cache[doc.path] = (doc.version, len(lines), index.blocks(lines))
        top: tuple[float, int] | None = None
        for start, ids in windows(kept[2], len(lines)):
            bonus = edit_bonus(doc.edited, start, start + WINDOW_LINES)
            if doc.own and (not bonus or start + WINDOW_LINES > doc.until):
                continue  # of the document itself: an edit above its prompt window only
            score = jaccard(query, ids) + bonus
            if score >= MIN_SCORE and (top is None or score > top[0]):
                top = (score, start)
        if top is not None:
            best.append(Snippet(doc.path, top[1], window_text(lines, top[1]), top[0]))
    for path in [p for p in cache if p not in seen]:
        del cache[path]
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
        self.index = LineIndex()
        self._cache: BlockCache = {}

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
        inputs = (query, snippets, tokens, tuple((n.path, n.version, n.edited) for n in neighbors))
        last = self._blocks.get(key)
        if last is not None and last[0] == inputs:
            return last[1]  # typing within a line: nothing the choice depends on changed
        fresh = best_windows(query, neighbors, snippets, self.index, self._cache)
        kept = self._kept.get(key)
        if kept is not None:
            by_path = {n.path: n for n in neighbors}
            still = [s for s in kept if s.path in by_path and _shown(s, by_path[s.path])]
            rescored = [_rescore(s, query, by_path[s.path]) for s in still]
            old = sum(s.score for s in rescored)
            new = sum(s.score for s in fresh)
            if rescored and len(rescored) == len(kept) and new <= old * SWITCH_MARGIN:
                fresh = rescored
        self._kept[key] = fresh
        block = render(fresh, cursor.language.comment, tokens, count)
        self._blocks[key] = (inputs, block)
        return block


def _shown(snippet: Snippet, doc: Neighbor) -> bool:
    """Whether ``snippet`` may still be shown: of the document itself, only above its window."""
    return not doc.own or snippet.start + WINDOW_LINES <= doc.until


def _rescore(snippet: Snippet, query: frozenset[str], doc: Neighbor) -> Snippet:
    """``snippet`` with its text and score as they are now in ``doc``."""
    text = window_text(doc.lines, snippet.start)
    bonus = edit_bonus(doc.edited, snippet.start, snippet.start + WINDOW_LINES)
    return Snippet(snippet.path, snippet.start, text, jaccard(query, identifiers(text)) + bonus)
