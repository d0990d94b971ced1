"""Typing replays for the suggestion gate: held-out code typed through the suggestion service.

Held-out code is Python from installed packages that the shipped model never saw (it was
trained only on the CPython 3.11.7 standard library): ``TRAIN_PACKAGES`` for fitting the gate
(``python -m model.gate``), ``EVAL_PACKAGES`` for measuring it (``codegen-lsp bench gate``);
the two sets share no file. Files are taken in sha256(path) order, and in each file the lines
in sha256(path, line) order, so a replay is the same on any machine with the same package
versions (they are recorded).

A position is a cursor at a line start (after its indentation) or mid-line (a column inside
the line's text), with the file typed up to the cursor and nothing after it: the user is
writing the file top to bottom. The suggestion is compared with what the file really says
next: its first word, first 10 characters, or whole first line confirmed.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.metadata
import importlib.util
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import CompletionSkipped
from codegen_lsp.completion.gate import SKIP_RULES, Place
from codegen_lsp.completion.languages import language_for

TRAIN_PACKAGES = (
    "_pytest", "pluggy", "attr", "cattrs", "click", "h11", "anyio", "filelock", "packaging",
    "pyparsing", "rich", "tomlkit", "yaml", "parso", "tqdm", "typer",
)  # fmt: skip
EVAL_PACKAGES = ("jinja2", "pygls")
DISTRIBUTIONS = {
    "_pytest": "pytest",
    "attr": "attrs",
    "yaml": "PyYAML",
}  # import name -> distribution name
MIN_LINE_CHARS = 4  # shorter lines (``)``, ``else:``) are not replayed
_FIRST_WORD = re.compile(r"\s*(\w+|[^\w\s]+)")


@dataclass
class Position:
    """One replayed cursor."""

    path: str
    line: int
    column: int
    kind: str  # "start" (after the indentation) | "mid" (inside the line's text)
    before: str  # the document up to the cursor
    truth: str  # what the file says after the cursor


@dataclass
class Record:
    """What the service did at one position, and how much of it the file confirms."""

    path: str
    line: int
    column: int
    kind: str
    rules: list[str]  # the before-generation rules that hold here (in force or not)
    skipped: str = ""  # the service skipped the model run (the reason)
    text: str = ""  # the first suggestion shown ("" when none)
    score: float = -1.0  # the gate's score of the first suggestion (-1: none)
    values: list[float] = field(default_factory=list)  # its features
    shown: bool = False
    word: bool = False  # its first word is confirmed
    chars10: bool = False  # its first 10 characters (all of it when shorter)
    whole_line: bool = False  # its first non-blank line, to that line's end
    ms: float = 0.0
    raw: str = ""  # the first suggestion's candidate text, before post-processing
    token_logprobs: list[float] = field(default_factory=list)  # of its candidate's tokens
    token_starts: list[int] = field(default_factory=list)  # where each starts in ``raw``


def package_files(name: str) -> list[Path]:
    """The ``.py`` files of an installed package, sha256(relative path) order."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"package {name} is not installed (it is held-out code for the gate)")
    root = Path(next(iter(spec.submodule_search_locations)))
    files = [p for p in root.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: hashlib.sha256(str(p.relative_to(root)).encode()).digest())


def versions(packages: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each package (what a replay depends on)."""
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(DISTRIBUTIONS.get(name, name))
        except importlib.metadata.PackageNotFoundError:
            out[name] = "?"
    return out


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(":".join(map(str, parts)).encode()).digest()


def positions(packages: tuple[str, ...], per_file: int, files: int) -> list[Position]:
    """``per_file`` lines of each of the first ``files`` files of every package, each as a
    line-start and a mid-line position, in file order."""
    out = []
    for package in packages:
        for path in package_files(package)[:files]:
            text = path.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
            lines = text.split("\n")
            name = f"{package}/{path.name}"
            good = [i for i in range(3, len(lines)) if len(lines[i].strip()) >= MIN_LINE_CHARS]
            good.sort(key=lambda i: _digest(name, i))
            for i in sorted(good[:per_file]):
                line = lines[i].rstrip()
                indent = len(line) - len(line.lstrip())
                pick = int.from_bytes(_digest(name, i, "mid")[:4], "big")
                mid = indent + 1 + pick % (len(line) - indent - 1)
                above = "".join(f"{x}\n" for x in lines[:i])
                rest = "\n".join(lines[i + 1 :])
                for kind, column in (("start", indent), ("mid", mid)):
                    truth = line[column:] + "\n" + rest
                    out.append(Position(name, i, column, kind, above + line[:column], truth))
    return out


def confirmed(text: str, truth: str) -> tuple[bool, bool, bool]:
    """(first word, first 10 characters, first non-blank line) of suggestion ``text`` that
    ``truth``, the file's text after the cursor, confirms (trailing spaces not compared)."""
    truth = "\n".join(line.rstrip() for line in truth.split("\n"))
    word = _FIRST_WORD.match(text)
    start = len(text) - len(text.lstrip())
    end = text.find("\n", start)
    line = text if end < 0 else text[:end]
    whole = truth.startswith(line) and truth[len(line) : len(line) + 1] in ("", "\n")
    return bool(word and truth.startswith(word.group())), truth.startswith(text[:10]), whole


def cursor_of(position: Position) -> Cursor:
    """The cursor at the end of the position's document."""
    lines = position.before.split("\n")
    doc = [f"{x}\n" for x in lines[:-1]] + [lines[-1]]
    return Cursor.at(doc, len(doc) - 1, len(lines[-1]), language_for("python", "x.py"))


def rules_at(cursor: Cursor) -> list[str]:
    """The before-generation rules that hold at ``cursor``."""
    place = Place.of(cursor)
    return [name for name, rule in SKIP_RULES.items() if rule(place)]


async def _replay(service: Any, items: list[Position], progress: Any) -> list[Record]:
    out = []
    for n, position in enumerate(items):
        cursor = cursor_of(position)
        record = Record(
            position.path, position.line, position.column, position.kind, rules_at(cursor)
        )
        service.completer.typeahead.clear()  # each position on its own: no type-ahead
        started = time.perf_counter()
        try:
            got = await service.suggest(position.path, lambda c=cursor: c)
        except CompletionSkipped as skipped:
            record.skipped = str(skipped)
        else:
            record.shown = bool(got.texts)
            first = (got.verdicts or [None])[0]
            if first is not None:
                record.text, record.score, record.values = first.text, first.score, [*first.values]
                if first.candidate is not None:
                    record.raw = first.candidate.text
                    record.token_logprobs = [round(x, 4) for x in first.candidate.token_logprobs]
                    record.token_starts = list(first.candidate.token_starts)
            if got.texts:
                record.text = got.texts[0]
                record.word, record.chars10, record.whole_line = confirmed(
                    got.texts[0], position.truth
                )
            elif first is not None:  # hidden by the gate: still measured
                record.word, record.chars10, record.whole_line = confirmed(
                    first.text, position.truth
                )
        record.ms = (time.perf_counter() - started) * 1000
        out.append(record)
        if progress is not None and (n + 1) % 100 == 0:
            progress(f"{n + 1}/{len(items)} positions")
    return out


def replay(
    model: str | None, items: list[Position], settings: dict[str, Any], progress: Any = None
) -> list[Record]:
    """Every position through a suggestion service on ``model`` (None: the shipped one)
    with ``settings`` (the server's keys, e.g. ``{"filter": "off"}``)."""
    from codegen_lsp.completion.service import SuggestionService
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.worker import Worker
    from codegen_lsp.server.settings import parse_settings

    parsed, problems, _ = parse_settings({"model": model, **settings})
    if problems:
        raise SystemExit(f"settings: {problems}")
    worker = Worker(load_engine)
    try:
        engine = worker.load(parsed.engine_spec(), lambda *_: None).result()
        service = SuggestionService(worker, lambda message: None, debounce_s=0.0)
        service.ready = lambda: ""
        service.configure(parsed.completion_options(engine.info))
        return asyncio.run(_replay(service, items, progress))
    finally:
        worker.close()


def as_rows(records: list[Record]) -> list[dict[str, Any]]:
    """The records as JSON rows."""
    return [asdict(r) for r in records]
