"""When a suggestion ends: single vs multi line, end of block by indentation, stop sequences.

A :class:`StopRule` is the engine's stop function: given the text generated so far it says
where to cut, checked after every decode step. Each rule is a small pure function:

* single-line mode ends at the first line break;
* multi-line mode ends where the generated code dedents out of the cursor's block (brace
  languages may keep the one closing-bracket line that ends the block when the document
  has none there yet), or at a language stop sequence (``\\ndef `` at top level, ...);
* user-configured stop sequences end either mode.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from codegen_lsp.completion.languages import Language

SINGLE = "single"
MULTI = "multi"
TAB_SIZE = 4

_SPACE_HASH = re.compile(r"\s#")


def indent_width(text: str) -> int:
    """Width of the leading whitespace of ``text``, tabs counted as 4 columns."""
    lead = text[: len(text) - len(text.lstrip(" \t"))]
    return len(lead.expandtabs(TAB_SIZE))


def strip_python_comment(text: str) -> str:
    """``text`` without a trailing ``#`` comment: from the first ``#`` after whitespace that
    no quote follows (the match of ``\\s+#[^'"]*$``, found in one pass: that regex is
    quadratic on a long run of spaces or of `` #``)."""
    last_quote = max(text.rfind("'"), text.rfind('"'))
    found = _SPACE_HASH.search(text, last_quote + 1)
    return text if found is None else text[: found.start()].rstrip()


def opens_block(before: str, language: Language) -> bool:
    """True when the text before the cursor ends with a block opener (``:`` or ``{``)."""
    if not language.openers:
        return False
    text = before.rstrip()
    if language.name == "python":
        text = strip_python_comment(text)
    return text.endswith(language.openers)


def choose_mode(before: str, after: str, setting: str, language: Language) -> str:
    """Single line when text follows the cursor; multi-line on an empty line or after a
    block opener; single line otherwise. ``setting`` is ``auto``, ``always`` or ``never``."""
    if setting == "never":
        return SINGLE
    if setting == "always":
        return MULTI
    if after.strip():
        return SINGLE
    if not before.strip() or opens_block(before, language):
        return MULTI
    return SINGLE


def block_indent(before: str, indent: str, language: Language) -> int:
    """The smallest indentation a generated line may have and still be in the cursor's block.

    On an empty line it is the cursor's column; after a block opener, one more than the
    cursor line's indentation; mid-statement, the cursor line's indentation.
    """
    if not before.strip():
        return len(before.expandtabs(TAB_SIZE))
    width = len(indent.expandtabs(TAB_SIZE))
    return width + 1 if opens_block(before, language) else width


def _is_closer(body: str, closers: Sequence[str]) -> bool:
    core = body.rstrip(";,")
    return bool(core) and all(ch in "".join(closers) for ch in core)


def end_of_block(
    text: str,
    min_indent: int,
    closer_indent: int | None = None,
    closers: Sequence[str] = (),
    final: bool = False,
) -> int | None:
    """Where generated code leaves the block: the index of the line break before the first
    non-blank line (after the first) indented less than ``min_indent``.

    When ``closer_indent`` is given, a closing-bracket line at exactly that indentation is
    kept and the cut comes after it (once the line is complete, or at the end if ``final``).
    """
    pos = text.find("\n")
    while pos != -1:
        start = pos + 1
        nxt = text.find("\n", start)
        line = text[start : nxt if nxt != -1 else len(text)].rstrip("\r")
        body = line.strip()
        if body and indent_width(line) < min_indent:
            if closer_indent is not None and indent_width(line) == closer_indent:
                if _is_closer(body, closers):
                    if nxt != -1:
                        return nxt
                    return len(text) if final else None
            return pos
        pos = nxt
    return None


def first_stop(text: str, sequences: Sequence[str]) -> int | None:
    """Index of the earliest occurrence of any stop sequence, or None."""
    found = [i for i in (text.find(s) for s in sequences if s) if i != -1]
    return min(found) if found else None


class CloserLine:
    """Whether a line's text so far is a closing-bracket line (``}``, ``});``), char by char:
    the same answer as :func:`_is_closer` on the stripped line, in O(1) per character."""

    def __init__(self, closers: Sequence[str]) -> None:
        self.closers = "".join(closers)
        self.seen_closer = False
        self.in_tail = False  # after the first ``;`` or ``,``
        self.space = False  # whitespace after the body started
        self.failed = False

    def add(self, ch: str) -> None:
        """One more character of the line's body (after its indentation)."""
        if self.failed:
            return
        if ch in " \t\r":
            self.space = True
        elif self.space:
            self.failed = True  # whitespace inside the body
        elif ch in ";,":
            self.in_tail = True
        elif ch in self.closers and not self.in_tail:
            self.seen_closer = True
        else:
            self.failed = True

    @property
    def ok(self) -> bool:
        return self.seen_closer and not self.failed


class StopScan:
    """The incremental stop check of one candidate under a :class:`StopRule`.

    Each :meth:`feed` looks only at the new piece (plus the few characters a stop sequence
    may straddle, and the state of the current line), so the cost of a step does not grow
    with the text generated before it.
    """

    def __init__(self, rule: StopRule) -> None:
        self.rule = rule
        self.length = 0  # characters seen
        self.tail = ""  # last characters, for stop sequences across pieces
        self.keep = max((len(s) for s in rule.sequences), default=1) - 1
        self.past_first_line = False  # the end of block is judged on later lines only
        self.line_start = 0  # offset of the current line
        self.indent: int | None = None  # width of the current line's indentation, once known
        self.lead = ""  # indentation so far
        self.closer: CloserLine | None = None  # set while the line may be a kept closer

    def feed(self, piece: str) -> int | None:
        """``piece`` was appended: where to cut the whole text, or None."""
        base = self.length
        cut = self._sequence_cut(piece, base)
        rule = self.rule
        for i, ch in enumerate(piece):  # a line cut may fall before a stop sequence's start
            pos = base + i
            if ch == "\n":
                if rule.mode == SINGLE:
                    return pos if cut is None else min(cut, pos)
                line_cut = self._line_end(pos)
                if line_cut is not None:
                    return line_cut if cut is None else min(cut, line_cut)
                self.past_first_line = True
                self.line_start, self.indent, self.lead, self.closer = pos + 1, None, "", None
            elif rule.mode == MULTI and self.past_first_line:
                found = self._char(ch)
                if found is not None:
                    return found if cut is None else min(cut, found)
        self.length += len(piece)
        return cut

    def finish(self) -> int | None:
        """Generation ended: a kept closing line at the very end ends the text there."""
        return self.length if self.closer is not None and self.closer.ok else None

    # --- pieces -----------------------------------------------------------------------------
    def _sequence_cut(self, piece: str, base: int) -> int | None:
        if not self.rule.sequences:
            return None
        window = self.tail + piece
        found = first_stop(window, self.rule.sequences)
        self.tail = window[-self.keep :] if self.keep else ""
        return None if found is None else base - (len(window) - len(piece)) + found

    def _char(self, ch: str) -> int | None:
        """A character of a line after the first (multi-line mode)."""
        if self.indent is None:
            if ch in " \t\r":
                self.lead += ch
                return None
            self.indent = indent_width(self.lead)
            rule = self.rule
            if self.indent >= rule.min_indent:
                return None
            if rule.closer_indent is not None and self.indent == rule.closer_indent:
                self.closer = CloserLine(rule.closers)
            else:
                return self.line_start - 1  # the line break before this line
        if self.closer is not None:
            self.closer.add(ch)
            if not self.closer.ok:  # what the line holds so far is no closing bracket
                return self.line_start - 1
        return None

    def _line_end(self, pos: int) -> int | None:
        """The line ending at ``pos`` is complete."""
        if self.closer is not None and self.closer.ok:
            return pos  # keep the closing line, cut after it
        return None


@dataclass(frozen=True)
class StopRule:
    """The stop rule for one request: :meth:`start` makes the engine's incremental check
    for each candidate; :meth:`cut_at` and :meth:`apply` judge a whole text at once."""

    mode: str
    min_indent: int = 0
    closer_indent: int | None = None
    closers: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()

    def __call__(self, text: str) -> int | None:
        """Where to cut ``text`` while generation goes on (the whole text at once)."""
        return self.cut_at(text)

    def start(self) -> StopScan:
        """A fresh incremental check (the engine's :class:`~codegen_lsp.engine.api.StopCheck`)."""
        return StopScan(self)

    def cut_at(self, text: str, final: bool = False) -> int | None:
        """Where to cut ``text``; ``final`` when generation has ended anyway."""
        cuts: list[int] = []
        if self.mode == SINGLE:
            newline = text.find("\n")
            if newline != -1:
                cuts.append(newline)
        else:
            eob = end_of_block(text, self.min_indent, self.closer_indent, self.closers, final)
            if eob is not None:
                cuts.append(eob)
        seq = first_stop(text, self.sequences)
        if seq is not None:
            cuts.append(seq)
        return min(cuts) if cuts else None

    def strings(self) -> tuple[str, ...]:
        """Strings whose first occurrence this rule cuts at (a remote server may stop there)."""
        return (("\n",) if self.mode == SINGLE else ()) + self.sequences

    def apply(self, text: str) -> str:
        """``text`` cut where the rule says."""
        cut = self.cut_at(text, final=True)
        return text if cut is None else text[:cut]


def make_stop_rule(
    mode: str,
    before: str,
    indent: str,
    language: Language,
    user_stops: Sequence[str] = (),
    next_line: str | None = None,
    min_indent: int | None = None,
) -> StopRule:
    """The stop rule for a cursor: mode, block indentation and stop sequences combined.

    ``next_line`` is the first non-blank line below the cursor: a brace language keeps the
    generated closing bracket only when the document has no closer there already.
    """
    if mode == SINGLE:
        return StopRule(SINGLE, sequences=tuple(user_stops))
    if min_indent is None:
        min_indent = block_indent(before, indent, language)
    closer_indent = None
    if language.braces and opens_block(before, language):
        width = indent_width(indent)
        has_closer = (
            next_line is not None
            and indent_width(next_line) == width
            and _is_closer(next_line.strip(), language.closers)
        )
        closer_indent = None if has_closer else width
    return StopRule(
        MULTI,
        min_indent=min_indent,
        closer_indent=closer_indent,
        closers=language.closers,
        sequences=tuple(language.stops) + tuple(user_stops),
    )
