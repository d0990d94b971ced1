"""The worker thread: newest job per document wins, cancellation, failures stay local.

Most tests use a fake engine that runs until cancelled (or for ``max_new_tokens`` steps), so
they are fast and deterministic; one runs the real engine on a tiny checkpoint.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
import torch

from codegen_lsp.engine.api import Candidate, GenerateRequest, GenerateResult
from codegen_lsp.engine.synthetic import write_checkpoint
from codegen_lsp.engine.worker import EngineNotReady, EngineSpec, Worker

FIXTURE = Path(__file__).parent / "fixtures" / "codegen-tokenizer"
TIMEOUT = 10.0


class FakeEngine:
    """Takes ``max_new_tokens`` steps of 1 ms, checking the cancel flag at each."""

    n_ctx = 128
    description = "fake"

    def __init__(self) -> None:
        self.started: dict[str, threading.Event] = {}
        self.ran: list[str] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def generate(self, req: GenerateRequest, cancel: threading.Event) -> GenerateResult:
        self.started.setdefault(req.prompt_name, threading.Event()).set()
        self.ran.append(req.prompt_name)
        steps = 0
        while steps < req.max_new_tokens and not cancel.is_set():
            if req.prompt == [-1]:
                raise RuntimeError("engine failure")
            time.sleep(0.001)
            steps += 1
        reason = "cancelled" if cancel.is_set() else "length"
        return GenerateResult(
            [Candidate("x" * steps, [0] * steps, reason)], cancelled=cancel.is_set()
        )


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


def test_running_job_is_superseded(worker) -> None:
    first = worker.submit(request("doc", "first", steps=100_000))
    assert worker.fake.started.setdefault("first", threading.Event()).wait(TIMEOUT)
    second = worker.submit(request("doc", "second"))
    assert first.result(TIMEOUT).cancelled
    assert not second.result(TIMEOUT).cancelled
    assert worker.fake.ran == ["first", "second"]


def test_queued_job_is_superseded_other_keys_are_not(worker) -> None:
    blocker = worker.submit(request("other", "blocker", steps=100))
    queued = worker.submit(request("doc", "queued"))
    unrelated = worker.submit(request("third", "unrelated"))
    newest = worker.submit(request("doc", "newest"))
    assert queued.result(TIMEOUT).cancelled  # dropped without running
    assert not blocker.result(TIMEOUT).cancelled
    assert not unrelated.result(TIMEOUT).cancelled
    assert not newest.result(TIMEOUT).cancelled
    assert "queued" not in worker.fake.ran and worker.superseded >= 1


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


def test_real_engine_supersede(tmp_path) -> None:
    checkpoint = write_checkpoint(tmp_path / "tiny", FIXTURE)
    w = Worker()
    threads = torch.get_num_threads()
    try:
        spec = EngineSpec(model=str(checkpoint), dtype="float32", threads=1, cache_memory_mb=8)
        engine = w.load(spec).result(60)
        prompt = engine.encode("def f(x):\n    return x")
        long_job = w.submit(GenerateRequest("doc", prompt, max_new_tokens=400))
        short_job = w.submit(GenerateRequest("doc", prompt, max_new_tokens=3))
        assert long_job.result(TIMEOUT).cancelled
        result = short_job.result(TIMEOUT)
        assert not result.cancelled and len(result.candidates[0].token_ids) == 3
        assert result.stats.queue_ms >= 0
    finally:
        w.close()
        torch.set_num_threads(threads)
