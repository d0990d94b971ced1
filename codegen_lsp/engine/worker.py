"""The one thread that owns the model.

Every model call (load, generate) runs on this thread, so the LSP event loop never waits on
the model. Jobs carry a document key: a newer job for the same key supersedes the queued and
the running ones (the running job sees its cancel flag at the next decode step). Callers get
``concurrent.futures.Future`` objects, which asyncio code awaits with ``asyncio.wrap_future``.
A failing job fails its own future only; the thread goes on serving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from codegen_lsp.engine.api import GenerateRequest, GenerateResult

log = logging.getLogger(__name__)

# progress(message, percentage) during a load
ProgressFn = Callable[[str, int], None]


@dataclass
class EngineSpec:
    """What model to load and how to run it (mirrors the server's ``codegen`` settings)."""

    model: str | None = None  # checkpoint dir or hub id; None means the shipped default model
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    quantize: str = "auto"  # auto | none | int8 (weight-only) | int4 (weight-only, opt-in)
    threads: int = 0  # torch threads; 0 keeps torch's default
    allow_download: bool = False
    cache_memory_mb: int = 512
    prefix_reuse: bool = True
    compile: bool = False
    kv_dtype: str = "auto"  # auto (float32 on CPU, where attention is fastest in it) | bfloat16 ...


class Engine(Protocol):
    """What the worker needs from an engine (see ``codegen_lsp.engine.engine``)."""

    n_ctx: int
    description: str

    def generate(self, req: GenerateRequest, cancel: threading.Event) -> GenerateResult: ...

    def encode(self, text: str) -> list[int]: ...


EngineFactory = Callable[[EngineSpec, ProgressFn], Engine]


class EngineNotReady(RuntimeError):
    """Raised for jobs submitted while no model is loaded."""


@dataclass
class _Job:
    kind: str  # "generate" | "load" | "call"
    future: Future[Any]
    request: GenerateRequest | None = None
    spec: EngineSpec | None = None
    progress: ProgressFn | None = None
    fn: Callable[[Engine], Any] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)


def _default_factory(spec: EngineSpec, progress: ProgressFn) -> Engine:
    from codegen_lsp.engine.engine import load_engine

    return load_engine(spec, progress)


class Worker:
    """Owns the engine on a daemon thread and runs jobs one at a time, newest first per key."""

    def __init__(self, factory: EngineFactory | None = None) -> None:
        self._factory = factory or _default_factory
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._closed = False
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.generate_runs = 0  # jobs that reached the engine
        self.superseded = 0
        self._thread = threading.Thread(target=self._loop, name="codegen-worker", daemon=True)
        self._thread.start()

    # --- public API, safe from any thread -------------------------------------------------
    def load(self, spec: EngineSpec, progress: ProgressFn | None = None) -> Future[Engine]:
        """(Re)load the model on the worker thread; queued generate jobs run after it."""
        job = _Job("load", Future(), spec=spec, progress=progress)
        return self._push(job)

    def submit(self, request: GenerateRequest) -> Future[GenerateResult]:
        """Queue a generation; supersedes queued and running jobs with the same key."""
        job = _Job("generate", Future(), request=request)
        with self._cond:
            for old in [j for j in self._queue if self._same_key(j, request.key)]:
                self._queue.remove(old)
                self._finish_cancelled(old)
            if self._running is not None and self._same_key(self._running, request.key):
                self._running.cancel.set()
        return self._push(job)

    def call(self, fn: Callable[[Engine], Any]) -> Future[Any]:
        """Run ``fn(engine)`` on the worker thread (for tokenizer or cache queries)."""
        return self._push(_Job("call", Future(), fn=fn))

    def cancel(self, future: Future[Any]) -> None:
        """Cancel the job behind ``future``: dropped if queued, stopped at the next step if
        running."""
        with self._cond:
            for job in list(self._queue):
                if job.future is future:
                    self._queue.remove(job)
                    self._finish_cancelled(job)
                    return
            if self._running is not None and self._running.future is future:
                self._running.cancel.set()

    def pending(self) -> int:
        """Number of queued jobs (not counting the running one)."""
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread; queued jobs are cancelled, the running one is asked to stop."""
        with self._cond:
            self._closed = True
            while self._queue:
                self._finish_cancelled(self._queue.popleft())
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
        self._thread.join(timeout)

    # --- worker thread ----------------------------------------------------------------------
    @staticmethod
    def _same_key(job: _Job, key: str) -> bool:
        return job.kind == "generate" and job.request is not None and job.request.key == key

    def _finish_cancelled(self, job: _Job) -> None:
        if job.kind == "generate":
            self.superseded += 1
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(GenerateResult(cancelled=True))
        elif job.future.set_running_or_notify_cancel():
            job.future.set_exception(RuntimeError("worker closed"))

    def _push(self, job: _Job) -> Future[Any]:
        with self._cond:
            if self._closed:
                self._finish_cancelled(job)
                return job.future
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                self._running = job
            try:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_result(self._run(job))
            except BaseException as exc:  # noqa: BLE001 - a job's failure is its own
                log.exception("worker job %s failed", job.kind)
                if not job.future.done():
                    job.future.set_exception(exc)
            finally:
                with self._cond:
                    self._running = None

    def _run(self, job: _Job) -> Any:
        if job.kind == "load":
            assert job.spec is not None
            self.engine = None
            self.load_error = None
            try:
                self.engine = self._factory(job.spec, job.progress or (lambda _m, _p: None))
            except BaseException as exc:
                self.load_error = str(exc)
                raise
            return self.engine
        if self.engine is None:
            raise EngineNotReady(self.load_error or "no model is loaded")
        if job.kind == "call":
            assert job.fn is not None
            return job.fn(self.engine)
        assert job.request is not None
        if job.cancel.is_set():
            return GenerateResult(cancelled=True)
        self.generate_runs += 1
        queue_ms = (time.perf_counter() - job.queued_at) * 1000
        result = self.engine.generate(job.request, job.cancel)
        result.stats.queue_ms = queue_ms
        return result
