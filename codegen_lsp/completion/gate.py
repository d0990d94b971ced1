"""Which suggestions to show, and where not to ask the model at all: the suggestion gate.

Two decisions, both made in plain Python from data shipped beside the default model
(``default_model/gate.json``, written by ``python -m model.gate`` from typing replays):

- **after generation** (:meth:`Gate.judge`): a logistic regression over what the engine knows
  about a suggestion (the log-probabilities of its tokens: first, first two, mean, lowest;
  its length in characters and lines; why it ended), where the cursor is (line start or
  end, the character before it, in a comment or a string, indentation, mode, the word being
  typed) and what the text above says (does the word it completes occur there?) estimates
  the chance that the user takes at least its first word; below the threshold it is hidden.
- **before generation** (:meth:`Gate.skip_reason`): positions where a suggestion is almost
  never taken (the rules named in the data, e.g. mid-word in a comment) skip the model run.

The features mean the same for any CodeGen checkpoint: token log-probabilities are
probabilities (no model-specific scale), lengths are in characters, not tokens, and the cursor
and text features do not depend on the model. ``filter: off`` shows everything and never skips;
``auto`` uses the data's threshold; a number is a threshold of its own.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.languages import IDENTIFIER
from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.completion.postprocess import Around, postprocess
from codegen_lsp.completion.stopping import MULTI
from codegen_lsp.engine.api import Candidate

log = logging.getLogger(__name__)

GATE_FILE = Path(__file__).resolve().parent.parent / "default_model" / "gate.json"
FORMAT = 1
LOGPROB_FLOOR = -12.0  # lower log-probabilities count as this (one unlikely token is enough)
STRING_SCAN_CHARS = 4000  # text before the cursor searched for an open triple-quoted string
OPEN = "([{"
CLOSE = ")]}"
PARTIAL_CHARS = 64  # the word being typed: at most this long
MARGIN_CEILING = 12.0  # larger margins count as this (the choice was all but certain)
_WORD = re.compile(r"\w")
_PARTIAL = re.compile(r"\w*$")
_FIRST_WORD = re.compile(r"\s*(\w+)")
_HEAD = re.compile(r"\s*(?:\w+|[^\w\s]+)")  # a suggestion's first word or run of symbols


@dataclass(frozen=True)
class Place:
    """Where the cursor is, as the gate sees it (no model involved)."""

    line_start: bool  # only indentation before the cursor
    line_end: bool  # nothing but whitespace after it on its line
    previous: str  # class of the character before it: word, space, dot, open, close, ...
    next_word: bool  # a word character right after the cursor
    in_comment: bool
    in_string: bool
    indent: int  # columns of indentation
    language: str
    partial: str = ""  # the word characters right before the cursor (a word being typed)
    text: str = ""  # the text before the cursor (its last STRING_SCAN_CHARS characters)

    @classmethod
    def of(cls, cursor: Cursor) -> Place:
        """The place of ``cursor``."""
        before, after = cursor.before, cursor.after
        text = cursor.text_before(STRING_SCAN_CHARS)
        comment, string = _comment_or_string(before, cursor.language.comment)
        if not string and cursor.language.name == "python":
            string = _in_triple_quotes(text)
        return cls(
            line_start=not before.strip(),
            line_end=not after.strip(),
            previous=_char_class(before[-1:]),
            next_word=bool(_WORD.match(after[:1])),
            in_comment=comment,
            in_string=string,
            indent=len(cursor.indent.expandtabs(4)),
            language=cursor.language.name,
            partial=_PARTIAL.search(before[-PARTIAL_CHARS:]).group(),  # type: ignore[union-attr]
            text=text,
        )


def _char_class(char: str) -> str:
    if not char:
        return "start"
    if _WORD.match(char):
        return "word"
    if char.isspace():
        return "space"
    if char in OPEN:
        return "open"
    if char in CLOSE:
        return "close"
    if char in "'\"`":
        return "quote"
    return {".": "dot", ",": "comma", ":": "colon", "=": "equals"}.get(char, "other")


def _comment_or_string(before: str, comment: str) -> tuple[bool, bool]:
    """Whether the end of the line text ``before`` is in a line comment or a string literal
    (quotes and backslash escapes of the line; a triple quote counts as a quote)."""
    quote = ""
    i = 0
    while i < len(before):
        char = before[i]
        if quote:
            if char == "\\":
                i += 1
            elif before.startswith(quote, i):
                i += len(quote) - 1
                quote = ""
        elif comment and before.startswith(comment, i):
            return True, False
        elif char in "'\"`":
            quote = before[i : i + 3] if before[i : i + 3] == char * 3 else char
            i += len(quote) - 1
        i += 1
    return False, bool(quote)


def _in_triple_quotes(text: str) -> bool:
    """Whether ``text`` ends inside a Python triple-quoted string (docstrings), by the
    parity of triple quotes in it (a scan of bounded text: a heuristic)."""
    return (text.count('"""') + text.count("'''")) % 2 == 1


# The before-generation rules: a name (the data lists the ones in force) and the test.
SKIP_RULES: dict[str, Callable[[Place], bool]] = {
    "comment mid-word": lambda p: p.in_comment and p.previous == "word",
    "inside a word": lambda p: p.previous == "word" and p.next_word,
    "string mid-word": lambda p: p.in_string and p.previous == "word",
    "after a closing bracket at the line end": lambda p: p.previous == "close" and p.line_end,
    "in a comment": lambda p: p.in_comment,
    "in a string": lambda p: p.in_string,
}

FEATURES = (
    "first_lp", "head_lp", "mean_lp", "min_lp", "tokens", "chars", "lines",
    "ends_stop", "ends_eos", "ends_length", "ends_early", "starts_newline", "multi",
    "line_start", "line_end", "next_word", "in_comment", "in_string", "indent", "python",
    "prev_word", "prev_space", "prev_dot", "prev_open", "prev_close", "prev_quote",
    "prev_comma", "prev_colon", "prev_equals", "prev_other",
    "word_seen", "line_seen", "words_seen", "partial", "starts_word", "completes_seen",
    "first_margin", "head_margin", "mean_margin", "min_margin", "word_lp", "word_margin",
    "word_tokens", "first_entropy", "mean_entropy", "word_entropy",
)  # fmt: skip


def _seen(word: str, text: str) -> bool:
    """Whether ``word`` occurs as a whole word in ``text``."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def context_values(text: str, place: Place) -> dict[str, float]:
    """What the text before the cursor says about suggestion ``text``: its first word (with
    the word being typed, when it goes on with it), its first line and its words seen there."""
    above = place.text[: len(place.text) - len(place.partial)]
    starts_word = bool(_WORD.match(text[:1]))
    first = _FIRST_WORD.match(text)
    word = (place.partial if starts_word else "") + (first.group(1) if first else "")
    word_seen = len(word) >= 2 and _seen(word, above)
    line = text.strip().split("\n")[0].strip()
    words = IDENTIFIER.findall(text)
    return {
        "word_seen": word_seen,
        "line_seen": len(line) >= 6 and line in above,
        "words_seen": sum(_seen(w, above) for w in words) / len(words) if words else 0.0,
        "partial": math.log1p(len(place.partial)),
        "starts_word": starts_word,
        "completes_seen": word_seen and bool(place.partial) and starts_word,
    }


def token_values(candidate: Candidate) -> dict[str, float]:
    """What the engine's per-token figures say about ``candidate``'s head: the margins and
    entropies of its first tokens and of all, and the log-probability, lowest margin and
    highest entropy of the tokens of its first word (or run of symbols). NaN where the engine
    gives no margins or entropies (the model then reads the feature's mean: no evidence)."""
    head = _HEAD.match(candidate.text)
    end = head.end() if head else len(candidate.text)
    n = max(1, sum(start < end for start in candidate.token_starts))
    margins = [m if math.isnan(m) else min(MARGIN_CEILING, m) for m in candidate.token_margins]
    margins = margins or [math.nan]
    entropies = list(candidate.token_entropies) or [math.nan]
    lps = [max(LOGPROB_FLOOR, lp) for lp in candidate.token_logprobs] or [LOGPROB_FLOOR]
    return {
        "first_margin": margins[0],
        "head_margin": min(margins[:2]),
        "mean_margin": sum(margins) / len(margins),
        "min_margin": min(margins),
        "word_lp": sum(lps[:n]),
        "word_margin": min(margins[:n]),
        "word_tokens": math.log1p(n),
        "first_entropy": entropies[0],
        "mean_entropy": sum(entropies) / len(entropies),
        "word_entropy": max(entropies[:n]),
    }


def features(text: str, candidate: Candidate, place: Place, mode: str) -> list[float]:
    """The gate's inputs for suggestion ``text`` (``candidate``'s text after
    post-processing), in FEATURES order."""
    logprobs, finish = candidate.token_logprobs, candidate.finish_reason
    lps = [max(LOGPROB_FLOOR, lp) for lp in logprobs] or [LOGPROB_FLOOR]
    body = text.strip()
    values = {
        "first_lp": lps[0],
        "head_lp": sum(lps[:2]),
        "mean_lp": sum(lps) / len(lps),
        "min_lp": min(lps),
        "tokens": math.log1p(len(logprobs)),
        "chars": math.log1p(len(body)),
        "lines": min(4, body.count("\n") + 1),
        "ends_stop": finish == "stop",
        "ends_eos": finish == "eos",
        "ends_length": finish in ("length", "time"),
        "ends_early": finish == "early",
        "starts_newline": text.startswith("\n"),
        "multi": mode == MULTI,
        "line_start": place.line_start,
        "line_end": place.line_end,
        "next_word": place.next_word,
        "in_comment": place.in_comment,
        "in_string": place.in_string,
        "indent": min(place.indent, 24) / 4,
        "python": place.language == "python",
        **{f"prev_{c}": place.previous == c for c in ("word", "space", "dot", "open")},
        **{f"prev_{c}": place.previous == c for c in ("close", "quote", "comma", "colon")},
        "prev_equals": place.previous == "equals",
        "prev_other": place.previous == "other",
        **context_values(text, place),
        **token_values(candidate),
    }
    return [float(values[name]) for name in FEATURES]


@dataclass(frozen=True)
class GateModel:
    """The gate's data: the features it reads (a subset of FEATURES), their standardisation,
    logistic-regression weights, the default threshold and the before-generation rules in
    force."""

    names: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    skip_rules: tuple[str, ...]
    path: str = ""
    # the share of shown suggestions whose first word is taken at the threshold, as measured
    # out of fold on the training replay (what the default is expected to give)
    accept_target: float = math.nan
    columns: tuple[int, ...] = ()  # where each name is in FEATURES

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(FEATURES.index(n) for n in self.names))

    @classmethod
    def from_json(cls, data: dict[str, Any], path: str = "") -> GateModel:
        """The model in ``data``; ValueError naming what does not fit this code."""
        if data.get("format") != FORMAT:
            raise ValueError(f"gate data format {data.get('format')!r}, expected {FORMAT}")
        names = tuple(data["features"])
        if unread := [n for n in names if n not in FEATURES]:
            raise ValueError(f"gate data features {unread} are not computed by this code")
        unknown = [r for r in data["skip_rules"] if r not in SKIP_RULES]
        if unknown:
            raise ValueError(f"gate data names unknown skip rules {unknown}")
        columns = (data["mean"], data["scale"], data["weights"])
        if any(len(c) != len(names) for c in columns):
            raise ValueError("gate data: mean, scale and weights need one value per feature")
        return cls(
            names,
            tuple(map(float, data["mean"])),
            tuple(float(s) or 1.0 for s in data["scale"]),
            tuple(map(float, data["weights"])),
            float(data["bias"]),
            float(data["threshold"]),
            tuple(data["skip_rules"]),
            path,
            float(data.get("accept_target", math.nan)),
        )

    def score(self, values: Sequence[float]) -> float:
        """The estimated chance that the first word is taken, for ``values`` (all FEATURES,
        in order; a NaN one, which the engine could not tell, counts as its mean)."""
        picked = [values[i] for i in self.columns]
        z = self.bias + sum(
            w * (v - m) / s
            for w, v, m, s in zip(self.weights, picked, self.mean, self.scale, strict=True)
            if not math.isnan(v)
        )
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


@cache
def load_gate(path: Path = GATE_FILE) -> GateModel | None:
    """The gate data at ``path`` (None when there is none or it cannot be read: nothing is
    filtered, and the reason is logged once)."""
    if not path.is_file():
        return None
    try:
        return GateModel.from_json(json.loads(path.read_text(encoding="utf-8")), str(path))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("suggestion gate off: %s: %s", path, exc)
        return None


def threshold_of(setting: str | float, model: GateModel | None) -> float | None:
    """The threshold for the ``filter`` setting: None shows everything."""
    if setting == "off" or model is None:
        return None
    return model.threshold if setting == "auto" else float(setting)


@dataclass(frozen=True)
class Verdict:
    """The gate's view of one suggestion: its score, whether it is shown, the features it
    read, and the candidate it came from."""

    text: str
    score: float
    shown: bool
    values: tuple[float, ...]
    candidate: Candidate | None = None


class Gate:
    """The gate for one request's options."""

    def __init__(self, options: CompletionOptions, model: GateModel | None = None) -> None:
        self.model = load_gate() if model is None else model
        self.threshold = threshold_of(options.filter, self.model)
        self.min_length = options.min_length

    def skip_reason(self, place: Place) -> str:
        """Why the model is not asked at ``place`` ("" when it is)."""
        if self.threshold is None or self.model is None:
            return ""
        rule = next((r for r in self.model.skip_rules if SKIP_RULES[r](place)), "")
        return f"no model run {rule}" if rule else ""

    def judge(
        self, candidates: Sequence[Candidate], around: Around, place: Place, mode: str
    ) -> tuple[list[str], list[Verdict]]:
        """The suggestions to show out of ``candidates`` (post-processed, once each) and the
        verdict on every non-empty one, at ``place`` (the cursor's when the request was
        made). A candidate without token log-probabilities (an engine that gives none) is
        not judged: shown, scored 1."""
        shown: list[str] = []
        verdicts: list[Verdict] = []
        for candidate in candidates:
            for text in postprocess([candidate.text], around):
                lps = candidate.token_logprobs
                values = features(text, candidate, place, mode)
                score = self.model.score(values) if self.model is not None and lps else 1.0
                ok = self.threshold is None or score >= self.threshold  # thresholds are <= 1
                ok = ok and len(text.strip()) >= self.min_length
                verdicts.append(Verdict(text, score, ok, tuple(values), candidate))
                if ok and text not in shown:
                    shown.append(text)
        return shown, verdicts
