"""Post-processing of generated text: a list of small pure filters.

Each filter takes a candidate and the text around the cursor and returns the candidate,
changed or not, or None to drop it. :func:`postprocess` runs them in order over every
candidate and removes duplicates.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Around:
    """The document text around the cursor that filters compare against."""

    line_after: str = ""  # rest of the cursor line (no line break)
    text_after: str = ""  # rest of the document after the cursor (a bounded prefix of it)


Filter = Callable[[str, Around], "str | None"]


def trim_trailing_whitespace(text: str, around: Around) -> str | None:
    """Remove trailing whitespace on every line and at the end."""
    return "\n".join(line.rstrip() for line in text.split("\n")).rstrip()


def drop_suffix_overlap(text: str, around: Around) -> str | None:
    """Remove the end of a suggestion that repeats the rest of the cursor line
    (``print("hi")`` typed before an existing ``)``)."""
    tail = around.line_after.strip()
    if tail and "\n" not in text and text.endswith(tail) and len(text) > len(tail):
        return text[: -len(tail)].rstrip()
    return text


LOOP_MAX_PERIOD = 4  # longest block of lines checked for repetition
LOOP_MIN_CHARS = 3  # shorter blocks (``)``, ``}``) repeat legitimately


def cut_loops(text: str, around: Around) -> str | None:
    """Keep one copy of a block of lines that the model started repeating.

    Small models (and greedy decoding in general) fall into loops: ``x = f(x)`` over and over,
    or the same two-line ``if`` again and again until the token limit. A block of 2 to
    ``LOOP_MAX_PERIOD`` lines followed by a complete identical copy, or one line three times
    in a row, is cut after its first copy. Two equal lines in a row are left alone (that is
    often real code: ``next(it)`` twice).
    """
    lines = text.split("\n")
    for i in range(1, len(lines)):
        for period in range(1, min(LOOP_MAX_PERIOD, i) + 1):
            block = lines[i - period : i]
            if sum(len(line.strip()) for line in block) < LOOP_MIN_CHARS:
                continue
            copies = 2 if period == 1 else 1  # further copies needed after the block
            tail = lines[i : i + period * copies]
            if len(tail) < period * copies or any(
                line != block[k % period] for k, line in enumerate(tail)
            ):
                continue
            # the loop may have begun earlier, in another phase: walk back to its start
            start = i - period
            while start > 0 and lines[start - 1] == lines[start - 1 + period]:
                start -= 1
            if start == 1 and lines[0].strip() and lines[period].endswith(lines[0]):
                start = 0  # the first line is the end of the cursor's line: one more copy
            return "\n".join(lines[: start + period])
    return text


# letters, a number (0x00 is one), an underscore, a run of other punctuation
_LEXEME = re.compile(r"\s*(?:[^\W\d_]+|0[xXoObB][0-9A-Fa-f]+|\d+|_|[^\w\s]+)")
INLINE_MAX_PERIOD = 8  # longest group of lexemes checked for repetition within a line
INLINE_COPIES_SHORT = 4  # a group of 1-2 lexemes must come this many times in a row
INLINE_COPIES_LONG = 3  # ... a longer group this many times


def inline_loop(line: str) -> int | None:
    """Where a line starts repeating a group of lexemes, or None. Lexemes are runs of
    letters, numbers, single underscores and runs of other punctuation, so a loop inside an
    identifier (``fixture_fixture_fixture_fixture_``) is one too.

    ``<response> <response> <response>`` and ``"a[0] = "a[0] = "a[0] =`` are loops; a group
    of one or two lexemes must come four times in a row (``0, 0, 0`` and ``x.y.z`` are code),
    a longer one three times, and a group without a letter never counts (``0x00, 0x00, ...``
    is a table). Lexemes are compared without their leading whitespace. The answer is the
    offset of the group's second copy."""
    # trailing whitespace matches no lexeme: left in, each of its positions would start a
    # scan to the end of the line (quadratic in the run)
    spans = [(m.start(), m.group().strip()) for m in _LEXEME.finditer(line.rstrip())]
    words = [w for _, w in spans]
    for i in range(len(words)):
        for period in range(1, INLINE_MAX_PERIOD + 1):
            copies = INLINE_COPIES_SHORT if period <= 2 else INLINE_COPIES_LONG
            end = i + period * copies
            if end > len(words):
                break
            group = words[i : i + period]
            if not any(word[:1].isalpha() for word in group):
                continue  # numbers and punctuation repeat in data: 0x00, 0x00, ...
            if all(words[j] == group[(j - i) % period] for j in range(i + period, end)):
                return spans[i + period][0]
    return None


def cut_inline_loops(text: str, around: Around) -> str | None:
    """Cut the suggestion where a line starts looping (Tabby's repetitive-token filter is
    the model): the first copy of the group stays, the loop and everything after go."""
    offset = 0
    for line in text.split("\n"):
        cut = inline_loop(line)
        if cut is not None:
            return text[: offset + cut].rstrip()
        offset += len(line) + 1
    return text


SUFFIX_LINE_MIN_CHARS = 4  # a shorter next line (``}``, ``)``) may well be written again


def cut_at_next_line(text: str, around: Around) -> str | None:
    """Cut a multi-line suggestion before it writes the document's next line again (with
    the text after the cursor in its prompt, an infilling model often runs into it)."""
    after = around.text_after.split("\n", 1)
    below = after[1] if len(after) > 1 else ""
    target = next((line.strip() for line in below.split("\n") if line.strip()), "")
    if len(target) < SUFFIX_LINE_MIN_CHARS or "\n" not in text:
        return text
    lines = text.split("\n")
    for i in range(1, len(lines)):
        if lines[i].strip() == target:
            return "\n".join(lines[:i]).rstrip()
    return text


def drop_blank(text: str, around: Around) -> str | None:
    """Drop suggestions that are only whitespace."""
    return text if text.strip() else None


def drop_repeat_of_after(text: str, around: Around) -> str | None:
    """Drop suggestions that only repeat the text already after the cursor."""
    if around.text_after.lstrip().startswith(text.strip()):
        return None
    return text


FILTERS: tuple[Filter, ...] = (
    trim_trailing_whitespace,
    cut_loops,
    cut_inline_loops,
    cut_at_next_line,
    drop_suffix_overlap,
    drop_blank,
    drop_repeat_of_after,
)


def postprocess(
    candidates: Iterable[str], around: Around, filters: Iterable[Filter] = FILTERS
) -> list[str]:
    """Run every filter over every candidate; keep the survivors once each, in order."""
    filters = tuple(filters)
    out: list[str] = []
    for text in candidates:
        result: str | None = text
        for f in filters:
            if result is None:
                break
            result = f(result, around)
        if result is not None and result not in out:
            out.append(result)
    return out
