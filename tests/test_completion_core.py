"""The Completer (core.py) with a scripted engine, and once with the real tiny engine."""

from __future__ import annotations

import threading
import time
import zlib

import pytest

from codegen_lsp.completion.core import Completer, CompletionOptions, CompletionSkipped, EngineInfo
from codegen_lsp.completion.functions import find_stub
from codegen_lsp.engine.api import (
    Candidate,
    EngineSpec,
    GenerateRequest,
    GenerateResult,
    GenerateStats,
)
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.worker import Worker


class ScriptedEngine:
    """Generates a fixed text one character per step, honouring stop and cancel."""

    n_ctx = 256
    description = "scripted"

    def __init__(self, script: str, step_s: float = 0.0) -> None:
        self.script = script
        self.step_s = step_s
        self.prompts: list[list[int]] = []
        self.stepping = threading.Event()  # set once a generation has taken its first step

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def generate(self, req: GenerateRequest, cancel: threading.Event) -> GenerateResult:
        self.prompts.append(list(req.prompt))
        text, reason = "", "length"
        check = req.stop.start() if req.stop else None
        for ch in self.script[: req.max_new_tokens]:
            if cancel.is_set():
                reason = "cancelled"
                break
            time.sleep(self.step_s)
            self.stepping.set()
            text += ch
            cut = check.feed(ch) if check else None
            if cut is not None:
                text, reason = text[:cut], "stop"
                break
        else:
            cut = check.finish() if check else None
            text = text if cut is None else text[:cut]
        stats = GenerateStats(prompt_tokens=len(req.prompt), generated_tokens=len(text))
        return GenerateResult([Candidate(text, [], reason)], stats, cancelled=cancel.is_set())


INFO = EngineInfo(ScriptedEngine.n_ctx, ScriptedEngine("").encode)


def complete(completer: Completer, engine: ScriptedEngine, cursor, **options) -> list[str]:
    prepared = completer.prepare("doc", cursor, INFO, CompletionOptions(**options))
    return completer.finish(prepared, engine.generate(prepared.request, threading.Event()))


def test_single_line_completion_is_cut_and_trimmed(marked) -> None:
    engine = ScriptedEngine("o(1, 2)   \nnext_line()")
    assert complete(Completer(), engine, marked("x = f█")) == ["o(1, 2)"]


def test_multi_line_completion_ends_with_the_block(marked) -> None:
    engine = ScriptedEngine("\n    total = a + b\n    return total\n\nprint(add(1, 2))\n")
    cursor = marked("def add(a, b):█\n")
    assert complete(Completer(), engine, cursor) == ["\n    total = a + b\n    return total"]


def test_suggestion_repeating_text_after_cursor_is_dropped(marked) -> None:
    engine = ScriptedEngine("return x\n")
    cursor = marked("def f(x):\n    █\n    return x\n")
    assert complete(Completer(), engine, cursor) == []


def test_type_ahead_after_a_suggestion(marked) -> None:
    completer = Completer()
    engine = ScriptedEngine("getcwd()\n")
    assert complete(completer, engine, marked("import os\nos.█")) == ["getcwd()"]
    assert completer.lookup("doc", marked("import os\nos.ge█")) == ["tcwd()"]
    assert completer.lookup("doc", marked("import os\nos.gx█")) == []


def test_window_start_is_stable_across_keystrokes(marked) -> None:
    completer = Completer()
    engine = ScriptedEngine("x")
    body = "".join(f"v{i} = {i}\n" for i in range(100))
    for typed in ["r", "re", "res", "resu"]:
        complete(completer, engine, marked(body + typed + "█"), max_new_tokens=16)
    first, *rest = engine.prompts
    for prompt in rest:
        assert prompt[: len(first) - 1] == first[:-1]  # same window start: shared prefix
        assert len(prompt) <= ScriptedEngine.n_ctx - 16


def test_context_tokens_setting_caps_the_prompt(marked) -> None:
    engine = ScriptedEngine("x")
    body = "".join(f"v{i} = {i}\n" for i in range(100))
    complete(Completer(), engine, marked(body + "█"), context_tokens=40)
    assert len(engine.prompts[0]) <= 40


def test_header_is_prepended(marked) -> None:
    engine = ScriptedEngine("x")
    complete(Completer(), engine, marked("x = █"), header_mode="on")
    text = "".join(chr(i) for i in engine.prompts[0])
    assert text == "# language: python\n# path: t.py\nx = "


def test_empty_document_is_skipped(marked) -> None:
    with pytest.raises(CompletionSkipped):
        Completer().prepare("doc", marked("█"), INFO, CompletionOptions())


def test_function_body_request(marked) -> None:
    cursor = marked("def add(a, b):\n    █pass\n")
    stub = find_stub(cursor.lines, 0, cursor.language)
    assert stub is not None
    engine = ScriptedEngine("return a + b\n\ndef other():\n")
    completer = Completer()
    prepared = completer.prepare_body("doc#body", stub, cursor, INFO, CompletionOptions())
    prompt = "".join(chr(i) for i in prepared.request.prompt)
    assert prompt == "def add(a, b):\n    "
    result = engine.generate(prepared.request, threading.Event())
    assert completer.finish(prepared, result) == ["return a + b"]


def test_cancelled_result_gives_nothing(marked) -> None:
    completer = Completer()
    prepared = completer.prepare("doc", marked("x = █"), INFO, CompletionOptions())
    cancel = threading.Event()
    cancel.set()
    result = ScriptedEngine("1").generate(prepared.request, cancel)
    assert completer.finish(prepared, result) == []


def test_worker_cancel_stops_a_running_generation(marked) -> None:
    engine = ScriptedEngine("x" * 1000, step_s=0.01)  # 10 s if it ran to the end
    worker = Worker(lambda spec, progress: engine)
    try:
        worker.load(EngineSpec()).result()
        completer = Completer()
        prepared = completer.prepare(
            "doc", marked("x = █"), INFO, CompletionOptions(max_new_tokens=1000)
        )
        future = worker.submit(prepared.request)
        assert engine.stepping.wait(timeout=10), "the generation never started"
        worker.cancel(future)
        result = future.result(timeout=10)  # (only a guard against a hang)
        assert result.cancelled and result.candidates[0].finish_reason == "cancelled"
        assert 0 < len(result.candidates[0].text) < 1000  # stopped in the middle
        # the worker is free: the next job runs to its end
        engine.step_s = 0.0
        following = completer.prepare("doc2", marked("y = █"), INFO, CompletionOptions())
        done = worker.submit(following.request).result(timeout=10)
        assert not done.cancelled and done.candidates[0].text == "x" * 64
    finally:
        worker.close()


def test_real_tiny_engine_same_path(marked, steady_checkpoint) -> None:
    worker = Worker(load_engine)
    try:
        spec = EngineSpec(str(steady_checkpoint), device="cpu", dtype="float32", quantize="none")
        engine = worker.load(spec).result()
        completer = Completer()
        cursor = marked("def f(a):\n    return a +█")
        prepared = completer.prepare(
            "doc", cursor, EngineInfo(engine.n_ctx, engine.encode), CompletionOptions(filter="off")
        )
        suggestions = completer.finish(prepared, worker.submit(prepared.request).result())
        assert suggestions and suggestions[0].endswith(" 0 0 0")  # first token is healed
    finally:
        worker.close()


def test_no_healing_after_indentation_with_whitespace_tokens() -> None:
    from pathlib import Path

    from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
    from codegen_lsp.completion.core import needs_healing

    encode = CodeGenTokenizer.from_dir(Path(__file__).parent / "fixtures/codegen-tokenizer").encode
    assert not needs_healing("        ", encode)  # "        self" is [8 spaces, "self"]
    assert needs_healing("x = fo", encode)
    assert needs_healing("", encode)
    assert needs_healing(" ", chars_merge_spaces)  # a tokenizer that merges " " + "x"


def chars_merge_spaces(text: str) -> list[int]:
    """A toy tokenizer that glues a space to the next character (GPT-2 style): each piece's
    id is its CRC-32 (not ``hash``, which changes from run to run)."""
    return [zlib.crc32(p.encode()) for p in text.replace(" x", "\0").split("\0")]
