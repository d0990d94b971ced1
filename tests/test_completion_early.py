"""Early answers (``answerEarly``): a multi-line suggestion's first line is shown as soon as
it is complete; the rest decodes in the background into the KV cache and type-ahead.

With the shipped model and the real engine: the early answer is the first line of the whole
suggestion (the same greedy text, answered whole when the setting is off), and after the
background run ends, accepting that line is served from type-ahead with the rest, no model
run. With an engine that never ends on its own: a newer request cancels the background run.
"""

from __future__ import annotations

import asyncio
import threading
import time

from engine_support import FakeEngine
from raw_lsp import RawServer
from support import wait_until

from codegen_lsp.completion.core import CompletionOptions
from codegen_lsp.completion.service import SuggestionService
from codegen_lsp.engine.api import Candidate, EngineSpec, GenerateRequest, GenerateResult
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.worker import Worker

TIMEOUT = 60.0
# function starts with the cursor after a block opener: the test uses the first whose
# greedy suggestion has more than one line (the shipped model decides which)
DOCUMENTS = (
    "import os\n\n\ndef read_lines(path):\n"
    '    """Return the lines of the file at path, without their line ends."""\n'
    "    with open(path) as f:█",
    "class Stack:\n    def __init__(self):█",
    "def parse_args(argv):\n    parser = argparse.ArgumentParser()\n    for arg in argv:█",
    "def main():█",
    "if __name__ == '__main__':█",
)


def make_service(worker: Worker, early: bool) -> SuggestionService:
    service = SuggestionService(worker, lambda message: None, debounce_s=0.0)
    service.ready = lambda: ""
    service.configure(CompletionOptions(max_new_tokens=48, answer_early=early, filter="off"))
    return service


async def idle(service: SuggestionService) -> None:
    """Until the background run has ended (its callback runs on the event loop, as in the
    server, whose loop outlives every request)."""
    deadline = time.monotonic() + TIMEOUT
    while service.busy:
        assert time.monotonic() < deadline, "the background run never ended"
        await asyncio.sleep(0.01)


def test_first_line_first_then_the_rest_from_type_ahead(default_model, marked) -> None:
    engine = load_engine(EngineSpec(model=str(default_model), cache_memory_mb=64))
    worker = Worker(lambda spec, progress: engine)
    worker.load(EngineSpec()).result(TIMEOUT)
    try:
        service = make_service(worker, False)
        for document in DOCUMENTS:
            cursor = marked(document)
            whole = asyncio.run(service.suggest("a.py", lambda c=cursor: c))
            assert whole.source == "model" and whole.mode == "multi", whole
            text = whole.texts[0]
            body = text.lstrip()
            if "\n" in body:
                break
        else:
            raise AssertionError("no document got a multi-line suggestion")
        first_line = text[: len(text) - len(body) + body.index("\n")]

        engine.clear_cache()
        service = make_service(worker, True)
        runs = worker.generate_runs
        accepted = marked(document.replace("█", first_line + "█"))

        async def scenario():
            early = await service.suggest("a.py", lambda: cursor)
            await idle(service)
            # the user accepts the first line: the rest comes from type-ahead, no model run
            return early, await service.suggest("a.py", lambda: accepted)

        early, rest = asyncio.run(scenario())
        assert early.texts == [first_line], (early.texts, text)
        assert rest.source == "type-ahead", rest
        assert rest.texts == [text[len(first_line) :]]
        assert worker.generate_runs == runs + 1
    finally:
        worker.close()


class EndlessLines(FakeEngine):
    """Writes a first line at once, then steps until cancelled (or its step budget ends)."""

    def generate(self, req: GenerateRequest, cancel: threading.Event) -> GenerateResult:
        if req.on_first_line is not None:
            req.on_first_line(Candidate("\n    total = 0", [], "early"))
        return super().generate(req, cancel)


def test_a_newer_request_cancels_the_background_run(marked) -> None:
    engine = EndlessLines()
    worker = Worker(lambda spec, progress: engine)
    worker.load(EngineSpec()).result(TIMEOUT)
    service = SuggestionService(worker, lambda message: None, debounce_s=0.0)
    service.ready = lambda: ""
    service.configure(CompletionOptions(max_new_tokens=10**6, answer_early=True, filter="off"))
    try:

        async def scenario():
            first = await service.suggest("b.py", lambda: marked("def f():█"))
            busy = service.busy  # still decoding behind the answer
            service.configure(CompletionOptions(max_new_tokens=3, multiline="never"))
            second = await service.suggest("b.py", lambda: marked("def f():\n    x = █"))
            await idle(service)
            return first, busy, second

        first, busy, second = asyncio.run(scenario())
        assert first.texts == ["\n    total = 0"] and first.source == "model" and busy
        assert second.source == "model" and second.texts
        assert engine.cancelled == ["def f():"[-8:]]  # the background run, stopped
    finally:
        worker.close()


def _served(server: RawServer, uri: str, text: str, version: int) -> tuple[str, int]:
    """Open (or replace) ``uri`` with ``text``; the inline answer at its end and the status's
    model-run count once no generation is left running."""
    if version == 1:
        server.open(uri, text)
    else:
        change = {
            "textDocument": {"uri": uri, "version": version},
            "contentChanges": [{"text": text}],
        }
        server.notify("textDocument/didChange", change)
    lines = text.split("\n")
    items = server.inline(uri, len(lines) - 1, len(lines[-1]))["result"]["items"]
    status = wait_until(
        lambda: (st := server.status())["state"] == "ready" and st, 60, "no generation running"
    )
    return (items[0]["insertText"] if items else ""), status["generateRuns"]


def test_the_server_answers_early_and_serves_the_rest(tmp_path, default_model) -> None:
    """Over LSP, on the shipped model: with ``answerEarly`` the first answer is the first
    line of what the server answers with it off; the rest comes after accepting that line,
    from type-ahead (no model run), and both together are the whole answer."""
    wholes = {}
    whole_server = RawServer(tmp_path / "whole.log")
    try:
        whole_server.initialize(
            {"codegen": {"model": str(default_model), "answerEarly": False, "filter": "off"}}
        )
        for n, document in enumerate(DOCUMENTS):
            text = document.replace("█", "")
            wholes[text], _ = _served(whole_server, f"file:///w/{n}.py", text, 1)
    finally:
        whole_server.close()
    multi = [(t, w) for t, w in wholes.items() if "\n" in w.lstrip()]
    assert multi, f"no document got a multi-line suggestion: {wholes}"
    text, whole = multi[0]
    server = RawServer(tmp_path / "early.log")
    try:
        server.initialize({"codegen": {"model": str(default_model), "filter": "off"}})
        first, runs = _served(server, "file:///e/a.py", text, 1)
        assert first and whole.startswith(first) and "\n" not in first.lstrip(), (first, whole)
        rest, runs_after = _served(server, "file:///e/a.py", text + first, 2)
        assert runs_after == runs, "the rest came from a model run"
        assert first + rest == whole
        assert server.status()["typeAhead"] >= 1
    finally:
        server.close()
