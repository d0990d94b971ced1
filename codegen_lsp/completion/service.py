"""The suggestion service: the one request path from a cursor to suggestions.

snapshot -> type-ahead -> supersede -> prompt -> engine (on the worker) -> post-processing
-> :class:`Suggestions`. When no request can be made (no document, language off, no model,
superseded, no room for a prompt) :class:`CompletionSkipped` says why: the one way of saying
it, from the snapshot up to the handler. Function bodies take the same
path (under their own key, so they never supersede completions). Nothing here knows LSP.

Supersede is one mechanism, per document: a newer request for a document marks the older
one superseded wherever it is (waiting out the debounce, queued on the worker, running: the
engine stops at its next step). Cancelling the awaiting task (``$/cancelRequest``) takes the
same way. Across documents at most :data:`MAX_WAITING` generations wait for the model; the
oldest waiting one beyond that answers empty (a limit, not a supersede). A generation that
fails answers empty and the user is told at most once a minute.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import (
    Completer,
    CompletionOptions,
    CompletionSkipped,
    EngineInfo,
    Prepared,
)
from codegen_lsp.completion.editor_context import EditorContext, elapsed_ms
from codegen_lsp.completion.faults import FailingStop, Faults
from codegen_lsp.completion.functions import Stub, find_stub
from codegen_lsp.completion.gate import Gate, Place, Verdict
from codegen_lsp.completion.neighbors import INDEX_LINES, MAX_DOCUMENTS, Neighbor
from codegen_lsp.completion.runlog import DecodingCounts, run_line
from codegen_lsp.completion.stopping import MULTI
from codegen_lsp.engine.api import Candidate, EngineUnavailable, GenerateResult, GenerateStats
from codegen_lsp.engine.worker import Worker

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.01  # a request waits this long; a newer one for the same document replaces it
MAX_WAITING = 8  # generations waiting for the model, over all documents
FAILURE_MESSAGE_EVERY_S = 60.0  # a failing generation is shown to the user at most this often
LOAD_WAIT_S = 120.0  # a request made while the model loads waits this long for it
LOAD_POLL_S = 0.05
BODY_KEY = "#body"  # function-body requests run under the document's key plus this
BODY_CACHE = 32

# The cursor now (the document may change while a request waits); CompletionSkipped when
# there is none.
Snapshot = Callable[[], Cursor]
SUPERSEDED = "superseded by a newer request"
EMPTY = "the model's continuation was empty after the stop rules"


@dataclass
class Suggestions:
    """Suggestions for one request and the cursor they apply at (empty ``texts``: the model
    ran and nothing survived, or the run failed or was dropped)."""

    cursor: Cursor
    texts: list[str] = field(default_factory=list)
    source: str = ""  # "model" | "type-ahead"
    mode: str = ""  # "single" | "multi" line, for a model run
    stats: GenerateStats | None = None  # the model run's figures
    verdicts: list[Verdict] | None = None  # the gate's on each suggestion of a model run


@dataclass
class Body:
    """A generated body for ``stub``, a function without one."""

    text: str
    stub: Stub


@dataclass
class _Ticket:
    future: Future[GenerateResult] | None = None
    superseded: bool = False
    background: bool = False  # answered early; the rest still decodes


class SuggestionService:
    """Owns the completer, the per-document supersede and the model requests."""

    def __init__(
        self,
        worker: Worker,
        show_error: Callable[[str], None],
        on_busy: Callable[[bool], None] = lambda busy: None,
        debounce_s: float = DEBOUNCE_S,
    ) -> None:
        self.worker = worker
        self.completer = Completer()
        self.options = CompletionOptions()
        self.debounce_s = debounce_s
        self.faults = Faults()
        self.editor = EditorContext()  # definitions from the editor, the last prompts
        self.ready: Callable[[], str] = lambda: "no model"  # "" when the engine can run
        self.loading: Callable[[], bool] = lambda: False  # a model load is under way
        # the other open (or recently closed) documents of a document's language
        self.neighbors: Callable[[str], list[Neighbor]] = lambda key: []
        self.load_wait_s = LOAD_WAIT_S
        self._show_error = show_error
        self._on_busy = on_busy
        self._latest: dict[str, _Ticket] = {}
        self._waiting: deque[Future[GenerateResult]] = deque()
        # generated bodies by document key and prompt: the same text before the function,
        # the same body (never by uri, version and line: a reopened file reuses those)
        self._bodies: OrderedDict[tuple[str, tuple[int, ...]], str] = OrderedDict()
        self._context_pool: ThreadPoolExecutor | None = None  # other files' snippets
        self._active = 0
        self._shown_at = -FAILURE_MESSAGE_EVERY_S
        self.dropped = 0  # generations dropped because too many were waiting
        self.failures = 0  # generations that raised
        self.counts = dict.fromkeys(("shown", "accepted", "partlyAccepted", "typeAhead"), 0)
        self.counts |= {"gateSkipped": 0, "gateHidden": 0}  # model runs, suggestions
        # speculative decoding over all requests: drafts verified and kept, decode calls
        self.decoding = DecodingCounts()

    # --- state ------------------------------------------------------------------------------
    def configure(self, options: CompletionOptions) -> None:
        """New options (settings or model changed): forget what was kept."""
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Drop windows, type-ahead entries and bodies."""
        self.completer.reset()
        self._bodies.clear()

    def forget(self, key: str) -> None:
        """A document was closed."""
        self.completer.forget(key)
        self.completer.forget(key + BODY_KEY)
        self.editor.forget(key)
        for cached in [c for c in self._bodies if c[0] == key]:
            del self._bodies[cached]

    def count_accept(self, kind: str) -> None:
        """A client accepted a suggestion (``all``) or a word or line of one."""
        self.counts["accepted" if kind == "all" else "partlyAccepted"] += 1

    @property
    def busy(self) -> bool:
        """True while a generation runs or waits."""
        return self._active > 0

    # --- completions ------------------------------------------------------------------------
    async def suggest(
        self, key: str, snapshot: Snapshot, label: str = "", explicit: bool = False
    ) -> Suggestions:
        """Suggestions at the cursor ``snapshot`` gives: type-ahead, or a generation.
        ``label`` names the request in the log line; an ``explicit`` request (the user asked)
        passes the gate both ways. :class:`CompletionSkipped` when no request can be made."""
        cursor = snapshot()
        served = self.completer.lookup(key, cursor)
        if served:
            self.counts["shown"] += 1
            self.counts["typeAhead"] += 1
            return Suggestions(cursor, served, "type-ahead")
        place = Place.of(cursor)  # the gate's view of the cursor, once per request
        if not explicit and (skip := Gate(self.options).skip_reason(place)):
            self.counts["gateSkipped"] += 1
            raise CompletionSkipped(skip)
        with self._ticket(key) as ticket:
            await self._model_ready(ticket)
            await asyncio.sleep(self.debounce_s)
            started = time.perf_counter()
            snippets = await self._context_block(key, cursor)  # off the event loop
            if ticket.superseded:
                raise CompletionSkipped(SUPERSEDED)
            cursor, engine = snapshot(), self._engine()  # the document may have changed
            block = snippets + self.editor.definitions_block(key, cursor, engine, self.options)
            took = elapsed_ms(started)
            prepared = self.completer.prepare(
                key, cursor, engine, self.options, block=block, place=place
            )
            if explicit:
                prepared.gate = None  # everything the model writes is shown
            self.editor.remember(prepared, snippets, engine, self.options, took)
            early = self.options.answer_early and prepared.mode == MULTI
            early = early and prepared.request.n == 1
            texts, stats = await self._generate(prepared, ticket, label or key, early)
            if ticket.superseded:
                raise CompletionSkipped(SUPERSEDED)
            self.counts["shown"] += bool(texts)
            self.counts["gateHidden"] += prepared.hidden
            return Suggestions(cursor, texts, "model", prepared.mode, stats, prepared.verdicts)

    async def _context_block(self, key: str, cursor: Cursor) -> str:
        """Other files' snippets for ``cursor``, made on the context thread (the event loop
        only copies the first lines of each document: their lists change with edits)."""
        others = self.neighbors(key)[:MAX_DOCUMENTS] if self.options.context_files else []
        neighbors = [dataclasses.replace(n, lines=n.lines[:INDEX_LINES]) for n in others]
        if not neighbors or self.ready() or self.worker.engine is None:
            return ""
        engine = EngineInfo.of(self.worker.engine)
        if self._context_pool is None:
            self._context_pool = ThreadPoolExecutor(1, thread_name_prefix="codegen-context")
        block = self.completer.context_block
        return await asyncio.get_running_loop().run_in_executor(
            self._context_pool, block, key, cursor, engine, self.options, neighbors
        )

    async def _model_ready(self, ticket: _Ticket) -> None:
        """CompletionSkipped when no model can run; a request made while the model loads
        waits for it (at most LOAD_WAIT_S, and only until a newer request supersedes it), so
        typing right after opening the editor still gets a suggestion once the model is ready."""
        deadline = time.monotonic() + self.load_wait_s
        while (problem := self.ready()) and self.loading() and not ticket.superseded:
            if time.monotonic() >= deadline:
                raise CompletionSkipped(f"{problem} (waited {self.load_wait_s:g} s)")
            await asyncio.sleep(LOAD_POLL_S)
        if ticket.superseded or problem:
            raise CompletionSkipped(SUPERSEDED if ticket.superseded else problem)

    @contextmanager
    def _ticket(self, key: str) -> Iterator[_Ticket]:
        """The ticket of a new request on ``key``; the older one, wherever it is, is stopped."""
        old = self._latest.get(key)
        if old is not None:
            old.superseded = True
            if old.future is not None:
                self.worker.cancel(old.future)
        ticket = self._latest[key] = _Ticket()
        try:
            yield ticket
        finally:
            if self._latest.get(key) is ticket and not ticket.background:
                del self._latest[key]

    def _engine(self) -> EngineInfo:
        engine = self.worker.engine
        problem = self.ready()
        if problem or engine is None:
            raise CompletionSkipped(problem or "no model")
        return EngineInfo.of(engine)

    # --- function bodies --------------------------------------------------------------------
    async def function_body(
        self, key: str, version: Callable[[], Hashable], snapshot: Snapshot, label: str = ""
    ) -> Body:
        """A generated body for the body-less function at the cursor (CompletionSkipped: why
        there is none); ``version()`` tells the document's text now from any other (its
        version is not enough: a closed and reopened document starts again at the same one)."""
        started = version()
        cursor = snapshot()
        stub = find_stub(cursor.lines, cursor.line, cursor.language)
        if stub is None:
            raise CompletionSkipped("no function without a body here")
        engine = self._engine()
        prepared = self.completer.prepare_body(key + BODY_KEY, stub, cursor, engine, self.options)
        cached = (key, tuple(prepared.request.prompt))
        if cached in self._bodies:
            self._bodies.move_to_end(cached)
            return Body(self._bodies[cached], stub)
        with self._ticket(key + BODY_KEY) as ticket:
            bodies, _ = await self._generate(prepared, ticket, label or key + BODY_KEY)
        if version() != started:
            raise CompletionSkipped("the document changed while generating")
        if not bodies:
            raise CompletionSkipped("the model produced no body")
        self._bodies[cached] = bodies[0]
        while len(self._bodies) > BODY_CACHE:
            self._bodies.popitem(last=False)
        return Body(bodies[0], stub)

    # --- the model --------------------------------------------------------------------------
    async def _generate(
        self, prepared: Prepared, ticket: _Ticket, label: str, early: bool = False
    ) -> tuple[list[str], GenerateStats | None]:
        """Run ``prepared`` on the worker under the limits; its suggestions ([] on failure).
        With ``early``, a suggestion whose first line completes before its end is answered with
        that line (also when the rest is done by then: the same answer on any machine); the
        rest decodes on in the background, its whole text goes to type-ahead when it ends, and
        a newer request for the document (the ticket stays registered) cancels it at once."""
        request = prepared.request
        if self.faults.take("generate_once"):
            request = dataclasses.replace(request, stop=FailingStop())
        first: asyncio.Future[Candidate] | None = None
        if early:
            loop = asyncio.get_running_loop()
            first = loop.create_future()
            line = first

            def settle(candidate: Candidate) -> None:  # on the event loop
                if not line.done():
                    line.set_result(candidate)

            def announce(candidate: Candidate) -> None:  # on the engine's thread
                loop.call_soon_threadsafe(settle, candidate)

            request = dataclasses.replace(request, on_first_line=announce)
        self._busy(1)
        future = ticket.future = self.worker.submit(request)
        self._limit_waiting(future)
        waiting = asyncio.wrap_future(future)
        try:
            if first is not None:
                either: set[asyncio.Future[Any]] = {waiting, first}
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                if first.done():  # the first line, whether or not the rest has ended too
                    partial = GenerateResult([first.result()])
                    shown = self.completer.finish(prepared, partial)
                    log.info("request %s: answered with the first line", label)
                    if waiting.done():  # type-ahead gets the whole now (after the first line)
                        self._finished(prepared, waiting.result(), label)
                    else:
                        ticket.background = True
                        waiting.add_done_callback(
                            lambda done: self._background_done(prepared, ticket, done, label)
                        )
                    return shown, None
            result = await waiting
        except asyncio.CancelledError:
            self.worker.cancel(future)
            log.info("request %s: cancelled", label)
            raise
        except EngineUnavailable as exc:  # the server tells the user (health), not each request
            log.info("request %s: engine unavailable: %s", label, exc)
            return [], None
        except Exception as exc:  # noqa: BLE001 - a failed job answers empty
            self._failed(label, exc)
            return [], None
        finally:
            if not ticket.background:
                self._busy(-1)
        return self._finished(prepared, result, label), result.stats

    def _background_done(
        self, prepared: Prepared, ticket: _Ticket, done: asyncio.Future, label: str
    ) -> None:
        """The rest of an early-answered suggestion ended: remember it for type-ahead."""
        self._busy(-1)
        if self._latest.get(prepared.key) is ticket:
            del self._latest[prepared.key]
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            if not isinstance(error, EngineUnavailable):
                self._failed(label, error)
            return
        self._finished(prepared, done.result(), label)

    def _finished(self, prepared: Prepared, result: GenerateResult, label: str) -> list[str]:
        """Suggestions of a finished run (remembered for type-ahead), counted and logged."""
        suggestions = self.completer.finish(prepared, result)
        self.decoding.add(result)
        log.info("%s", run_line(label, result, len(suggestions)))
        return suggestions

    def _busy(self, change: int) -> None:
        """Count a generation in (1) or out (-1); ``on_busy`` hears the edges."""
        self._active += change
        if self._active == (1 if change > 0 else 0):
            self._on_busy(self._active > 0)

    def decoding_status(self) -> dict[str, float]:
        """Speculation counts for ``codegen/status`` (over all requests)."""
        return self.decoding.status()

    def _limit_waiting(self, future: Future[GenerateResult]) -> None:
        """Keep at most MAX_WAITING generations waiting: drop the oldest waiting ones."""
        self._waiting.append(future)
        waiting = [f for f in self._waiting if not (f.done() or f.running())]
        self._waiting = deque(waiting)
        for old in waiting[: max(0, len(waiting) - MAX_WAITING)]:
            self.worker.cancel(old)  # answers as cancelled: an empty result
            self.dropped += 1
            log.info("dropped a waiting generation: more than %d are waiting", MAX_WAITING)

    def _failed(self, key: str, exc: BaseException) -> None:
        self.failures += 1
        log.error("request %s: generation failed: %r", key, exc)
        now = time.monotonic()
        if now - self._shown_at >= FAILURE_MESSAGE_EVERY_S:
            self._shown_at = now
            self._show_error(
                f"codegen: a suggestion failed ({type(exc).__name__}: {exc}); still serving"
            )
