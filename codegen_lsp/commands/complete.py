"""``codegen-lsp complete FILE --line L --character C``: one completion, no LSP.

Runs the same path as the server (worker, :class:`Completer`, stop rules, filters) once and
prints the suggestion(s): the text that would be inserted at the cursor. ``--line`` and
``--character`` are 0-based like LSP positions; the character counts code points.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codegen_lsp.completion.context import Cursor

HELP = "print the completion at FILE:LINE:CHARACTER (the server's code path, no editor)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``complete``."""
    p.add_argument("file", help="source file ('-' reads standard input)")
    p.add_argument(
        "--line", type=int, required=True, help="0-based line (an editor's line 42 is --line 41)"
    )
    p.add_argument(
        "--character",
        type=int,
        default=None,
        help="0-based column in code points (default: the end of the line)",
    )
    p.add_argument("--model", help="checkpoint directory or hub id (default: the shipped model)")
    # Left out: the server's default (the settings' declaration), as for an editor.
    p.add_argument("--candidates", type=int)
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--multiline", choices=["auto", "always", "never"])
    p.add_argument("--context-tokens", type=int)
    p.add_argument("--header", choices=["auto", "on", "off"])
    p.add_argument(
        "--filter",
        type=_filter,
        help="the suggestion gate: auto (default), off (show any suggestion) or a threshold 0-1",
    )
    p.add_argument("--device")
    p.add_argument("--dtype")
    p.add_argument("--quantize")
    p.add_argument("--language", help="LSP languageId (default: from the file extension)")
    p.add_argument("--allow-download", action="store_true")
    p.add_argument("--json", action="store_true", help="print a JSON list of suggestions")
    p.add_argument("-v", "--verbose", action="store_true", help="log details, with tracebacks")


def _filter(value: str) -> str | float:
    """``--filter``: a word, or a number (the settings check the range)."""
    try:
        return float(value)
    except ValueError:
        return value


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``codegen`` settings the arguments give (those left out keep their defaults)."""
    given = {
        "model": args.model or "",
        "device": args.device,
        "dtype": args.dtype,
        "quantize": args.quantize,
        "allowDownload": args.allow_download,
        "candidates": args.candidates,
        "maxNewTokens": args.max_new_tokens,
        "temperature": args.temperature,
        "multiline": args.multiline,
        "contextTokens": args.context_tokens,
        "header": args.header,
        "filter": args.filter,
    }
    return {key: value for key, value in given.items() if value is not None}


def _fail(message: str) -> int:
    print(f"codegen-lsp: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    """Load the model, complete once through the suggestion service, print. Exits 1 with the
    reason on standard error when there is no suggestion, 2 on bad input."""
    # Everything that can be checked without torch is checked first: a mistake costs no wait.
    from codegen_lsp.codegen.locate import CheckpointError, check_local
    from codegen_lsp.completion.context import Cursor  # the runtime import
    from codegen_lsp.completion.languages import language_for, language_id_for_path
    from codegen_lsp.server.documents import split_lines
    from codegen_lsp.server.settings import parse_settings

    settings, problems, _ = parse_settings(_settings(args))
    if problems:
        return _fail("; ".join(problems))
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"{args.file}: {exc}")
    lines = split_lines(text)
    if not 0 <= args.line < len(lines):
        return _fail(f"--line {args.line} is outside the file (0..{len(lines) - 1}, 0-based)")
    width = len(lines[args.line].rstrip("\r\n"))
    character = width if args.character is None else args.character
    if not 0 <= character <= width:
        return _fail(
            f"--character {character} is outside line {args.line} (0..{width}, 0-based code points)"
        )
    if args.model:
        try:
            check_local(args.model)
        except CheckpointError as exc:
            return _fail(f"cannot load model: {exc}")
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    path = "stdin" if args.file == "-" else Path(args.file).name
    language = language_for(args.language or language_id_for_path(path), path)
    return _complete(args, settings, Cursor.at(lines, args.line, character, language, path))


def _complete(args: argparse.Namespace, settings: Any, cursor: Cursor) -> int:
    """Load the engine (the part that imports torch) and run the suggestion service once."""
    from codegen_lsp.completion.context import generation_note
    from codegen_lsp.completion.core import CompletionSkipped
    from codegen_lsp.completion.service import EMPTY, SuggestionService
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.worker import Worker

    worker = Worker(load_engine)
    try:
        progress = lambda message, pct: print(f"[{pct:3d}%] {message}", file=sys.stderr)  # noqa: E731
        try:
            engine = worker.load(settings.engine_spec(), progress).result()
        except Exception as exc:  # noqa: BLE001 - load errors are shown as one line
            return _fail(f"cannot load model: {exc}")
        service = SuggestionService(worker, lambda message: print(message, file=sys.stderr))
        service.ready = lambda: ""
        options = settings.completion_options(engine.info)  # one answer, whole: not early
        service.configure(dataclasses.replace(options, answer_early=False))
        note = generation_note(options.max_new_tokens, engine.n_ctx, "--max-new-tokens")
        if note:
            print(note, file=sys.stderr)
        out = asyncio.run(service.suggest(cursor.path, lambda: cursor))
    except CompletionSkipped as skipped:
        return _fail(str(skipped))
    finally:
        worker.close()
    s = out.stats
    figures = f"prompt {s.prompt_tokens} tokens, generated {s.generated_tokens}, " if s else ""
    summary = f"[{out.mode}-line; {figures}{s.total_ms if s else 0:.0f} ms; {engine.description}]"
    if not any(t.strip() for t in out.texts):
        print(summary, file=sys.stderr)
        why = EMPTY if not out.texts else "empty"
        hidden = [v for v in out.verdicts or () if not v.shown]
        if hidden:
            why = f"the gate hid it (score {hidden[0].score:.2f}; --filter off shows it)"
        print(f"codegen-lsp: no suggestion here: {why}", file=sys.stderr)
        return 1
    _print(out.texts, args.json)
    print(summary, file=sys.stderr)
    return 0


def _print(suggestions: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(suggestions, ensure_ascii=False))
    elif len(suggestions) == 1:
        print(suggestions[0])
    else:
        for i, s in enumerate(suggestions, 1):
            print(f"--- suggestion {i} ---\n{s}")
