"""The definitions protocol with the client: ask for names, read what it resolved.

A client that sets ``capabilities.experimental.codegenDefinitions`` (``true``) in
``initialize`` asks its editor's other language servers where names are defined. The server
sends it ``codegen/resolveDefinitions`` (a notification: the keystroke that caused it never
waits) with the document, its version and the names with their positions; the client answers
with ``codegen/didResolveDefinitions``, each definition's location and the text of its file
from the definition's line on (see docs/server.md). Here the answer is checked (anything odd
is logged and left out, never raised), each definition cut to its head
(:func:`~codegen_lsp.completion.definitions.head_of`) and kept for the document.

A name is asked once per document version, and again only after :data:`REFRESH_S` (typing
makes a new version with every keystroke); at most :data:`MAX_PENDING` names wait for an answer
per document.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Protocol

from pygls.uris import to_fs_path

from codegen_lsp.completion.definitions import (
    LOOKBACK_LINES,
    STALE_S,
    Head,
    NameUse,
    definition_head,
)
from codegen_lsp.completion.languages import language_for

log = logging.getLogger(__name__)

RESOLVE_NOTIFICATION = "codegen/resolveDefinitions"  # server -> client
RESOLVED_NOTIFICATION = "codegen/didResolveDefinitions"  # client -> server
CAPABILITY = "codegenDefinitions"  # in the client's capabilities.experimental
REFRESH_S = 2.0  # a name is asked again at most this often (and only for a new version)
MAX_DEFINITIONS = 64  # definitions read per answer
MAX_TEXT_CHARS = 20_000  # characters of one definition's text that are read
MAX_ASKED = 512  # (document, name) pairs remembered as asked


def plain(value: Any) -> Any:
    """``value`` as plain JSON data (pygls may hand custom params over as objects)."""
    if hasattr(value, "_asdict"):  # pygls' namedtuples (a tuple too: asked first)
        return plain(value._asdict())
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "__dict__") and not isinstance(value, type):
        return plain(vars(value))
    return value


class Host(Protocol):
    """What the bridge needs from its server."""

    documents: Any
    protocol: Any
    service: Any
    root: str | None

    @property
    def encoding(self) -> str: ...

    def _shown_path(self, uri: str) -> str: ...


class DefinitionBridge:
    """Sends the names to resolve; reads the answers into the service's editor context."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self._asked: dict[tuple[str, str], tuple[int, float, int]] = {}  # -> version, time, line
        self.sent = 0  # names sent to the client
        self.received = 0  # definitions read from answers
        self.rejected = 0  # answers or entries left out as malformed

    @property
    def supported(self) -> bool:
        """Whether the client said it resolves definitions."""
        experimental = plain(
            getattr(self.server.protocol.client_capabilities, "experimental", None)
        )
        return isinstance(experimental, dict) and experimental.get(CAPABILITY) is True

    def resolve(self, uri: str, names: list[NameUse]) -> None:
        """Ask the client about ``names`` of document ``uri`` (those not asked lately)."""
        doc = self.server.documents.get(uri)
        if doc is None or not names or not self.supported:
            return
        now = time.monotonic()
        fresh = []
        for use in names:
            asked = self._asked.get((uri, use.name))
            if asked is not None and (asked[0] == doc.version or now - asked[1] < REFRESH_S):
                continue
            self._asked[(uri, use.name)] = (doc.version, now, use.line)
            position = doc.position(use.line, use.column, self.server.encoding)
            fresh.append(
                {
                    "name": use.name,
                    "position": {"line": position.line, "character": position.character},
                }
            )
        while len(self._asked) > MAX_ASKED:
            self._asked.pop(next(iter(self._asked)))
        if not fresh:
            return
        self.sent += len(fresh)
        params = {"textDocument": {"uri": uri, "version": doc.version}, "names": fresh}
        self.server.protocol.notify(RESOLVE_NOTIFICATION, params)

    def counts(self) -> dict[str, int]:
        """For ``codegen/status``: names sent, definitions read, entries left out."""
        return {
            "definitionsAsked": self.sent,
            "definitionsReceived": self.received,
            "definitionsRejected": self.rejected,
        }

    def forget(self, uri: str) -> None:
        """The document was closed."""
        for asked in [k for k in self._asked if k[0] == uri]:
            del self._asked[asked]

    def answer(self, params: Any) -> None:
        """``codegen/didResolveDefinitions`` arrived: keep the heads of its definitions."""
        data = plain(params)
        document = data.get("textDocument") if isinstance(data, dict) else None
        uri = document.get("uri") if isinstance(document, dict) else None
        entries = data.get("definitions") if isinstance(data, dict) else None
        if not isinstance(uri, str) or not isinstance(entries, list):
            self.rejected += 1
            log.info(
                "%s: ignoring an answer without textDocument.uri or definitions",
                RESOLVED_NOTIFICATION,
            )
            return
        doc = self.server.documents.get(uri)
        if doc is None:
            return
        editor = self.server.service.editor
        done: set[str] = set()
        for entry in entries[:MAX_DEFINITIONS]:
            name = entry.get("name") if isinstance(entry, dict) else None
            asked = self._asked.get((uri, name)) if isinstance(name, str) else None
            if not isinstance(name, str) or asked is None or name in done:
                self.rejected += asked is None
                continue  # a name never asked about, or one already answered here
            target = entry.get("uri")
            if isinstance(target, str) and not self._in_scope(uri, target):
                done.add(name)  # a library's: not shown in "workspace" mode; not asked soon
                editor.store(uri, name, None, STALE_S)
                continue
            head = self._head(uri, entry, asked[2], doc.language_id)
            if head is not None or not target:
                done.add(name)
                editor.store(uri, name, head)
                self.received += head is not None
        if len(entries) > MAX_DEFINITIONS:
            log.info(
                "%s: read %d of %d definitions",
                RESOLVED_NOTIFICATION,
                MAX_DEFINITIONS,
                len(entries),
            )

    def _in_scope(self, uri: str, target: str) -> bool:
        """Whether the definition at ``target`` may be shown for document ``uri``: always with
        ``definitions: all``; with ``workspace``, when it is under the workspace root or in the
        document's own folder or below (one server serves every root of an editor)."""
        if self.server.service.options.definitions == "all":
            return True
        path = to_fs_path(target) or ""
        folders = [self.server.root or "", os.path.dirname(to_fs_path(uri) or "")]
        return any(f and path.startswith(f.rstrip(os.sep) + os.sep) for f in folders)

    def _head(self, uri: str, entry: dict[str, Any], used_at: int, language_id: str) -> Head | None:
        """The head of one answered definition; None when it shows nothing worth its tokens
        (no text, an import line, a definition in the window already) or is malformed."""
        target, text = entry.get("uri"), entry.get("text")
        line = _start_line(entry.get("range"))
        if not isinstance(target, str) or not isinstance(text, str) or line is None:
            if target is not None:
                self.rejected += 1
            return None
        path = self.server._shown_path(target)
        language = language_for(None, path)
        if not language.comment or language.name == "plaintext":
            language = language_for(language_id, path)
        in_window = target == uri and used_at - LOOKBACK_LINES <= line <= used_at
        return definition_head(str(entry["name"]), path, text[:MAX_TEXT_CHARS], language, in_window)


def _start_line(range_: Any) -> int | None:
    """``range.start.line`` when it is a non-negative integer."""
    start = range_.get("start") if isinstance(range_, dict) else None
    line = start.get("line") if isinstance(start, dict) else None
    if isinstance(line, int) and not isinstance(line, bool) and line >= 0:
        return line
    return None
