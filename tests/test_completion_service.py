"""The suggestion service (service.py): supersede per document, limits, cancellation.

Driven with an engine without a model (``FakeEngine``: 1 ms steps that check the cancel
flag), so each test says in counts and events what happened: how many model runs, which
request was computed, that the worker is free again.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from engine_support import FakeEngine

from codegen_lsp.completion.core import CompletionOptions, CompletionSkipped
from codegen_lsp.completion.service import MAX_WAITING, SUPERSEDED, SuggestionService
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.worker import Worker

TIMEOUT = 30.0


@pytest.fixture
def service():
    engine = FakeEngine()
    worker = Worker(lambda spec, progress: engine)
    worker.load(EngineSpec()).result(TIMEOUT)
    errors: list[str] = []
    svc = SuggestionService(worker, errors.append, debounce_s=0.0)
    svc.ready = lambda: ""
    svc.configure(CompletionOptions(max_new_tokens=40, multiline="never"))
    svc.fake = engine  # type: ignore[attr-defined]
    svc.errors = errors  # type: ignore[attr-defined]
    yield svc
    worker.close()


def at(marked, text: str):
    cursor = marked(text)
    return lambda: cursor


async def running(service, marked, text: str, max_new_tokens: int = 100_000) -> asyncio.Task:
    """A request for ``text`` that has reached the model and is generating."""
    service.configure(CompletionOptions(max_new_tokens=max_new_tokens, multiline="never"))
    task = asyncio.ensure_future(service.suggest("doc", at(marked, text + "█")))
    while text not in service.fake.started:
        await asyncio.sleep(0.001)
    return task


def test_storm_on_one_document_computes_only_the_newest(service, marked) -> None:
    async def storm():
        tasks = [
            asyncio.ensure_future(service.suggest("doc", at(marked, f"value_{i} = █")))
            for i in range(200)
        ]
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(storm())
    newest = results[-1]
    assert newest.source == "model" and newest.texts
    superseded = [r for r in results[:-1] if isinstance(r, CompletionSkipped)]
    assert all(str(r) == SUPERSEDED for r in superseded)
    assert len(superseded) == 199
    runs = service.worker.generate_runs
    assert 1 <= runs <= 3, runs  # the newest, and at most a couple cancelled on the way
    assert service.fake.ran[-1].endswith("_199 = ")  # the model ran the newest request


def test_a_running_request_is_stopped_by_a_newer_one(service, marked) -> None:
    async def scenario():
        first = await running(service, marked, "first = ")
        service.configure(CompletionOptions(max_new_tokens=3, multiline="never"))
        second = await service.suggest("doc", at(marked, "second = █"))
        return await asyncio.gather(first, return_exceptions=True), second

    (first,), second = asyncio.run(scenario())
    assert isinstance(first, CompletionSkipped) and str(first) == SUPERSEDED
    assert service.fake.cancelled == ["first = "]
    assert second.texts == [" 0 0 0"]


def test_other_documents_do_not_supersede(service, marked) -> None:
    async def both():
        a = service.suggest("a.py", at(marked, "a = █"))
        b = service.suggest("b.py", at(marked, "b = █"))
        return await asyncio.gather(a, b)

    a, b = asyncio.run(both())
    assert a.texts and b.texts and service.worker.generate_runs == 2


def test_cancelling_the_caller_frees_the_worker(service, marked) -> None:
    async def scenario():
        task = await running(service, marked, "slow = ")
        task.cancel()  # what $/cancelRequest does
        with pytest.raises(asyncio.CancelledError):
            await task
        service.configure(CompletionOptions(max_new_tokens=2, multiline="never"))
        return await service.suggest("doc", at(marked, "next = █"))

    after = asyncio.run(scenario())
    assert service.fake.cancelled == ["slow = "] and after.texts == [" 0 0"]


def test_waiting_generations_are_bounded_across_documents(service, marked) -> None:
    gate = threading.Event()
    blocker = service.worker.call(lambda engine: gate.wait(TIMEOUT))  # the model is busy
    while not service.worker.busy():
        threading.Event().wait(0.001)

    async def burst():
        tasks = [
            asyncio.ensure_future(service.suggest(f"d{i}.py", at(marked, f"d{i} = █")))
            for i in range(MAX_WAITING * 3)
        ]
        while service.dropped + service.worker.pending() < len(tasks):  # all reached the worker
            await asyncio.sleep(0.001)
        gate.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(burst())
    blocker.result(TIMEOUT)
    served = [r for r in results if r.texts]
    assert service.dropped == MAX_WAITING * 2
    assert len(served) == MAX_WAITING == service.worker.generate_runs
    assert results[-1].texts  # the newest are the ones kept


def test_type_ahead_answers_without_a_model_run(service, marked) -> None:
    first = asyncio.run(service.suggest("doc", at(marked, "x = █")))
    assert first.texts == [" 0" * 40]
    runs = service.worker.generate_runs
    typed = asyncio.run(service.suggest("doc", at(marked, "x =  0 0█")))
    assert typed.source == "type-ahead" and typed.texts == [" 0" * 38]
    assert service.worker.generate_runs == runs


def test_a_failing_generation_answers_empty_and_is_shown_once(service, marked) -> None:
    service.faults._armed.add("generate_once")  # the injected fault of CODEGEN_LSP_FAULT
    failed = asyncio.run(service.suggest("doc", at(marked, "y = █")))
    assert failed.texts == [] and service.failures == 1 and len(service.errors) == 1
    ok = asyncio.run(service.suggest("doc", at(marked, "z = █")))
    assert ok.texts and len(service.errors) == 1
