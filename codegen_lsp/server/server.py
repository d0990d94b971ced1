"""The language server's state: lifecycle, settings, model loading and status.

:class:`CodegenServer` owns the open documents, the settings, the :class:`Worker` that owns
the engine and the :class:`SuggestionService` that every suggestion goes through. Handlers
(``features.py``) get the document, call the service and convert; the event loop only ever
awaits worker futures. Settings problems and load failures reach the user through
``window/showMessage``; loading (a download included) reports ``$/progress`` and
``codegen/status``; new model settings stop a load still running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

from lsprotocol import types
from pygls.exceptions import FeatureRequestError
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from codegen_lsp import __version__
from codegen_lsp.codegen.download import Cancelled
from codegen_lsp.completion.context import Cursor, generation_note
from codegen_lsp.completion.core import CompletionSkipped
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.neighbors import Neighbor
from codegen_lsp.completion.service import DEBOUNCE_S, SuggestionService
from codegen_lsp.engine.api import CacheStats, EngineFactory, EngineSpec, Health
from codegen_lsp.engine.machine import process_memory
from codegen_lsp.engine.worker import Worker
from codegen_lsp.server.definitions import DefinitionBridge
from codegen_lsp.server.documents import Documents, clean_text
from codegen_lsp.server.positions import normalize_encoding
from codegen_lsp.server.progress import LoadProgress
from codegen_lsp.server.protocol import CodegenProtocol
from codegen_lsp.server.settings import Settings, parse_settings, section

log = logging.getLogger(__name__)

STATUS_NOTIFICATION = "codegen/status"
SLOW_LOAD_S = 6.0  # the slow_load fault's delay before loading
OUTAGE_MESSAGE_EVERY_S = 60.0  # a remote outage is shown at most this often (status: always)


class CodegenServer(LanguageServer):
    """The codegen language server."""

    protocol: CodegenProtocol  # pygls builds it from protocol_cls

    def __init__(self, factory: EngineFactory, debounce_s: float = DEBOUNCE_S) -> None:
        super().__init__("codegen-lsp", __version__, protocol_cls=CodegenProtocol)
        self.documents = Documents()
        self.worker = Worker(factory)
        error = types.MessageType.Error
        self.service = SuggestionService(
            self.worker, lambda text: self.show(text, error), self._on_busy, debounce_s
        )
        self.service.ready = self._not_ready
        self.service.loading = lambda: self.model_state == "loading"
        self.service.neighbors = self.neighbors
        self.definitions = DefinitionBridge(self)  # names resolved by the client's editor
        self.service.editor.resolve = self.definitions.resolve
        self.settings = Settings()
        self.root: str | None = None
        self.model_state = "loading"
        self.message = "starting"
        self._raw: tuple[dict[str, Any], dict[str, Any]] = ({}, {})  # (init, changed)
        self._pending_problems: list[str] = []
        self._spec: EngineSpec | None = None
        self.load_task: asyncio.Future[None] | None = None
        self._outage_shown_at = -OUTAGE_MESSAGE_EVERY_S  # when an outage was last shown
        self._fit_note: str | None = None  # the maxNewTokens clamp last shown

    # --- documents ---------------------------------------------------------------------------
    @property
    def encoding(self) -> str:
        """The negotiated position encoding (utf-16 until initialized)."""
        try:
            return normalize_encoding(self.workspace.position_encoding)
        except RuntimeError:
            return "utf-16"

    def client_supports(self, path: str) -> bool:
        """True when the client capability at a dotted path (snake_case) is set."""
        node: Any = self.protocol.client_capabilities
        for name in path.split("."):
            node = getattr(node, name, None)
        return bool(node)

    def cursor(self, uri: str, position: types.Position) -> Cursor:
        """The cursor at ``position`` of the open document ``uri``; CompletionSkipped says
        why there is none."""
        doc = self.documents.get(uri)
        if doc is None:
            raise CompletionSkipped(f"unknown document {uri} (not opened with didOpen)")
        if not self.settings.enabled(doc.language_id):
            raise CompletionSkipped(f"disabled for language {doc.language_id}")
        found = doc.index(position, self.encoding)
        if found is None:
            lines = len(doc.lines)
            raise CompletionSkipped(f"line {position.line} is past the end ({lines} lines)")
        path = self._shown_path(uri)
        return Cursor.at(doc.lines, *found, language_for(doc.language_id, uri), path)

    def neighbors(self, uri: str) -> list[Neighbor]:
        """The other open (and recently closed) documents of ``uri``'s language, after the
        document itself when it has recent edits (see ``Neighbor.own``)."""
        doc = self.documents.get(uri)
        if doc is None:
            return []
        edits = self.documents.edits.lines if self.service.options.recent_edits else None
        own = edits(uri) if edits else ()
        mine = [Neighbor(self._shown_path(uri), doc.lines, doc.version, own, own=True)]
        return (mine if own else []) + [
            Neighbor(
                self._shown_path(other.uri),
                other.lines,
                other.version,
                edits(other.uri) if edits else (),
            )
            for other in self.documents.others(uri, doc.language_id)
        ]

    def _shown_path(self, uri: str) -> str:
        """A document's path as the prompt shows it: relative to the root, else its name."""
        path = clean_text(to_fs_path(uri) or uri)
        if self.root and path.startswith(self.root.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, self.root)
        return os.path.basename(path)

    def forget(self, uri: str) -> None:
        """A document was closed: drop it and what was kept for it."""
        self.documents.close(uri)
        self.service.forget(uri)
        self.definitions.forget(uri)

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """window/showMessage, also logged."""
        log.log(logging.ERROR if kind == types.MessageType.Error else logging.WARNING, message)
        self.window_show_message(types.ShowMessageParams(kind, message))

    # --- session -----------------------------------------------------------------------------
    def finish(self) -> int:
        """The session is over (exit, or the client went away): stop the worker; exit code."""
        self.worker.close(timeout=2.0)
        return self.protocol.exit_code()

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Errors are logged, not shown (pygls would show them): a request's error is in its
        answer already, and a client's malformed input is not the user's business."""
        if source is FeatureRequestError:
            log.debug("request error: %s", error)
            return
        log.error("%s: %s", getattr(source, "__name__", source), error, exc_info=error)

    # --- status ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``codegen/status`` payload (plus counters for tools and tests)."""
        engine = self.worker.engine
        cache = engine.cache_stats() if engine is not None else CacheStats()
        details = engine.health().details if engine is not None else {}
        state, message = self.model_state, self.message
        if state == "ready" and self.service.busy:
            state = "generating"
        latency = details.get("lastLatencyMs")
        if state == "ready" and details.get("remote") and latency is not None:
            message = f"{message}, last request {latency} ms"
        return {
            **details,
            "state": state,
            "message": message,
            "model": self.settings.model.model or "default",
            "generateRuns": self.worker.generate_runs,
            "superseded": self.worker.cancelled,
            "pending": self.worker.pending(),
            "documents": len(self.documents),
            "positionEncoding": self.encoding,
            "dropped": self.service.dropped,
            "failures": self.service.failures,
            **self.service.counts,
            **self.service.decoding_status(),
            **self.service.editor.context_ms(),
            **self.definitions.counts(),
            "cacheBytes": cache.held_bytes,
            "cacheBudgetBytes": cache.budget_bytes,
            "cacheEvictions": cache.evictions,
            **memory_fields(engine.info.weight_bytes if engine is not None else 0),
        }

    def _notify_status(self) -> None:
        status = self.status()
        self.protocol.notify(
            STATUS_NOTIFICATION, {"state": status["state"], "message": status["message"]}
        )

    def _on_busy(self, busy: bool) -> None:
        self._notify_status()

    def _not_ready(self) -> str:
        if self.model_state != "ready" or self.worker.engine is None:
            return f"no model ({self.model_state}: {self.message})"
        return ""

    def set_model_state(self, state: str, message: str) -> None:
        """Record the model state (loading | ready | error) and tell the client."""
        self.model_state, self.message = state, message
        self._notify_status()

    # --- settings ----------------------------------------------------------------------------
    def init_settings(self, options: Any) -> None:
        """Settings from initializationOptions (problems are shown once initialized)."""
        raw = section(options)
        self._raw = (dict(raw) if isinstance(raw, dict) else {}, {})
        if raw is not None and not isinstance(raw, dict):
            self._pending_problems.append("codegen: initializationOptions must be an object")
        self._pending_problems += self._apply_settings()

    @property
    def has_init_settings(self) -> bool:
        """True when initializationOptions carried codegen settings."""
        return bool(self._raw[0])

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
        self._raw = (self._raw[0], dict(raw))
        for problem in self._apply_settings():
            self.show(f"codegen: invalid setting {problem}")
        if self._spec is not None and self.settings.engine_spec() != self._spec:
            await self.load_model()

    def _apply_settings(self) -> list[str]:
        settings, problems, unknown = parse_settings({**self._raw[0], **self._raw[1]})
        for key in unknown:
            log.warning("ignoring unknown setting codegen.%s", key)
        self.settings = settings
        self._configure_service()
        return problems

    def _configure_service(self) -> None:
        engine = self.worker.engine
        options = self.settings.completion_options(engine.info if engine else None)
        self.service.configure(options)
        if engine is not None and self.settings.engine_spec() == self._spec:  # not a stale model
            note = generation_note(options.max_new_tokens, engine.n_ctx)
            if note is not None and note != self._fit_note:
                self.show(note)  # once per setting and context; clamped in the completer
            self._fit_note = note

    # --- model loading -----------------------------------------------------------------------
    async def load_model(self) -> None:
        """(Re)load the model on the worker, reporting $/progress and codegen/status."""
        spec = self._spec = self.settings.engine_spec()
        self.service.reset()
        name = spec.model or "the default model"
        self.set_model_state("loading", f"loading {name}")
        progress = LoadProgress(self)
        await progress.begin(
            f"codegen: loading {name}", self.client_supports("window.work_done_progress")
        )
        if self.service.faults.take("slow_load"):  # tests: a load that surely takes a while
            await asyncio.sleep(float(os.environ.get("CODEGEN_LSP_SLOW_LOAD_S", SLOW_LOAD_S)))
        loop = asyncio.get_running_loop()

        def step(message: str, percentage: int) -> None:  # on the worker thread
            if spec is not self._spec:  # newer settings: stop here (a download keeps its part)
                raise Cancelled(f"{name}: load cancelled by a settings change")
            loop.call_soon_threadsafe(self._on_progress, spec, progress, message, percentage)

        try:
            engine = await asyncio.wrap_future(self.worker.load(spec, step))
        except Exception as exc:  # noqa: BLE001 - any load failure is reported the same way
            progress.end("failed" if spec is self._spec else "cancelled")
            if spec is self._spec:
                self.set_model_state("error", f"model load failed: {exc}")
                said = str(exc) if spec.model and spec.model in str(exc) else f"{name}: {exc}"
                self.show(f"codegen: cannot load the model: {said}", types.MessageType.Error)
            return
        progress.end("loaded")
        if spec is self._spec:
            self._configure_service()  # header "auto" depends on the model

            def on_health(health: Health) -> None:  # on the engine's thread
                loop.call_soon_threadsafe(self._on_health, spec, health)

            engine.watch(on_health)
            health = engine.health()
            if health.ok:
                self.set_model_state("ready", engine.description)
                log.info("model ready: %s (n_ctx=%d)", engine.description, engine.n_ctx)
            else:
                self._on_health(spec, health)

    def _on_health(self, spec: EngineSpec, health: Health) -> None:
        """A remote engine went down or came back: the status says so; the user is told
        once per outage (requests meanwhile answer empty at once, naming the problem)."""
        engine = self.worker.engine
        if spec is not self._spec or engine is None:
            return
        if health.ok:
            self._configure_service()  # the served context may have changed
            self.set_model_state("ready", engine.description)
            log.info("remote engine ready: %s", engine.description)
            return
        self.set_model_state("error", f"{health.message}; retrying")
        now = time.monotonic()
        if now - self._outage_shown_at >= OUTAGE_MESSAGE_EVERY_S:
            self._outage_shown_at = now
            self.show(
                f"codegen: {health.message}; retrying in the background", types.MessageType.Error
            )

    def _on_progress(
        self, spec: EngineSpec, progress: LoadProgress, message: str, pct: int
    ) -> None:
        progress.report(message, pct)
        if spec is self._spec and self.model_state == "loading":
            self.set_model_state("loading", message)


def memory_fields(weight_bytes: int) -> dict[str, float]:
    """``rssMb``/``peakRssMb``: this process's resident memory now and at its peak;
    ``weightsMb``: what the loaded weights take of it (MiB; see docs/memory.md)."""
    memory = process_memory()
    return {
        "rssMb": round(memory.get("VmRSS", 0) / 2**20, 1),
        "peakRssMb": round(memory.get("VmHWM", 0) / 2**20, 1),
        "weightsMb": round(weight_bytes / 2**20, 1),
    }
