"""The one thread that owns the engine.

Every engine call (load, generate) runs on this thread, so the LSP event loop never waits
on the model. Callers get ``concurrent.futures.Future`` objects, which asyncio code awaits
with ``asyncio.wrap_future``; :meth:`Worker.cancel` drops a queued job or stops a running
one at its next decode step (which job supersedes which is the caller's business). A
failing job fails its own future only; the thread goes on serving. The worker is given the
factory that makes its engine.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from codegen_lsp.engine.api import (
    Engine,
    EngineFactory,
    EngineNotReady,
    EngineSpec,
    GenerateRequest,
    GenerateResult,
    IdleWork,
    ProgressFn,
)

log = logging.getLogger(__name__)


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


class Worker:
    """Owns the engine on a daemon thread and runs its jobs one at a time, in order."""

    def __init__(self, factory: EngineFactory) -> None:
        self._factory = factory
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running: _Job | None = None
        self._closed = False
        self.engine: Engine | None = None
        self.load_error: str | None = None
        self.generate_runs = 0  # jobs that reached the engine
        self.cancelled = 0  # generate jobs cancelled before or while running
        self._idle_work = False  # the engine may have background work (after a generate)
        self._idle_cancel = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="codegen-worker", daemon=True)
        self._thread.start()

    # --- public API, safe from any thread -------------------------------------------------
    def load(self, spec: EngineSpec, progress: ProgressFn | None = None) -> Future[Engine]:
        """(Re)load the model on the worker thread; queued generate jobs run after it."""
        job = _Job("load", Future(), spec=spec, progress=progress)
        return self._push(job)

    def submit(self, request: GenerateRequest) -> Future[GenerateResult]:
        """Queue a generation."""
        return self._push(_Job("generate", Future(), request=request))

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
                if not self._running.cancel.is_set():
                    self.cancelled += 1
                self._running.cancel.set()

    def busy(self) -> bool:
        """True while a job runs."""
        with self._cond:
            return self._running is not None

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
            self._idle_cancel.set()
            self._cond.notify_all()
        self._thread.join(timeout)

    # --- worker thread ----------------------------------------------------------------------
    def _finish_cancelled(self, job: _Job) -> None:
        if job.kind == "generate":
            self.cancelled += 1
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
            self._idle_cancel.set()  # background work yields to the job
            self._cond.notify()
        return job.future

    def _loop(self) -> None:
        engine: Engine | None = None
        while True:
            with self._cond:
                while not self._queue and not self._closed and not self._idle_work:
                    self._cond.wait()
                if self._closed:
                    return
                if not self._queue:  # idle: the engine's background work, until a job comes
                    self._idle_cancel.clear()
                    engine = self.engine
                job = self._queue.popleft() if self._queue else None
                self._running = job
            if job is None:
                self._idle(engine)
                continue
            try:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_result(self._run(job))
            except BaseException as exc:  # a job's failure is its own
                if job.kind == "load":  # the caller reports it in one line; details on -v
                    log.debug("model load failed", exc_info=exc)
                else:
                    log.exception("worker job %s failed", job.kind)
                if not job.future.done():
                    job.future.set_exception(exc)
            finally:
                with self._cond:
                    self._running = None
                    self._idle_work = job.kind == "generate" or self._idle_work

    def _idle(self, engine: Engine | None) -> None:
        """One piece of the engine's idle work (a new job interrupts it between blocks)."""
        more = False
        try:
            if isinstance(engine, IdleWork):
                more = engine.idle(self._idle_cancel)
        except Exception:  # background work never takes the worker down
            log.exception("the engine's background work failed")
        with self._cond:
            self._idle_work = more

    def _run(self, job: _Job) -> Any:
        if job.kind == "load":
            assert job.spec is not None
            if self.engine is not None:
                self.engine.close()
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
