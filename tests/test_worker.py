"""The worker thread: newest job per document wins, cancellation, failures stay local.

Most tests use a fake engine that runs until cancelled (or for ``max_new_tokens`` steps), so
they are fast and deterministic; one runs the real engine on a tiny checkpoint.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch
from engine_support import FakeEngine
from support import write_checkpoint

from codegen_lsp.engine.api import EngineNotReady, EngineSpec, GenerateRequest
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.worker import Worker

FIXTURE = Path(__file__).parent / "fixtures" / "codegen-tokenizer"
TIMEOUT = 10.0


def request(
    key: str, name: str, steps: int = 5, prompt: list[int] | None = None
) -> GenerateRequest:
    req = GenerateRequest(key=key, prompt=prompt or [1], max_new_tokens=steps)
    req.prompt_name = name  # type: ignore[attr-defined]
    return req


@pytest.fixture
def worker():
    engine = FakeEngine()
    w = Worker(lambda spec, progress: engine)
    w.load(EngineSpec()).result(TIMEOUT)
    w.fake = engine  # type: ignore[attr-defined]
    yield w
    w.close()


def test_jobs_run_in_order_and_a_cancelled_one_frees_the_worker(worker) -> None:
    first = worker.submit(request("doc", "first", steps=100_000))
    assert worker.fake.started.setdefault("first", threading.Event()).wait(TIMEOUT)
    second = worker.submit(request("doc", "second"))
    third = worker.submit(request("other", "third"))
    worker.cancel(first)
    assert first.result(TIMEOUT).cancelled
    assert not second.result(TIMEOUT).cancelled and not third.result(TIMEOUT).cancelled
    assert worker.fake.ran == ["first", "second", "third"] and worker.cancelled == 1


def test_cancel_by_future(worker) -> None:
    running = worker.submit(request("a", "running", steps=100_000))
    assert worker.fake.started.setdefault("running", threading.Event()).wait(TIMEOUT)
    queued = worker.submit(request("b", "queued"))
    worker.cancel(queued)
    worker.cancel(running)
    assert running.result(TIMEOUT).cancelled and queued.result(TIMEOUT).cancelled


def test_failure_stays_with_its_job(worker) -> None:
    bad = worker.submit(request("a", "bad", prompt=[-1]))
    with pytest.raises(RuntimeError, match="engine failure"):
        bad.result(TIMEOUT)
    assert not worker.submit(request("a", "good")).result(TIMEOUT).cancelled


def test_not_ready_and_load_error() -> None:
    def broken(spec, progress):
        raise ValueError("no such model")

    w = Worker(broken)
    try:
        with pytest.raises(EngineNotReady):
            w.submit(request("a", "early")).result(TIMEOUT)
        with pytest.raises(ValueError):
            w.load(EngineSpec()).result(TIMEOUT)
        assert w.load_error == "no such model"
        with pytest.raises(EngineNotReady, match="no such model"):
            w.submit(request("a", "late")).result(TIMEOUT)
    finally:
        w.close()


def test_close_cancels_queue() -> None:
    engine = FakeEngine()
    w = Worker(lambda spec, progress: engine)
    w.load(EngineSpec()).result(TIMEOUT)
    running = w.submit(request("a", "running", steps=100_000))
    queued = w.submit(request("b", "queued"))
    assert engine.started.setdefault("running", threading.Event()).wait(TIMEOUT)
    w.close()
    assert queued.result(TIMEOUT).cancelled and running.result(TIMEOUT).cancelled
    late: Future = w.submit(request("c", "late"))
    assert late.result(TIMEOUT).cancelled


def test_real_engine_cancel(tmp_path) -> None:
    checkpoint = write_checkpoint(tmp_path / "tiny", FIXTURE)
    w = Worker(load_engine)
    threads = torch.get_num_threads()
    try:
        spec = EngineSpec(model=str(checkpoint), dtype="float32", threads=1, cache_memory_mb=8)
        engine = w.load(spec).result(60)
        prompt = engine.encode("def f(x):\n    return x")
        long_job = w.submit(GenerateRequest("doc", prompt, max_new_tokens=400))
        short_job = w.submit(GenerateRequest("doc", prompt, max_new_tokens=3))
        w.cancel(long_job)
        assert long_job.result(TIMEOUT).cancelled
        result = short_job.result(TIMEOUT)
        assert not result.cancelled and len(result.candidates[0].token_ids) == 3
        assert result.stats.queue_ms >= 0
    finally:
        w.close()
        torch.set_num_threads(threads)
