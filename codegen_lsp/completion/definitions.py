"""Definitions of the names near the cursor, as the editor's other language servers see them.

The server owns the choice; the editor only resolves. For a request at a cursor:

1. :func:`names_near` picks the names the cursor's statement and the few lines above it use
   (:data:`ABOVE_LINES`), nearest to the cursor first, at most :data:`MAX_NAMES`: not the
   word being typed (it changes with every keystroke), not keywords or builtins, not names
   the text just above the cursor defines (``def``/``class``/assignments within
   :data:`LOOKBACK_LINES`: they are in the prompt window already).
2. The names with no definition yet are handed to the client to resolve (the server sends
   ``codegen/resolveDefinitions``; see docs/server.md); the request never waits for them.
3. When the client answers, :meth:`DefinitionContext.store` keeps the definition's head
   (:func:`head_of`: the signature, the docstring, for a class its fields and method
   signatures, cut to :data:`HEAD_LINES` lines) by (document, name).
4. :meth:`DefinitionContext.block` renders the heads that are ready as a comment block in the
   language's comment syntax, within a token budget: the nearest names are kept when the
   budget is short, and the block lists them farthest first, so the nearest one ends next to
   the window.

The block comes before the window, so a change re-prefills everything after it: it changes
only when a new name's definition becomes ready or a kept one's head changes, never when a
name merely leaves the query (typing within a line keeps it as it is).
"""

from __future__ import annotations

import builtins
import keyword
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.languages import IDENTIFIER, Language

ABOVE_LINES = 3  # lines above the cursor line whose names count as "near"
LOOKBACK_LINES = 150  # a name defined this close above the cursor is in the window already
MAX_NAMES = 8  # names asked about per request
HEAD_LINES = 12  # lines of one definition's head
HEAD_CHARS = 160
DOC_LINES = (
    3  # lines of a docstring shown (its first paragraph, at most)  # characters of one head line
)
TEXT_LINES = 200  # lines of a client's definition text that are read
STALE_S = 30.0  # an answer older than this is asked again (kept and used meanwhile)
NONE_STALE_S = 5.0  # "no definition" is asked again sooner (a language server still starting)
MAX_KEPT = 256  # definitions kept per document (then the oldest are dropped)
_STRING = re.compile(r"(\"\"\"|'''|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')")
_COMMON = frozenset(
    "self cls this super true false null none undefined nil var let const function return "
    "new typeof instanceof await async def class import from export default".split()
)
_PY_BUILTINS = frozenset(dir(builtins)) | frozenset(keyword.kwlist)
_DEFINES = re.compile(
    r"^\s*(?:export\s+)?(?:async\s+)?(?:def|class|function|func|fn|const|let|var|type|interface)"
    r"\s+([A-Za-z_][A-Za-z0-9_]*)"
)
_ASSIGNS = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?::[^=]*)?=(?!=)")
_PARAMS = re.compile(r"^\s*(?:async\s+)?(?:def|function|func|fn)\s+\w+\s*\((.*)")
_FIRST = re.compile(r",\s*\**([A-Za-z_][A-Za-z0-9_]*)")
_IMPORT = re.compile(r"^\s*(import|from)\s")


@dataclass(frozen=True)
class NameUse:
    """A name near the cursor and where it is used (0-based line, code point column)."""

    name: str
    line: int
    column: int


@dataclass(frozen=True)
class Head:
    """What the block shows of one definition."""

    name: str
    path: str  # the file it is in, as the prompt shows it
    text: str  # the head's lines, each with its line break


def _code_only(line: str, comment: str) -> str:
    """``line`` with its string literals blanked and its comment cut (roughly: enough to
    keep names in strings and comments out of the query)."""
    line = _STRING.sub(lambda m: " " * len(m.group(0)), line)
    for quote in "\"'":  # a string still open (being typed): its text is no code
        if quote in line:
            line = line[: line.index(quote)]
    if comment and comment in line:
        line = line[: line.index(comment)]
    return line


def defined_above(cursor: Cursor) -> frozenset[str]:
    """Names that the LOOKBACK_LINES lines above the cursor (and the cursor line's own
    assignment) define, function parameters included."""
    found: set[str] = set()
    lines = [*cursor.lines[max(0, cursor.line - LOOKBACK_LINES) : cursor.line], cursor.before]
    for line in lines:
        for pattern in (_DEFINES, _ASSIGNS):
            match = pattern.match(line)
            if match:
                found.add(match.group(1))
        params = _PARAMS.match(line)
        if params:  # a function's parameters: the first name of each comma-separated part
            found.update(m.group(1) for m in _FIRST.finditer("," + params.group(1)))
    return frozenset(found)


def names_near(cursor: Cursor, limit: int = MAX_NAMES) -> list[NameUse]:
    """The names worth resolving at ``cursor``, nearest first (see the module docstring)."""
    comment = cursor.language.comment
    skip = defined_above(cursor) | _COMMON
    if cursor.language.name == "python":
        skip |= _PY_BUILTINS
    rows: list[tuple[int, str]] = [(cursor.line, cursor.before)]
    for i in range(cursor.line - 1, max(-1, cursor.line - ABOVE_LINES - 1), -1):
        rows.append((i, cursor.lines[i].rstrip("\r\n")))
    out: list[NameUse] = []
    seen: set[str] = set()
    for line, text in rows:
        code = _code_only(text, comment)
        if line != cursor.line and _IMPORT.match(code):
            continue  # an import line names the module, not what the code uses
        matches = list(IDENTIFIER.finditer(code))
        for m in reversed(matches):
            name = m.group(0)
            if line == cursor.line and m.end() == len(code):
                continue  # the word being typed
            if name in seen or name in skip or len(name) < 2 or name[0].isdigit():
                continue
            seen.add(name)
            out.append(NameUse(name, line, m.start()))
            if len(out) >= limit:
                return out
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _signature(lines: Sequence[str]) -> int:
    """The index of the line that ends the signature starting ``lines`` (its ``:`` at bracket
    depth 0; decorators skipped; at most HEAD_LINES lines)."""
    depth = 0
    for i, line in enumerate(lines[:HEAD_LINES]):
        code = line.split("#")[0]
        depth += sum(code.count(c) for c in "([{") - sum(code.count(c) for c in ")]}")
        if depth <= 0 and not code.lstrip().startswith("@") and code.rstrip().endswith(":"):
            return i
    return 0


def _docstring(body: Sequence[str], out: list[str]) -> int:
    """Append the first paragraph (at most DOC_LINES lines) of the docstring that starts
    ``body`` (if one does) to ``out``; the number of lines the whole docstring takes."""
    stripped = body[0].strip() if body else ""
    quote = stripped[:3]
    if quote not in ('"""', "'''"):
        return 0
    out.append(body[0])
    taken = 1
    done = stripped.count(quote) >= 2
    showing = True
    while not done and taken < len(body):
        line = body[taken]
        done = quote in line
        showing = showing and bool(line.strip()) and taken < DOC_LINES
        if showing:
            out.append(line)
        taken += 1
    return taken


def _python_head(lines: Sequence[str]) -> list[str]:
    """Signature (to its closing ``:``), docstring, and for a class its fields and method
    signatures (bodies left out); a constant or variable: its line."""
    first = lines[0].lstrip()
    if not first.startswith(("def ", "async def ", "class ", "@")):
        return [lines[0]]
    end = _signature(lines)
    out = list(lines[: end + 1])
    base = _indent(lines[0])
    body = [line for line in lines[end + 1 :]]
    while body and not body[0].strip():
        body.pop(0)
    if not body or _indent(body[0]) <= base:
        return out
    member = _indent(body[0])
    taken = _docstring(body, out)
    if not out[end + 1 :] and not first.startswith("class "):
        return out
    if not any(line.lstrip().startswith("class ") for line in out[: end + 1]):
        return out  # a function: its signature and docstring
    for line in body[taken:]:
        if len(out) >= HEAD_LINES:
            break
        if not line.strip():
            continue
        level = _indent(line)
        if level <= base:
            break
        stripped = line.strip()
        if level == member and (
            stripped.startswith(("def ", "async def "))
            or _ASSIGNS.match(line)
            or re.match(r"^[A-Za-z_]\w*\s*:", stripped)
        ):
            out.append(line)
    return out


def _brace_head(lines: Sequence[str]) -> list[str]:
    """The declaration to its ``{`` (or ``;``); for a class/interface its members' lines
    (one level deeper, bodies left out)."""
    ends = (i for i, line in enumerate(lines) if "{" in line or line.rstrip().endswith(";"))
    i = min(next(ends, 0), HEAD_LINES - 1)
    out = list(lines[: i + 1])
    first = " ".join(out)
    if not re.search(r"\b(class|interface|struct|enum|type)\b", first) or "{" not in out[-1]:
        return out
    base = _indent(lines[0])
    member: int | None = None
    for line in lines[i + 1 :]:
        if not line.strip():
            continue
        level = _indent(line)
        if level <= base:
            if line.strip().startswith("}"):
                out.append(line)
            break
        if member is None:
            member = level
        if level == member and not line.strip().startswith("}"):
            out.append(line)
        if len(out) >= HEAD_LINES:
            break
    return out


def _declares(line: str, language: Language) -> bool:
    """Whether ``line`` can start a definition (not a comment, docstring or bare expression:
    what a language server answers for a module name is the module's first line)."""
    stripped = line.strip()
    if language.name == "python":
        return bool(
            stripped.startswith(("def ", "async def ", "class ", "@"))
            or _ASSIGNS.match(line)
            or re.match(r"^[A-Za-z_]\w*\s*:", stripped)
        )
    return not stripped.startswith(("//", "/*", "*", "#", "--"))


def head_of(text: str, language: Language) -> str:
    """The head of the definition that starts ``text``'s first line ("" when there is none
    worth showing: empty text, an import line, a comment or docstring)."""
    lines = [line.rstrip("\r\n")[:HEAD_CHARS] for line in text.split("\n")[:TEXT_LINES]]
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines or _IMPORT.match(lines[0]) or not _declares(lines[0], language):
        return ""
    picked = _python_head(lines) if language.name == "python" else _brace_head(lines)
    base = _indent(picked[0])
    return "".join(line[base:].rstrip() + "\n" for line in picked[:HEAD_LINES])


def definition_head(
    name: str, path: str, text: str, language: Language, in_window: bool = False
) -> Head | None:
    """The head of ``name``'s definition whose file (shown as ``path``) reads ``text`` from
    the definition's line on; None when it shows nothing worth its tokens (no text, an import
    line) or the definition is ``in_window`` (just above the cursor in the same document)."""
    if in_window:
        return None
    head = head_of(text, language)
    return Head(name, path, head) if head else None


def render(heads: Sequence[Head], comment: str, tokens: int, count: Callable[[str], int]) -> str:
    """The comment block for ``heads`` (nearest name first) within ``tokens``: the nearest
    ones are kept, and listed last."""
    if not comment or tokens <= 0:
        return ""
    parts: list[str] = []
    used = 0
    for head in heads:
        lines = [f"{comment} Definition of {head.name} from {head.path}:\n"]
        lines += [f"{comment} {line}".rstrip() + "\n" for line in head.text.splitlines()]
        kept: list[str] = []
        for line in lines:
            cost = count(line)
            if used + cost > tokens:
                break
            kept.append(line)
            used += cost
        if len(kept) > 1:
            parts.append("".join(kept))
        if len(kept) < len(lines):
            break
    return "".join(reversed(parts))


class DefinitionContext:
    """The definitions resolved per document and the block kept for each (see the module
    docstring). Pure: the server feeds it what the client answered."""

    def __init__(self) -> None:
        # key -> name -> (head or None: nothing to show, until when the answer is fresh)
        self._heads: dict[str, dict[str, tuple[Head | None, float]]] = {}
        self._kept: dict[str, tuple[tuple[Head, ...], tuple[object, ...], str]] = {}

    def forget(self, key: str) -> None:
        """The document was closed."""
        self._heads.pop(key, None)
        self._kept.pop(key, None)

    def store(self, key: str, name: str, head: Head | None, retry_s: float | None = None) -> None:
        """What the client resolved ``name`` to in document ``key`` (None: nothing to show),
        fresh for ``retry_s`` (default: STALE_S for a head, NONE_STALE_S for None)."""
        heads = self._heads.setdefault(key, {})
        heads.pop(name, None)
        if retry_s is None:
            retry_s = STALE_S if head is not None else NONE_STALE_S
        heads[name] = (head, time.monotonic() + retry_s)
        while len(heads) > MAX_KEPT:
            heads.pop(next(iter(heads)))

    def known(self, key: str, name: str) -> bool:
        """Whether an answer for ``name`` is kept (a definition or "none") and is fresh."""
        kept = self._heads.get(key, {}).get(name)
        return kept is not None and time.monotonic() < kept[1]

    def block(
        self,
        key: str,
        names: Sequence[NameUse],
        comment: str,
        tokens: int,
        count: Callable[[str], int],
    ) -> str:
        """The block for a request whose near names are ``names`` (nearest first)."""
        heads = self._heads.get(key, {})
        ready = tuple(h for n in names if n.name in heads and (h := heads[n.name][0]) is not None)
        settings = (comment, tokens)
        kept = self._kept.get(key)
        if kept is not None and kept[1] == settings:
            shown = {h.name: h for h in kept[0]}
            if all(shown.get(h.name) == h for h in ready):
                return kept[2]  # nothing new is ready: the block stays put
        block = render(ready, comment, tokens, count)
        self._kept[key] = (ready, settings, block)
        return block
