"""Cursor context and the prompt window.

The prompt is an optional header (language, path) followed by the text before the cursor,
cut to a token window that fits the model's context minus the generation budget. The
window start is always a line start and moves in large jumps: consecutive keystrokes keep
the same start, so their token prefixes match and the engine reuses its KV cache (rotary
positions are absolute, so a moved start invalidates everything after it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from codegen_lsp.completion.languages import Language
from codegen_lsp.engine.api import generation_limit

Encode = Callable[[str], list[int]]

# A line longer than this many characters per token of budget is not tokenized to count it:
# it is taken as larger than the whole budget.
CHARS_PER_TOKEN_LIMIT = 8


@dataclass(frozen=True)
class Cursor:
    """A cursor in a document.

    ``lines`` are the document's lines, each with its line break (the last one without);
    ``lines[:line]`` are above the cursor. The cursor line itself is given split at the
    cursor as ``before`` and ``after`` (no line break), so callers can place a cursor on a
    line that differs from ``lines[line]`` (function-body prompts do).
    """

    lines: Sequence[str]
    line: int
    before: str
    after: str
    language: Language
    path: str = ""

    @classmethod
    def at(
        cls, lines: Sequence[str], line: int, column: int, language: Language, path: str = ""
    ) -> Cursor:
        """The cursor at ``column`` (code points) of ``lines[line]``."""
        text = lines[line].rstrip("\r\n")
        column = max(0, min(column, len(text)))
        return cls(lines, line, text[:column], text[column:], language, path)

    @property
    def indent(self) -> str:
        """Leading whitespace of the cursor line."""
        full = self.before + self.after
        return full[: len(full) - len(full.lstrip(" \t"))]

    def text_before(self, limit: int) -> str:
        """The last ``limit`` characters before the cursor."""
        if limit <= 0:
            return ""
        parts = [self.before[-limit:]]  # each piece cut to the limit: no long line is copied
        size = len(parts[0])
        # ``lines`` may have shrunk since the snapshot (the gate reads it after the model ran)
        i = min(self.line, len(self.lines)) - 1
        while size < limit and i >= 0:
            parts.append(self.lines[i][-(limit - size) :])
            size += len(parts[-1])
            i -= 1
        return "".join(reversed(parts))

    def text_after(self, limit: int) -> str:
        """The first ``limit`` characters after the cursor (line breaks as in the document)."""
        if limit <= 0:
            return ""
        parts = [self.after[:limit]]
        size = len(parts[0])
        i = self.line + 1
        if i < len(self.lines):
            parts.append("\n")
            size += 1
        while size < limit and i < len(self.lines):
            parts.append(self.lines[i][: limit - size])
            size += len(parts[-1])
            i += 1
        return "".join(parts)[:limit]

    def next_nonblank_line(self) -> str | None:
        """The first line below the cursor that is not blank, without its line break."""
        for i in range(self.line + 1, min(len(self.lines), self.line + 200)):
            if self.lines[i].strip():
                return self.lines[i].rstrip("\r\n")
        return None


@dataclass
class Prompt:
    """Token ids for the engine, and what they were made of."""

    ids: list[int]
    header: str
    text: str  # the window text (without the header)
    start_line: int
    truncated: bool = False  # the window starts inside the cursor line


def header_text(language: Language, path: str) -> str:
    """``# language: python\\n# path: foo.py\\n`` in the language's comment syntax."""
    if not language.comment:
        return ""
    lines = [f"{language.comment} language: {language.name}"]
    if path:
        lines.append(f"{language.comment} path: {path}")
    return "\n".join(lines) + "\n"


def clamp_generation(max_new_tokens: int, n_ctx: int) -> int:
    """``maxNewTokens`` as used with a model of ``n_ctx`` positions: at most half the context
    (:func:`~codegen_lsp.engine.api.generation_limit`), so the prompt always keeps the
    other half. (At ``n_ctx - 1`` the prompt was ``<|endoftext|>`` alone: every document got
    the same suggestion.)"""
    return max(1, min(max_new_tokens, generation_limit(n_ctx)))


def generation_note(max_new_tokens: int, n_ctx: int, name: str = "maxNewTokens") -> str | None:
    """What to tell the user when ``max_new_tokens`` (the setting ``name``) is clamped for a
    model of ``n_ctx`` positions; None when it is not."""
    limit = clamp_generation(max_new_tokens, n_ctx)
    if limit >= max_new_tokens:
        return None
    return (
        f"codegen: {name}={max_new_tokens} does not fit the model's context of {n_ctx} "
        f"tokens with room for the document; generating at most {limit} tokens (half the "
        "context) per suggestion"
    )


def token_budget(n_ctx: int, max_new_tokens: int, context_tokens: int = 0) -> int:
    """Prompt tokens that fit: the model's context minus the generation budget, capped by
    the ``contextTokens`` setting (0 means no cap)."""
    budget = n_ctx - max_new_tokens
    if context_tokens > 0:
        budget = min(budget, context_tokens)
    return max(budget, 0)


def window_start(
    counts: Sequence[int],
    first: int,
    budget: int,
    previous: int | None,
    fill: float = 0.75,
    keep: float = 0.5,
) -> int:
    """The line where the prompt window starts.

    ``counts[i]`` is the token count of line ``first + i``; the last entry is the cursor
    line (up to the cursor). ``previous`` is the start used for the last request on this
    document; it is kept while the window from it still fits the budget and holds at least
    ``keep * budget`` tokens. Otherwise the window restarts at line 0 if everything fits, or
    at the first line from which the text fills at most ``fill * budget`` tokens, leaving
    room to type before the next jump.
    """
    cursor_line = first + len(counts) - 1
    suffix: dict[int, int] = {}
    total = 0
    earliest = cursor_line
    for i in range(len(counts) - 1, -1, -1):
        total += counts[i]
        suffix[first + i] = total
        if total > budget:
            break
        earliest = first + i
    if suffix[earliest] > budget:  # the cursor line alone is too long
        return cursor_line
    if previous is not None and earliest <= previous <= cursor_line:
        if suffix[previous] >= keep * budget or (previous == 0 and earliest == 0):
            return previous
    if earliest == 0:
        return 0
    start = earliest
    while start < cursor_line and suffix[start] > fill * budget:
        start += 1
    return start


def count_line(line: str, encode: Encode, budget: int) -> int:
    """Tokens in one line; lines too long to matter count as ``budget + 1``."""
    if len(line) > budget * CHARS_PER_TOKEN_LIMIT:
        return budget + 1
    return len(encode(line))


def build_prompt(
    cursor: Cursor,
    encode: Encode,
    budget: int,
    previous_start: int | None = None,
    header: str = "",
    count: Callable[[str], int] | None = None,
    bos: int | None = None,
) -> Prompt:
    """Header + window text before the cursor, as at most ``budget`` token ids.

    With ``bos`` (the model's ``<|endoftext|>`` id) the ids begin with it whenever the prompt
    begins where a file begins: a header is given, or the window starts at the document's
    first line. Files are joined by that token in CodeGen-style training data, so it tells the
    model that it sees the start of a file (top-level code, no enclosing class), not a window
    cut from the middle of one; its position never moves, so KV reuse is unaffected.
    """
    if bos is not None and budget > 1:
        inner = build_prompt(cursor, encode, budget - 1, previous_start, header, count)
        if inner.ids and (inner.header or (inner.start_line == 0 and not inner.truncated)):
            inner.ids = [bos, *inner.ids]
        return inner
    header_ids = encode(header) if header else []
    if len(header_ids) * 2 > budget:
        header, header_ids = "", []
    room = budget - len(header_ids)
    if room <= 0:
        return Prompt([], header, "", cursor.line, truncated=True)
    counter = count or (lambda text: count_line(text, encode, room))
    first = max(0, cursor.line - room - 1)
    counts = [counter(cursor.lines[i]) for i in range(first, cursor.line)]
    # the cursor line changes with every keystroke: counting it through a cache only fills it
    counts.append(count_line(cursor.before, encode, room))
    start = window_start(counts, first, room, previous_start)
    before = cursor.before[-room * CHARS_PER_TOKEN_LIMIT :]
    truncated = len(before) < len(cursor.before)
    text = "".join(cursor.lines[start : cursor.line]) + before
    ids = encode(text)
    while len(ids) > room and start < cursor.line:
        start += 1
        text = "".join(cursor.lines[start : cursor.line]) + before
        ids = encode(text)
    if len(ids) > room:
        ids = ids[-room:]
        truncated = True
    return Prompt(header_ids + ids, header, text, start, truncated)
