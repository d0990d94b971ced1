"""``codegen-lsp bench context``: what definitions and recent edits do to suggestions.

A held-out cross-file replay through the suggestion service on the shipped model (cases:
``context_cases``). For every case the document is the module as it is, with the cursor line
typed up to just after ``name(``; the suggestion's first line is compared with the rest of the
real line (exact match, and edit similarity: 1 - Levenshtein distance / the longer length).

- definitions off / workspace (the package's own files) / all (libraries too), on
  cross-file calls and on the other calls (which must not get worse). With definitions on,
  the service asks at the cursor, jedi answers (as jedi-language-server would), and the
  measured request comes after: as when the name was typed a few keystrokes before the
  suggestion that counts.
- recent edits: the module that defines the name and two other modules of the package are
  open; off, the snippet block is chosen by similarity alone; on, the definition's lines are
  that module's latest edit ("edit a function, then type a call to it elsewhere").
- keystrokes: the cursor line typed one character at a time from its indentation, a request
  per keystroke, jedi answering between keystrokes: tokens prefilled per model run and the
  milliseconds each keystroke spends on context (snippets and definitions), without and with.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from codegen_lsp.commands.bench.context_cases import PACKAGES, Case, JediResolver, find_cases
from codegen_lsp.commands.bench.probes import machine_info
from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import CompletionSkipped
from codegen_lsp.completion.languages import PYTHON
from codegen_lsp.completion.neighbors import Neighbor
from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.completion.service import SuggestionService

HELP = "definitions and recent edits in the prompt: a held-out cross-file replay"
MODES = ("off", "workspace", "all")  # the `definitions` setting's values


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench context``."""
    p.add_argument("--packages", default=",".join(PACKAGES), help="held-out packages (comma list)")
    p.add_argument("--cases", type=int, default=30, help="cross-file (and other) calls per package")
    p.add_argument("--per-file", type=int, default=4, help="calls of each kind per module")
    p.add_argument("--typed", type=int, default=12, help="cases whose line is typed key by key")
    p.add_argument("--out", default="bench/results", help="folder for context.json")


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len): 1.0 for equal strings."""
    if not a and not b:
        return 1.0
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return 1 - row[-1] / max(len(a), len(b))


def _cursor(case: Case, typed: str) -> tuple[Cursor, str]:
    """The cursor with ``typed`` as the cursor line's text before it; the document's text."""
    lines = case.path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[case.line] = typed + "\n"
    shown = str(case.path.relative_to(case.root))
    return Cursor.at(lines, case.line, len(typed), PYTHON, shown), "".join(lines)


class Replay:
    """The service on one engine, with jedi answering its definition requests."""

    def __init__(self, service: SuggestionService, base: CompletionOptions) -> None:
        self.service = service
        self.base = base
        self.resolver = JediResolver()
        service.editor.resolve = self.resolver.ask

    def options(self, **changes: Any) -> None:
        """The base options with ``changes``."""
        options = dataclasses.replace(self.base, **changes)
        self.resolver.workspace_only = options.definitions == "workspace"
        self.service.configure(options)

    async def suggest(
        self, case: Case, typed: str, key: str, fresh: bool = True
    ) -> tuple[str, Any]:
        """The first line of the suggestion at ``typed`` (``fresh``: never from type-ahead)."""
        cursor, text = _cursor(case, typed)
        if fresh:
            self.service.completer.typeahead.forget(key)
        try:
            out = await self.service.suggest(key, lambda: cursor)
        except CompletionSkipped:
            return "", None
        if self.resolver.pending:
            self.resolver.answer(case, text, self.service.editor.store)
        first = out.texts[0].split("\n")[0] if out.texts else ""
        return first, out.stats

    async def accuracy(self, cases: list[Case], label: str, log: Callable[[str], None]) -> dict:
        """Exact match and edit similarity of ``cases`` under the current options."""
        exact, similar = [], []
        for n, case in enumerate(cases):
            key = f"{label}:{case.path}:{case.line}"
            typed = case.path.read_text(encoding="utf-8").splitlines()[case.line][: case.column]
            if self.service.options.definitions != "off":
                await self.suggest(case, typed, key)  # asks; jedi answers
            got, _ = await self.suggest(case, typed, key)
            exact.append(got.rstrip() == case.expected.rstrip())
            similar.append(edit_similarity(got.rstrip(), case.expected.rstrip()))
            self.service.forget(key)
            if n % 20 == 19:
                log(f"  {label}: {n + 1}/{len(cases)}")
        return {
            "cases": len(cases),
            "exact_match": round(sum(exact) / max(1, len(exact)), 4),
            "edit_similarity": round(statistics.fmean(similar) if similar else 0.0, 4),
        }

    async def keystrokes(self, cases: list[Case], label: str) -> dict:
        """Type each case's line key by key: prefilled tokens per model run, context ms."""
        prefilled: list[int] = []
        context: list[float] = []
        served = 0
        for case in cases:
            key = f"{label}:keys:{case.path}:{case.line}"
            line = case.path.read_text(encoding="utf-8").splitlines()[case.line]
            indent = len(line) - len(line.lstrip())
            engine = self.service.worker.engine
            if engine is not None:
                engine.clear_cache()  # each line starts cold: its first keystroke prefills all
            for end in range(indent + 1, case.column + 1):
                before = self.service.editor.timed
                _, stats = await self.suggest(case, line[:end], key, fresh=False)
                served += 1
                if self.service.editor.timed > before:
                    context.append(self.service.editor.last_context_ms)
                if stats is not None:
                    prefilled.append(stats.prefilled_tokens)
            self.service.forget(key)
        return {
            "keystrokes": served,
            "model_runs": len(prefilled),
            "prefilled_median": statistics.median(prefilled) if prefilled else None,
            "prefilled_mean": round(statistics.fmean(prefilled), 2) if prefilled else None,
            "context_ms_p50": round(statistics.median(context), 3) if context else None,
            "context_ms_p95": round(sorted(context)[int(0.95 * (len(context) - 1))], 3)
            if context
            else None,
        }


def neighbors_for(case: Case, files: dict[str, list[Path]], edits: bool) -> list[Neighbor]:
    """The defining module and two other modules of the package, as open documents."""
    defining = case.root / case.defined_in
    others = [p for p in files[case.package] if p not in (defining, case.path)][:2]
    out = []
    for path in [defining, *others]:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        edited = (case.def_line,) if edits and path == defining else ()
        out.append(Neighbor(str(path.relative_to(case.root)), lines, 1, edited))
    return out


def _open_modules(
    cases: list[Case], files: dict[str, list[Path]], edits: bool
) -> Callable[[str], list[Neighbor]]:
    """The service's ``neighbors`` hook: each case's document sees :func:`neighbors_for`."""
    by_key = {f"{c.path}:{c.line}": c for c in cases}

    def neighbors(key: str) -> list[Neighbor]:
        case = by_key.get(key.split(":", 1)[1])
        return neighbors_for(case, files, edits) if case is not None else []

    return neighbors


async def _run(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from codegen_lsp.commands.bench.context_cases import package_files
    from codegen_lsp.engine.api import EngineSpec
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.worker import Worker

    packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    cases: list[Case] = []
    files: dict[str, list[Path]] = {}
    for package in packages:
        found = find_cases(package, args.per_file, args.cases)
        files[package] = package_files(package)[1]
        log(f"{package}: {sum(c.cross for c in found)} cross-file, "
            f"{sum(not c.cross for c in found)} other calls")  # fmt: skip
        cases += found
    cross = [c for c in cases if c.cross]
    other = [c for c in cases if not c.cross]
    worker = Worker(load_engine)
    engine = worker.load(EngineSpec()).result()
    service = SuggestionService(worker, log, debounce_s=0.0)
    service.ready = lambda: ""
    from codegen_lsp.server.settings import Settings

    base = dataclasses.replace(Settings().completion_options(engine.info), answer_early=False)
    replay = Replay(service, base)
    result: dict[str, Any] = {"engine": engine.description, "packages": packages}
    try:
        for mode in MODES:
            replay.options(definitions=mode)
            result[f"cross_definitions_{mode}"] = await replay.accuracy(cross, f"x{mode}", log)
            result[f"other_definitions_{mode}"] = await replay.accuracy(other, f"o{mode}", log)
            log(f"definitions {mode}: {result[f'cross_definitions_{mode}']}, "
                f"other: {result[f'other_definitions_{mode}']}")  # fmt: skip
        for name, on in (("off", False), ("on", True)):
            replay.options(definitions="off", recent_edits=on)
            service.neighbors = _open_modules(cross, files, on)
            result[f"cross_recent_edits_{name}"] = await replay.accuracy(cross, f"e{name}", log)
            log(f"recent edits {name}: {result[f'cross_recent_edits_{name}']}")
        service.neighbors = lambda key: []
        typed = cross[: args.typed]
        for mode in MODES:
            replay.options(definitions=mode)
            result[f"keystrokes_definitions_{mode}"] = await replay.keystrokes(typed, f"k{mode}")
            log(f"keystrokes {mode}: {result[f'keystrokes_definitions_{mode}']}")
        resolve = replay.resolver.ms
        result["jedi_resolve_ms_p50"] = round(statistics.median(resolve), 1) if resolve else None
        result["examples"] = [dataclasses.asdict(c) | {"path": str(c.path), "root": str(c.root)}
                              for c in cross[:5]]  # fmt: skip
    finally:
        worker.close()
    return result


def run(args: argparse.Namespace) -> int:
    """Run the replay; write bench/results/context.json and print the table."""
    started = time.time()

    def log(message: str) -> None:
        print(f"[context {time.time() - started:5.0f}s] {message}", flush=True)

    import jedi

    info = machine_info()
    result = asyncio.run(_run(args, log))
    result |= {"machine": info, "jedi": jedi.__version__, "wall_s": round(time.time() - started)}
    result["load_average_after"] = machine_info()["load_average"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "context.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table(result))
    return 0


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(r: dict[str, Any]) -> str:
    """The markdown table of a result."""
    rows = [_row("Lines", "Setting", "Cases", "Exact match", "Edit similarity"), _row(*["---"] * 5)]
    for kind, label in (("cross", "cross-file call"), ("other", "other call")):
        for mode in MODES:
            s, shown = r[f"{kind}_definitions_{mode}"], f"definitions {mode}"
            em, es = f"{s['exact_match']:.3f}", f"{s['edit_similarity']:.3f}"
            rows.append(_row(label, shown, s["cases"], em, es))
    for name in ("off", "on"):
        s = r[f"cross_recent_edits_{name}"]
        em, es = f"{s['exact_match']:.3f}", f"{s['edit_similarity']:.3f}"
        rows.append(
            _row("cross-file call, 3 modules open", f"recent edits {name}", s["cases"], em, es)
        )
    rows += ["", _row("Typing the call lines", "Keystrokes", "Model runs",
                      "Tokens prefilled per run (median / mean)",
                      "Context ms per keystroke (p50 / p95)"), _row(*["---"] * 5)]  # fmt: skip
    for mode in MODES:
        k, shown = r[f"keystrokes_definitions_{mode}"], f"definitions {mode}"
        prefilled = f"{k['prefilled_median']} / {k['prefilled_mean']}"
        ms = f"{k['context_ms_p50']} / {k['context_ms_p95']}"
        rows.append(_row(shown, k["keystrokes"], k["model_runs"], prefilled, ms))
    return "\n".join(rows)
