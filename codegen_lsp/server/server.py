"""The language server: state, lifecycle, settings, model loading, status, the request path.

:class:`CodegenServer` owns the open documents, the :class:`Completer`, the settings and
the :class:`Worker` that owns the model. Handlers (``features.py``) stay thin and call
:meth:`CodegenServer.suggest` or :meth:`CodegenServer.function_body`. The event loop only
ever awaits worker futures; the model runs on the worker thread. Cancelling a request
(``$/cancelRequest``, or a newer request for the same document) reaches the worker, which
stops the generation at its next decode step.

Limits and faults (see ``docs/hardening.md``): the :class:`Runner` bounds waiting requests
and reports failed generations; ``memoryLimitMB`` is checked before a load; the transport
(``transport.py``) and protocol rules (``protocol.py``) handle malformed input and ``exit``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lsprotocol import types
from pygls.exceptions import FeatureRequestError
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from codegen_lsp import __version__
from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import (
    Completer,
    CompletionOptions,
    CompletionSkipped,
    EngineInfo,
    Prepared,
)
from codegen_lsp.completion.functions import Stub, find_stub
from codegen_lsp.completion.languages import language_for
from codegen_lsp.engine.worker import Engine, EngineFactory, EngineSpec, ProgressFn, Worker
from codegen_lsp.server.documents import Document, Documents, clean_text
from codegen_lsp.server.positions import normalize_encoding
from codegen_lsp.server.protocol import CodegenProtocol
from codegen_lsp.server.runner import Runner
from codegen_lsp.server.settings import Settings, parse_settings, section

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "codegen/status"
DEBOUNCE_S = 0.01  # a request waits this long; a newer one for the same document replaces it
PROGRESS_CREATE_TIMEOUT_S = 5.0
BODY_KEY = "#body"  # function-body requests run under the document's URI plus this


@dataclass
class Outcome:
    """Suggestions for one request, where they apply, or why there are none."""

    suggestions: list[str] = field(default_factory=list)
    doc: Document | None = None
    line: int = 0
    column: int = 0
    reason: str = ""


class CodegenServer(LanguageServer):
    """The codegen language server."""

    def __init__(self, factory: EngineFactory | None = None, debounce_s: float = DEBOUNCE_S):
        super().__init__("codegen-lsp", __version__, protocol_cls=CodegenProtocol)
        self.documents = Documents()
        self.completer = Completer()
        self._factory = factory
        self.worker = Worker(self._load_engine)
        self.runner = Runner(self.worker, lambda text: self.show(text, types.MessageType.Error))
        self.settings = Settings()
        self.debounce_s = debounce_s
        self.root: str | None = None
        self.model_state = "loading"
        self.message = "starting"
        self._active = 0
        self._raw_init: dict[str, Any] = {}
        self._raw_change: dict[str, Any] = {}
        self._pending_problems: list[str] = []
        self._spec: EngineSpec | None = None
        self._latest: dict[str, int] = {}
        self._requests = itertools.count(1)
        self._progress_ids = itertools.count(1)
        self._bodies: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self.load_task: asyncio.Future[None] | None = None
        self.exit_code: int | None = None
        self.on_exit: Callable[[], None] | None = None  # set by the transport
        self._memory_limit_mb = 0
        self._cache_bytes = 0

    # --- basics ----------------------------------------------------------------------------
    @property
    def encoding(self) -> str:
        """The negotiated position encoding (utf-16 until initialized)."""
        try:
            return normalize_encoding(self.workspace.position_encoding)
        except RuntimeError:
            return "utf-16"

    @property
    def has_init_settings(self) -> bool:
        """True when initializationOptions carried codegen settings."""
        return bool(self._raw_init)

    def client_supports(self, path: str) -> bool:
        """True when the client capability at a dotted path (snake_case) is set."""
        node: Any = getattr(self.protocol, "client_capabilities", None)
        for name in path.split("."):
            node = getattr(node, name, None)
        return bool(node)

    def relative_path(self, uri: str) -> str:
        """The document's path relative to the workspace root (or its file name)."""
        path = clean_text(to_fs_path(uri) or uri)
        if self.root and path.startswith(self.root.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, self.root)
        return os.path.basename(path)

    def forget(self, uri: str) -> None:
        """A document was closed: drop it and what was kept for it."""
        self.documents.close(uri)
        self.completer.forget(uri)
        self.completer.forget(uri + BODY_KEY)
        self._latest.pop(uri, None)

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """window/showMessage, also logged."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, message)
        self.window_show_message(types.ShowMessageParams(kind, message))

    # --- session ---------------------------------------------------------------------------
    def start_io(self, stdin: Any = None, stdout: Any = None) -> int:  # type: ignore[override]
        """Serve one client over stdio until ``exit`` or end of input; the exit code."""
        from codegen_lsp.server.transport import serve_stdio

        return serve_stdio(self, stdin or sys.stdin.buffer, stdout or sys.stdout.buffer)

    def start_tcp(self, host: str, port: int) -> int:  # type: ignore[override]
        """Serve one client on ``host:port``; the exit code."""
        from codegen_lsp.server.transport import serve_tcp

        return serve_tcp(self, host, port)

    def request_exit(self, code: int) -> None:
        """``exit`` arrived: end the session with ``code``."""
        self.exit_code = code
        log.info("exit (%s shutdown)", "after" if code == 0 else "without")
        if self.on_exit is not None:
            self.on_exit()

    def finish(self) -> int:
        """The session is over (exit, or the client went away): stop the worker; exit code."""
        if self.exit_code is None:
            log.warning("the client went away without exit")
        self.worker.close(timeout=2.0)
        if self.exit_code is None:
            return 0 if self.protocol._shutdown else 1
        return self.exit_code

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors are logged, not shown (pygls would show them): a request's error is in its
        answer already, and a client's malformed input is not the user's business."""
        if source is FeatureRequestError:
            log.debug("request error: %s", error)
            return
        log.error("%s: %s", getattr(source, "__name__", source), error, exc_info=error)

    # --- status ----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``codegen/status`` payload (plus counters for tools and tests)."""
        state = self.model_state
        if state == "ready" and self._active:
            state = "generating"
        return {
            "state": state,
            "message": self.message,
            "model": self.settings.model.model or "default",
            "generateRuns": self.worker.generate_runs,
            "superseded": self.worker.superseded,
            "pending": self.worker.pending(),
            "documents": len(self.documents),
            "positionEncoding": self.encoding,
            "dropped": self.runner.dropped,
            "failures": self.runner.failures,
            **self._cache_status(),
        }

    def _cache_status(self) -> dict[str, int]:
        """KV cache bytes held now and its budget (0 while no model is loaded)."""
        cache = getattr(self.worker.engine, "cache", None)
        if cache is None:
            return {"cacheBytes": 0, "cacheBudgetBytes": 0, "cacheEvictions": 0}
        try:  # read while the worker may be changing it: a sum of tensor sizes
            held, budget = int(cache.nbytes), int(cache.budget_bytes)
            evictions = int(getattr(cache, "evictions", 0))
        except Exception:  # noqa: BLE001 - an engine without these figures reports the last known
            held, budget, evictions = self._cache_bytes, 0, 0
        return {"cacheBytes": held, "cacheBudgetBytes": budget, "cacheEvictions": evictions}

    def _notify_status(self) -> None:
        status = self.status()
        self.protocol.notify(
            STATUS_NOTIFICATION, {"state": status["state"], "message": status["message"]}
        )

    def set_model_state(self, state: str, message: str) -> None:
        """Record the model state (loading | ready | error) and tell the client."""
        self.model_state, self.message = state, message
        self._notify_status()

    # --- settings --------------------------------------------------------------------------
    def init_settings(self, options: Any) -> None:
        """Settings from initializationOptions (problems are shown once initialized)."""
        raw = section(options)
        self._raw_init = dict(raw) if isinstance(raw, dict) else {}
        if raw is not None and not isinstance(raw, dict):
            self._pending_problems.append("codegen: initializationOptions must be an object")
        self._pending_problems += self._apply_settings()

    def show_pending_problems(self) -> None:
        """Show the settings problems found during initialize."""
        for problem in self._pending_problems:
            self.show(f"codegen: invalid setting {problem}")
        self._pending_problems = []

    async def change_settings(self, settings: Any) -> None:
        """Settings from didChangeConfiguration; reload the model if its spec changed."""
        raw = section(settings)
        if not isinstance(raw, dict):
            self.show("codegen: settings must be an object; keeping the current settings")
            return
        self._raw_change = dict(raw)
        for problem in self._apply_settings():
            self.show(f"codegen: invalid setting {problem}")
        wanted = (self.settings.engine_spec(), self.settings.model.memory_limit_mb)
        if self._spec is not None and wanted != (self._spec, self._memory_limit_mb):
            await self.load_model()

    def _apply_settings(self) -> list[str]:
        settings, problems, unknown = parse_settings({**self._raw_init, **self._raw_change})
        for key in unknown:
            log.warning("ignoring unknown setting codegen.%s", key)
        self.settings = settings
        self.completer.reset()
        self._bodies.clear()
        return problems

    def options(self) -> CompletionOptions:
        """Per-request options from the settings and the loaded model."""
        engine = self.worker.engine
        name = self.settings.model.model or (engine.description if engine else "")
        return self.settings.completion_options(name)

    # --- model loading ---------------------------------------------------------------------
    async def load_model(self) -> None:
        """(Re)load the model on the worker, reporting $/progress and codegen/status."""
        spec = self.settings.engine_spec()
        self._spec = spec
        self._memory_limit_mb = self.settings.model.memory_limit_mb
        self.completer.reset()
        self._bodies.clear()
        name = spec.model or "the default model"
        self.set_model_state("loading", f"loading {name}")
        token = await self._progress_begin(f"codegen: loading {name}")
        loop = asyncio.get_running_loop()

        def progress(message: str, percentage: int) -> None:  # on the worker thread
            loop.call_soon_threadsafe(self._on_progress, spec, token, message, percentage)

        try:
            engine = await asyncio.wrap_future(self.worker.load(spec, progress))
        except Exception as exc:  # noqa: BLE001 - any load failure is reported the same way
            self._progress_end(token, "failed")
            if spec is self._spec:
                self.set_model_state("error", f"model load failed: {exc}")
                self.show(f"codegen: cannot load {name}: {exc}", types.MessageType.Error)
            return
        self._progress_end(token, "loaded")
        if spec is self._spec:
            self.set_model_state("ready", engine.description)
            log.info("model ready: %s (n_ctx=%d)", engine.description, engine.n_ctx)

    def _load_engine(self, spec: EngineSpec, progress: ProgressFn) -> Engine:
        """The worker's factory: the memory check, then the loader (or a test factory)."""
        if self._factory is not None:
            return self._factory(spec, progress)
        from codegen_lsp.engine.engine import load_engine
        from codegen_lsp.server.memory import check_fits

        progress("checking memory", 0)
        check_fits(spec, self._memory_limit_mb)
        return load_engine(spec, progress)

    async def _progress_begin(self, title: str) -> str | None:
        if not self.client_supports("window.work_done_progress"):
            return None
        token = f"codegen-load-{next(self._progress_ids)}"
        try:
            create = self.work_done_progress.create_async(token)
            await asyncio.wait_for(create, PROGRESS_CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - progress is optional
            log.warning("window/workDoneProgress/create failed: %s", exc)
            return None
        begin = types.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False)
        self.work_done_progress.begin(token, begin)
        return token

    def _on_progress(self, spec: EngineSpec, token: str | None, message: str, pct: int) -> None:
        if token is not None:
            report = types.WorkDoneProgressReport(message=message, percentage=max(0, min(pct, 100)))
            self.work_done_progress.report(token, report)
        if spec is self._spec and self.model_state == "loading":
            self.set_model_state("loading", message)

    def _progress_end(self, token: str | None, message: str) -> None:
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=message))

    # --- the request path ------------------------------------------------------------------
    def cursor_at(self, uri: str, position: types.Position) -> Outcome | tuple[Document, Cursor]:
        """The document and cursor for a request, or an empty outcome saying why not."""
        doc = self.documents.get(uri)
        if doc is None:
            return Outcome(reason=f"unknown document {uri} (not opened with didOpen)")
        if not self.settings.enabled(doc.language_id):
            return Outcome(doc=doc, reason=f"disabled for language {doc.language_id}")
        found = doc.index(position, self.encoding)
        if found is None:
            return Outcome(
                doc=doc,
                reason=f"line {position.line} is past the end ({len(doc.lines)} lines)",
            )
        language = language_for(doc.language_id, uri)
        return doc, Cursor.at(doc.lines, *found, language, self.relative_path(uri))

    def log_outcome(self, kind: str, out: Outcome) -> None:
        """Log why a request got no model run (superseded requests only at debug level)."""
        if out.reason:
            quiet = out.reason.startswith("superseded")
            level = logging.DEBUG if quiet else logging.INFO
            log.log(level, "request %s %s: %s", self.protocol.msg_id, kind, out.reason)

    async def _debounce(self, key: str) -> bool:
        """Wait a moment; False if a newer request for ``key`` came meanwhile."""
        ticket = next(self._requests)
        self._latest[key] = ticket
        await asyncio.sleep(self.debounce_s)
        return self._latest.get(key) == ticket

    async def suggest(self, uri: str, position: types.Position, kind: str) -> Outcome:
        """Suggestions at a position: type-ahead, or a generation on the worker."""
        found = self.cursor_at(uri, position)
        if isinstance(found, Outcome):
            return found
        doc, cursor = found
        out = Outcome([], doc, cursor.line, len(cursor.before))
        out.suggestions = self.completer.lookup(uri, cursor)
        if out.suggestions:
            out.reason = "type-ahead"
            return out
        if self.model_state != "ready" or self.worker.engine is None:
            out.reason = f"no model ({self.model_state}: {self.message})"
            return out
        if not await self._debounce(uri):
            out.reason = "superseded by a newer request"
            return out
        found = self.cursor_at(uri, position)  # the document may have changed meanwhile
        if isinstance(found, Outcome):
            return found
        out.doc, cursor = found
        out.line, out.column = cursor.line, len(cursor.before)
        try:
            prepared = self.completer.prepare(uri, cursor, self._engine_info(), self.options())
        except CompletionSkipped as exc:
            out.reason = str(exc)
            return out
        out.suggestions = await self.generate(prepared, kind)
        return out

    def _engine_info(self) -> EngineInfo:
        # encode() runs here on the event loop: it is the tokenizer (thread-safe), not the model
        engine = self.worker.engine
        if self.model_state != "ready" or engine is None:
            raise CompletionSkipped(f"no model ({self.model_state}: {self.message})")
        return EngineInfo.of(engine)

    async def generate(self, prepared: Prepared, kind: str) -> list[str]:
        """Run a prepared request on the worker; cancellation reaches the worker."""
        self._active += 1
        if self._active == 1:
            self._notify_status()
        try:
            result = await self.runner.run(prepared.request, f"{self.protocol.msg_id} {kind}")
        finally:
            self._active -= 1
            if self._active == 0:
                self._notify_status()
        if result is None:
            return []
        suggestions = self.completer.finish(prepared, result)
        s = result.stats
        self._cache_bytes = s.cache_bytes
        log.info(
            "request %s %s: prompt=%d reused=%d prefilled=%d generated=%d "
            "queue=%.0fms prefill=%.0fms decode=%.0fms total=%.0fms suggestions=%d%s",
            self.protocol.msg_id, kind, s.prompt_tokens, s.reused_tokens, s.prefilled_tokens,
            s.generated_tokens, s.queue_ms, s.prefill_ms, s.decode_ms, s.total_ms,
            len(suggestions), " (cancelled)" if result.cancelled else "",
        )  # fmt: skip
        return suggestions

    async def function_body(
        self, uri: str, position: types.Position
    ) -> tuple[Document, Stub, str] | str:
        """A generated body for the body-less function at ``position``, or why not."""
        found = self.cursor_at(uri, position)
        if isinstance(found, Outcome):
            return found.reason
        doc, cursor = found
        stub = find_stub(doc.lines, cursor.line, cursor.language)
        if stub is None:
            return "no function without a body here"
        key = (uri, doc.version, stub.def_line)
        if key in self._bodies:
            return doc, stub, self._bodies[key]
        try:
            prepared = self.completer.prepare_body(
                uri + BODY_KEY, doc.lines, stub, cursor, self._engine_info(), self.options()
            )
        except CompletionSkipped as exc:
            return str(exc)
        bodies = await self.generate(prepared, "body")
        if doc.version != key[1] or self.documents.get(uri) is not doc:
            return "the document changed while generating"
        if not bodies:
            return "the model produced no body"
        self._bodies[key] = bodies[0]
        while len(self._bodies) > 32:
            self._bodies.popitem(last=False)
        return doc, stub, bodies[0]
