"""Post-processing of generated text: a list of small pure filters.

Each filter takes a candidate and the text around the cursor and returns the candidate,
changed or not, or None to drop it. :func:`postprocess` runs them in order over every
candidate and removes duplicates.
"""

from __future__ import annotations

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
            result = f(result, around)
            if result is None:
                break
        if result is not None and result not in out:
            out.append(result)
    return out
