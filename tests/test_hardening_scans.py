"""Every scan over user text in ``completion/`` and ``server/`` costs time in proportion to the
text (issue 21: ``\\w*$`` on a 64 KB line of hex held the whole server for ~20 s).

Each text-scanning function (``SCANNERS``; ``test_every_scanner_is_listed`` keeps the list
complete) is fed lines built by hypothesis from adversarial pieces (word characters, spaces,
quotes, ``#``, brackets, wide characters, line breaks): a head, a unit repeated to the size,
and a tail (``x = '`` + hex + ``'``). Its time is measured against a linear baseline on the
same text in the same run (a regex step per character), at sizes doubling from 1 KB: the
ratio may not grow more than ``GROWTH`` times from the smallest size (a quadratic scan grows it 16
times by 16 KB, and is stopped there). No wall-clock constant: a slow machine slows both,
and times are the thread's CPU time (other processes do not count).
The default run goes to 32 KB; ``-m slow`` runs ``test_scans_stay_linear_to_4mb`` to 4 MB.
The last tests bound the work on other files' snippets and what closed files keep (item 5).
``CODEGEN_LSP_SCAN_EXAMPLES=N`` tries more texts per function.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lsprotocol import types

from codegen_lsp.completion import postprocess, stopping
from codegen_lsp.completion.context import Cursor, build_prompt, count_line
from codegen_lsp.completion.core import Completer, CompletionOptions, EngineInfo, needs_healing
from codegen_lsp.completion.functions import find_stub
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.neighbors import Neighbor, NeighborContext, identifiers, query_of
from codegen_lsp.completion.typeahead import TypeAhead
from codegen_lsp.server import convert
from codegen_lsp.server.documents import Document, Documents, clean_text, split_lines
from codegen_lsp.server.positions import from_codepoints, to_codepoints

PY = language_for("python")
GO = language_for("go")
GROWTH = 8.0  # how much more a character may cost at the largest size than at 1 KB
SMALL = 1024
BASELINE = re.compile(r".", re.S)  # one regex step per character: a linear pass, ~50 ns each
EXAMPLES = int(os.environ.get("CODEGEN_LSP_SCAN_EXAMPLES", "1"))
LARGEST = 32 * 1024  # the default run; a quadratic scan is caught by 16 KB
PIECES = ["a", "0f", "_", "é", "中", "😀", " ", "\t", "#", " #", "'", '"', ":", "{", "}",
          "(", ")", ",", ";", ".", "\\", "`", "x = ", "def ", "pass", "...", "\n", "\r\n",
          "    ", "0x00, ", "<r> "]  # fmt: skip


def encode(text: str) -> list[int]:
    """A linear stand-in tokenizer: one id per UTF-8 byte."""
    return list(text.encode("utf-8", "surrogatepass"))


def cursor_at_end(text: str) -> Cursor:
    lines = split_lines(text)
    return Cursor.at(lines, len(lines) - 1, len(lines[-1]), PY, "t.py")


def edit_in_the_middle(text: str) -> None:
    doc = Document.open("file:///a.py", "python", 1, text)
    middle = types.Position(0, len(doc.lines[0]) // 2)
    doc.apply(types.TextDocumentContentChangePartial(types.Range(middle, middle), "x"), "utf-16")


def neighbour_block(text: str) -> str:
    lines = split_lines(text)
    context = NeighborContext()
    cursor = Cursor.at([text + "\n", "x"], 1, 1, PY, "t.py")
    return context.block("k", cursor, [Neighbor("n.py", lines, 1)], 2, 256, len)


def type_ahead(text: str) -> list[str]:
    cache = TypeAhead()
    cache.remember("k", text[: len(text) // 2], "", [text[len(text) // 2 :]])
    return cache.lookup("k", text, "")


def documents_close(text: str) -> None:
    docs = Documents()
    docs.open(types.TextDocumentItem("file:///a.py", "python", 1, text))
    docs.close("file:///a.py")


ENGINE = EngineInfo(n_ctx=2048, encode=encode)
OPTIONS = CompletionOptions(context_files=2)
AROUND = postprocess.Around

# (the functions it exercises, a call on one text)
SCANNERS: list[tuple[tuple[str, ...], Callable[[str], Any]]] = [
    (("convert.word_before",), convert.word_before),
    (("convert.inline_list", "documents.Document.position"),
     lambda t: convert.inline_list(Document.open("u", "python", 1, t), 0, len(t), ["x"], "utf-16")),
    (("convert.completion_list", "convert.fenced"),
     lambda t: convert.completion_list(Document.open("u", "py", 1, t), 0, len(t), [t], "utf-8")),
    (("positions.to_codepoints",), lambda t: to_codepoints(t, 2 * len(t) - 1, "utf-16")),
    (("positions.to_codepoints",), lambda t: to_codepoints(t, 4 * len(t) - 1, "utf-8")),
    (("positions.from_codepoints",), lambda t: from_codepoints(t, len(t), "utf-16")),
    (("documents.clean_text", "documents.split_lines", "documents.content"),
     lambda t: split_lines(clean_text(t))),
    (("documents.Document.apply", "documents.Document.index"), edit_in_the_middle),
    (("documents.Documents.close", "documents.Documents.others"), documents_close),
    (("stopping.opens_block", "stopping.strip_python_comment"),
     lambda t: stopping.opens_block(t, PY)),
    (("stopping.choose_mode", "stopping.block_indent", "stopping.make_stop_rule",
      "stopping.indent_width"),
     lambda t: stopping.make_stop_rule("multi", t, t[:100], GO, next_line=t)),
    (("stopping.choose_mode",), lambda t: stopping.choose_mode(t, "", "auto", PY)),
    (("stopping.end_of_block", "stopping.first_stop", "stopping.StopRule.cut_at",
      "stopping.StopRule.apply"),
     lambda t: stopping.make_stop_rule("multi", "{", "", GO).apply(t)),
    (("stopping.StopScan.feed", "stopping.CloserLine.add"),
     lambda t: stopping.make_stop_rule("multi", "{", "", GO).start().feed(t)),
    (("postprocess.inline_loop",), postprocess.inline_loop),
    (("postprocess.postprocess", "postprocess.trim_trailing_whitespace",
      "postprocess.drop_suffix_overlap", "postprocess.cut_loops", "postprocess.cut_inline_loops",
      "postprocess.cut_at_next_line", "postprocess.drop_blank",
      "postprocess.drop_repeat_of_after"),
     lambda t: postprocess.postprocess([t], AROUND(t, t[:2000]))),
    *[((f"postprocess.{f.__name__}",), lambda t, f=f: f(t, AROUND(t, t[:2000])))
      for f in postprocess.FILTERS],
    (("functions.find_stub", "functions.find_python_stub"),
     lambda t: find_stub(split_lines("def f(x):" + t + "\n" + t), 0, PY)),
    (("functions.find_brace_stub",), lambda t: find_stub(split_lines(t + "(a) {\n}"), 0, GO)),
    (("neighbors.identifiers",), identifiers),
    (("neighbors.query_of", "neighbors.clip"), lambda t: query_of(cursor_at_end(t + "\nx"))),
    (("neighbors.NeighborContext.block", "neighbors.best_windows", "neighbors.render",
      "neighbors.LineIndex.blocks", "neighbors.LineIndex.of", "neighbors.windows",
      "neighbors.window_text"), neighbour_block),
    (("context.Cursor.text_before", "context.Cursor.text_after",
      "context.Cursor.next_nonblank_line"),
     lambda t: (c := cursor_at_end(t)).text_before(4096) + c.text_after(2000)),
    (("context.count_line", "context.build_prompt"),
     lambda t: build_prompt(cursor_at_end(t), encode, 256) and count_line(t, encode, 256)),
    (("core.needs_healing",), lambda t: needs_healing(t, encode)),
    (("core.needs_healing",), lambda t: needs_healing(" " * len(t), encode)),
    (("core.Completer.prepare", "core.Completer.context_block", "core.infill_suffix",
      "core.Completer.finish"),
     lambda t: Completer().prepare("k", cursor_at_end(t), ENGINE, OPTIONS,
                                   [Neighbor("n.py", split_lines(t), 1)])),
    (("core.Completer.lookup", "typeahead.TypeAhead.lookup", "typeahead.TypeAhead.remember",
      "typeahead.remaining"), type_ahead),
]  # fmt: skip

# Functions that take text but do not scan it (or only a bounded part), with the reason.
NOT_SCANNING = {
    "context.header_text": "the language name and the path",
    "context.generation_note": "numbers",
    "core.Completer.prepare_body": "a stub's prompt: build_prompt and make_stop_rule, listed",
    "core.Completer.forget": "a key",
    "functions.Stub.replacement": "joins generated text (bounded by maxNewTokens)",
    "functions.Stub.preview": "dedents generated text (bounded by maxNewTokens)",
    "neighbors.jaccard": "two sets",
    "neighbors.NeighborContext.forget": "a key",
    "typeahead.TypeAhead.forget": "a key",
    "stopping.StopRule.strings": "the rule's own sequences",
    "languages.language_for": "a path's suffix",
    "languages.language_id_for_path": "a path's suffix",
    "service.SuggestionService.forget": "a key",
    "service.SuggestionService.count_accept": "a kind",
    "service.SuggestionService.suggest": "the completer's functions, listed",
    "service.SuggestionService.function_body": "find_stub and prepare, listed",
    "service.SuggestionService.decoding_status": "counters",
    "convert.command_arguments": "a uri",
    "convert.parse_command_arguments": "a uri",
    "convert.hover": "a stub's lines and generated text (fenced, listed)",
    "convert.code_action": "a uri",
    "convert.body_edit": "a stub's positions (Document.position, listed)",
    "documents.Documents.change": "Document.apply, listed",
    "documents.Documents.get": "a uri",
    "positions.normalize_encoding": "an encoding name",
    "features.generate_function": "the service, listed",
    "features.status_request": "no text",
    "features.status_command": "no text",
}
COMPLETION = ("context", "core", "functions", "neighbors", "postprocess", "typeahead",
              "stopping", "languages", "service")  # fmt: skip
SERVER = ("convert", "documents", "positions", "features")
MODULES = [f"codegen_lsp.completion.{m}" for m in COMPLETION]
MODULES += [f"codegen_lsp.server.{m}" for m in SERVER]


def text_functions() -> set[str]:
    """Public functions and methods of MODULES with a parameter typed with str or Cursor."""
    found: set[str] = set()

    def takes_text(f: Any) -> bool:
        params = {k: v for k, v in f.__annotations__.items() if k != "return"}
        return any("str" in str(v) or "Cursor" in str(v) for v in params.values())

    for name in MODULES:
        module = importlib.import_module(name)
        short = name.rsplit(".", 1)[1]
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj) and takes_text(obj):
                found.add(f"{short}.{attr}")
            if inspect.isclass(obj):
                for method, f in vars(obj).items():
                    if not method.startswith("_") and inspect.isfunction(f) and takes_text(f):
                        found.add(f"{short}.{attr}.{method}")
    return found


def test_every_scanner_is_listed() -> None:
    listed = {name for names, _ in SCANNERS for name in names}
    missing = text_functions() - listed - set(NOT_SCANNING)
    assert not missing, f"add these to SCANNERS (or NOT_SCANNING, with a reason): {missing}"
    assert not listed & set(NOT_SCANNING)


# --- timing -------------------------------------------------------------------------------
def loops_for(call: Callable[[], Any]) -> int:
    """How many calls of ``call`` take at least a millisecond (timer resolution, noise)."""
    loops = 1
    while loops < 1 << 16:
        start = time.thread_time()
        for _ in range(loops):
            call()
        if time.thread_time() - start >= 1e-3:
            break
        loops *= 4
    return loops


def timed(call: Callable[[], Any], loops: int) -> float:
    """CPU seconds per call of this thread (time spent descheduled on a busy machine is not
    counted), without the garbage collector (as timeit)."""
    gc.disable()
    try:
        start = time.thread_time()
        for _ in range(loops):
            call()
        return (time.thread_time() - start) / loops
    finally:
        gc.enable()


def cost(scan: Callable[[str], Any], text: str, repeats: int = 3) -> float:
    """Time of ``scan(text)`` over the baseline's on the same text: the median of ``repeats``
    pairs measured back to back (a burst of load on the machine hits both, or one pair)."""
    run = lambda: scan(text)  # noqa: E731
    base = lambda: BASELINE.sub("", text)  # noqa: E731
    loops, base_loops = loops_for(run), loops_for(base)
    return statistics.median(timed(run, loops) / timed(base, base_loops) for _ in range(repeats))


def make_text(head: str, unit: str, tail: str, size: int) -> str:
    body = unit * (size // len(unit) + 1)
    return head + body[: max(0, size - len(head) - len(tail))] + tail


def growth(scan: Callable[[str], Any], head: str, unit: str, tail: str, largest: int) -> float:
    """The cost ratio (scan time / baseline time) at each size from SMALL up to ``largest``,
    relative to the ratio at SMALL; the largest seen (sizes stop once it exceeds GROWTH)."""
    first = None
    worst = 1.0
    size = SMALL
    while size <= largest:
        ratio = cost(scan, make_text(head, unit, tail, size))
        first = ratio if first is None else first
        worst = max(worst, ratio / first)
        if worst > GROWTH:
            break
        size *= 2
    return worst


pieces = st.lists(st.sampled_from(PIECES), max_size=3).map("".join)
units = st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map("".join)
CASES = [  # the reported line and other known quadratic shapes, for every function
    ("DIGEST = '", "0123456789abcdef", "'"),
    ("x", " ", "x"),
    ("", " #", "'"),
    ("x", " ", ""),
    ("def f():", "a", "\n"),
]


def check(index: int, head: str, unit: str, tail: str, largest: int) -> None:
    names, scan = SCANNERS[index]
    worst = growth(scan, head, unit, tail, largest)
    assert worst <= GROWTH, (
        f"{names[0]}: a character costs {worst:.1f} times more at {largest} characters than at "
        f"{SMALL} (text {head!r} + {unit!r}... + {tail!r}): not linear"
    )


def _given(largest: int, examples: int) -> Callable[[Callable[..., None]], Any]:
    def wrap(test: Callable[..., None]) -> Any:
        for case in CASES:
            test = example(*case)(test)
        return settings(max_examples=examples, deadline=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))(
            given(head=pieces, unit=units, tail=pieces)(test))  # fmt: skip

    return wrap


@pytest.mark.parametrize("index", range(len(SCANNERS)), ids=[n[0] for n, _ in SCANNERS])
def test_scans_stay_linear(index: int) -> None:
    @_given(LARGEST, EXAMPLES)
    def run(head: str, unit: str, tail: str) -> None:
        check(index, head, unit, tail, LARGEST)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SCANNERS)), ids=[n[0] for n, _ in SCANNERS])
def test_scans_stay_linear_to_4mb(index: int) -> None:
    @_given(4 * 1024 * 1024, max(EXAMPLES, 5))
    def run(head: str, unit: str, tail: str) -> None:
        check(index, head, unit, tail, 4 * 1024 * 1024)

    run()


# --- other files' snippets (issue 21, item 5) ---------------------------------------------
BIG_LINES = 100_000


def big_document() -> list[str]:
    return [f"    total_{i} = compute_{i % 97}(line_items, tax_rate)\n" for i in range(BIG_LINES)]


def test_other_files_are_read_in_bounded_part_and_again_only_where_edited(monkeypatch) -> None:
    """A 5 MB other file: the first request reads a bounded part of it, one with a new query
    reads only its kept snippet again, and after an edit of one line only that line more (the
    index is by line text). Counted in characters handed to the identifier scan."""
    from codegen_lsp.completion import neighbors

    read = [0]
    scan = neighbors.identifiers

    def counting(text: str) -> frozenset[str]:
        read[0] += len(text)
        return scan(text)

    monkeypatch.setattr(neighbors, "identifiers", counting)
    lines = big_document()
    size = sum(map(len, lines))
    context = neighbors.NeighborContext()

    def block(doc_lines: list[str], version: int, query: str) -> int:
        read[0] = 0
        cursor = Cursor.at([query + "\n", "x"], 1, 1, PY, "t.py")
        context.block("k", cursor, [Neighbor("big.py", doc_lines, version)], 2, 256, len)
        return read[0]

    first = block(lines, 1, "amount = compute_3(line_items, tax_rate)")
    assert first < size / 10, (first, size)  # the whole file was read 2 times over before
    # the query and the kept snippet's 20 lines (rescored), nothing else
    assert block(lines, 1, "other = compute_5(line_items)") < 3_000
    lines[7] = "    edited = compute_7(line_items)\n"
    assert block(lines, 2, "again = compute_9(tax_rate)") < 3_000  # and the edited line


def test_closed_documents_keep_bounded_text() -> None:
    docs = Documents()
    text = "".join(big_document())  # 5 MB each
    for i in range(8):
        docs.open(types.TextDocumentItem(f"file:///closed{i}.py", "python", 1, text))
        docs.close(f"file:///closed{i}.py")
    kept = sum(len(line) for doc in docs.others("file:///x.py", "python") for line in doc.lines)
    assert 0 < kept <= 2_000_000, kept  # 40 MB were kept before, whatever their size


def test_other_files_block_is_made_off_the_event_loop(marked) -> None:
    """The snippet block is made on the service's context thread, not the event loop's."""
    from engine_support import FakeEngine

    from codegen_lsp.completion.service import SuggestionService
    from codegen_lsp.engine.api import EngineSpec
    from codegen_lsp.engine.worker import Worker

    engine = FakeEngine()
    worker = Worker(lambda spec, progress: engine)
    worker.load(EngineSpec()).result(30)
    service = SuggestionService(worker, lambda text: None, debounce_s=0.0)
    service.ready = lambda: ""
    service.configure(CompletionOptions(max_new_tokens=4, multiline="never", context_files=2))
    service.neighbors = lambda key: [Neighbor("big.py", big_document()[:2000], 1)]
    threads: list[str] = []
    made = service.completer.context_block

    def recording(*args: Any) -> str:
        threads.append(threading.current_thread().name)
        return made(*args)

    service.completer.context_block = recording  # type: ignore[method-assign]
    cursor = marked("total = compute_3(line_items)\nx = █")
    try:
        asyncio.run(service.suggest("doc", lambda: cursor))
    finally:
        worker.close()
    assert threads and all(name.startswith("codegen-context") for name in threads), threads
