"""Trimming a shown suggestion to its confident head, measured on a replay (``bench gate``).

Not shipped: a measurement of what cutting each shown suggestion at its first token (after
its first word) whose log-probability is below a bound would do. The first word is kept, so
the first-word share cannot move; what moves is how much of the suggestion is right. Per
bound, over the suggestions the ``auto`` run showed: the shares confirmed (first word, first
10 characters, whole line, the whole suggestion), the mean characters shown, the mean
characters of the confirmed prefix (what a word-by-word accept could take) and of the rest
(shown but wrong). The bounds are fixed here, not chosen on the measured code.
"""

from __future__ import annotations

import re
from typing import Any

from codegen_lsp.commands.bench.gate_replay import Position, confirmed

BOUNDS = (None, -3.0, -2.0, -1.0)  # None: as shown
_HEAD = re.compile(r"\s*(?:\w+|[^\w\s]+)")


def trimmed(row: dict[str, Any], bound: float | None) -> str:
    """The shown text of ``row`` cut at its first token after the first word whose
    log-probability is below ``bound`` (unchanged when the shown text is not a head of the
    candidate's, whose token starts the cut uses)."""
    text, raw = row["text"], row.get("raw", "")
    if bound is None or not raw.startswith(text):
        return text
    head = _HEAD.match(raw)
    end = head.end() if head else 0
    for lp, start in zip(row["token_logprobs"], row["token_starts"], strict=True):
        if start >= end and lp < bound:
            return text[: max(start, end)]
    return text


def _prefix(text: str, truth: str) -> int:
    """Characters of ``text`` (not counting whitespace at its ends) that ``truth`` confirms
    from the start."""
    k = 0
    while k < min(len(text), len(truth)) and text[k] == truth[k]:
        k += 1
    return len(text[:k].strip())


def measure(rows: list[dict[str, Any]], items: list[Position]) -> list[dict[str, Any]]:
    """The figures for each bound, over the shown rows of a replay of ``items``."""
    out = []
    for bound in BOUNDS:
        n = word = chars10 = line = whole = shown_chars = right = 0
        for row, item in zip(rows, items, strict=True):
            if not row["shown"]:
                continue
            text = trimmed(row, bound)
            truth = "\n".join(x.rstrip() for x in item.truth.split("\n"))
            a, b, c = confirmed(text, item.truth)
            n += 1
            word, chars10, line = word + a, chars10 + b, line + c
            whole += truth.startswith(text.rstrip())
            shown_chars += len(text.strip())
            right += _prefix(text, truth)
        d = max(1, n)
        out.append(
            {
                "bound": bound,
                "shown": n,
                "word": word / d,
                "chars10": chars10 / d,
                "whole_line": line / d,
                "whole_suggestion": whole / d,
                "chars_shown": shown_chars / d,
                "chars_confirmed": right / d,
                "chars_wrong": (shown_chars - right) / d,
            }
        )
    return out


def text(figures: list[dict[str, Any]]) -> str:
    """The figures as lines of text."""
    lines = ["trimming shown suggestions at a log-probability bound (measured, not shipped):"]
    for f in figures:
        name = "as shown" if f["bound"] is None else f"below {f['bound']:g}"
        lines.append(
            f"  {name}: first word {f['word']:.1%}, 10 chars {f['chars10']:.1%}, whole line "
            f"{f['whole_line']:.1%}, whole suggestion {f['whole_suggestion']:.1%}; chars shown "
            f"{f['chars_shown']:.1f}, confirmed {f['chars_confirmed']:.2f}, wrong "
            f"{f['chars_wrong']:.2f}"
        )
    return "\n".join(lines)
