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
