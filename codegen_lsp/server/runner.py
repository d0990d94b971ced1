"""Running generation requests on the worker, with the server's limits and fault handling.

- At most :data:`MAX_PENDING` generations wait for the model; beyond that the oldest waiting
  one is dropped (it answers empty, like a superseded request).
- A KV cache that cannot make room for a request (``CacheBudgetError``) is emptied and the
  request tried once more: a request alone always fits the cache's context.
- A failed generation answers empty; the user is told, at most once a minute, and the worker
  goes on with the next request.
- ``$/cancelRequest`` (the awaiting task is cancelled) reaches the worker.
- ``CODEGEN_LSP_FAULT=generate_once`` (tests only, see :mod:`codegen_lsp.server.faults`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from codegen_lsp.engine.api import GenerateRequest, GenerateResult
from codegen_lsp.engine.worker import Worker
from codegen_lsp.server.faults import Faults, failing_stop

log = logging.getLogger(__name__)

MAX_PENDING = 8  # generations waiting for the model; the oldest waiting one is dropped beyond
FAILURE_MESSAGE_EVERY_S = 60.0  # a failing generation is shown to the user at most this often


def _cache_full(exc: BaseException) -> bool:
    from codegen_lsp.engine.prefix_cache import CacheBudgetError  # the engine loaded torch

    return isinstance(exc, CacheBudgetError)


class Runner:
    """Submits requests to the worker and awaits them under the limits above."""

    def __init__(self, worker: Worker, show_error: Callable[[str], None]) -> None:
        self.worker = worker
        self.show_error = show_error
        self.faults = Faults()
        self.dropped = 0  # generations dropped because too many were waiting
        self.failures = 0  # generations that raised
        self._waiting: deque[Future[GenerateResult]] = deque()
        self._shown_at = -FAILURE_MESSAGE_EVERY_S

    async def run(self, request: GenerateRequest, label: str) -> GenerateResult | None:
        """The result of ``request``, or None when it failed (logged, maybe shown)."""
        if self.faults.take("generate_once"):
            request = dataclasses.replace(request, stop=failing_stop)
        try:
            try:
                return await self._await(request, label)
            except Exception as exc:
                if not _cache_full(exc):
                    raise
                log.warning("request %s: %s; emptying the KV cache and retrying", label, exc)
            await asyncio.wrap_future(self.worker.call(lambda engine: engine.cache.clear()))
            return await self._await(request, label)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed job answers empty
            self._failed(label, exc)
            return None

    async def _await(self, request: GenerateRequest, label: str) -> GenerateResult:
        future = self.worker.submit(request)
        self._limit_pending(future)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.worker.cancel(future)
            log.info("request %s: cancelled", label)
            raise

    def _limit_pending(self, future: Future[GenerateResult]) -> None:
        """Keep at most MAX_PENDING generations waiting: drop the oldest waiting ones."""
        self._waiting.append(future)
        waiting = [f for f in self._waiting if not (f.done() or f.running())]
        self._waiting = deque(waiting)
        for old in waiting[: max(0, len(waiting) - MAX_PENDING)]:
            self.worker.cancel(old)  # answers as cancelled: an empty result
            self.dropped += 1
            log.info("dropped a waiting generation: more than %d are waiting", MAX_PENDING)

    def _failed(self, label: str, exc: BaseException) -> None:
        self.failures += 1
        log.error("request %s: generation failed: %r", label, exc)
        now = time.monotonic()
        if now - self._shown_at >= FAILURE_MESSAGE_EVERY_S:
            self._shown_at = now
            self.show_error(
                f"codegen: a suggestion failed ({type(exc).__name__}: {exc}); still serving"
            )
