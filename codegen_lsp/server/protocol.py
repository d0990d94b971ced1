"""The JSON-RPC and LSP rules around the handlers: envelopes, lifecycle, bad params, exit.

pygls dispatches well-formed messages; what a client gets for the rest is decided here:

- Not an object, no ``method``, a non-string method, an id that is not a string or an
  integer, ``params`` that are not an object or array, ``jsonrpc`` other than ``"2.0"``:
  Invalid Request (-32600; id null where the id itself is unusable). Notifications with
  such faults are logged and dropped.
- ``params`` that do not fit the method's types (a string for a line number, a negative
  position): Invalid Params (-32602) for requests; notifications are logged and dropped.
- Before ``initialize``: requests answer -32002 (ServerNotInitialized), notifications are
  dropped, except ``exit``. A second ``initialize`` answers -32600.
- After ``shutdown``: requests answer -32600, notifications are dropped, except ``exit``.
- ``exit`` ends the session at once: exit code 0 after ``shutdown``, 1 without.
- Unknown methods: -32601 for requests (pygls), ignored for notifications; an unknown
  ``workspace/executeCommand`` command: -32601 too (pygls says -32602).

Open documents are kept by the server's own documents (LSP line breaks, cheap
incremental edits) instead of pygls' workspace copies.

This module is the one adapter over pygls' internals: pygls 2.1 has no public way to send a
raw error response for a message it could not structure (``_send_data``), to structure a
message without its traceback-logging path (``_converter``, ``_result_types``), or to ask
whether ``shutdown`` arrived (``_shutdown``). Everything else in the server uses public API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcMethodNotFound
from pygls.protocol import (
    JsonRPCNotification,
    JsonRPCRequestMessage,
    JsonRPCResponseMessage,
    LanguageServerProtocol,
)
from pygls.protocol.language_server import lsp_method

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
INVALID_PARAMS = -32602
SERVER_NOT_INITIALIZED = -32002
_ALWAYS = {types.EXIT}  # accepted in every state
_REQUEST_MEMBERS = ("jsonrpc", "id", "method", "params")


def _valid_id(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class Host(Protocol):
    """What the protocol needs from its server (its documents)."""

    documents: Any
    encoding: str

    def forget(self, uri: str) -> None: ...


class CodegenProtocol(LanguageServerProtocol):
    """pygls' protocol with the lifecycle and error rules of the module docstring."""

    _server: Host  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initialize_received = False
        self.on_exit: Callable[[], None] = lambda: None  # set by the transport
        self._exit_code: int | None = None

    # --- the session ------------------------------------------------------------------------
    @property
    def shut_down(self) -> bool:
        """True once ``shutdown`` was answered."""
        return bool(self._shutdown)

    def end_session(self, code: int) -> None:
        """``exit`` arrived: remember the code and wake the transport."""
        log.info("exit (%s shutdown)", "after" if code == 0 else "without")
        self._exit_code = code
        self.on_exit()

    def exit_code(self) -> int:
        """The process exit code: the ``exit`` rule's, or 0/1 for a client that went away
        after or without ``shutdown``."""
        if self._exit_code is None:
            log.warning("the client went away without exit")
            return 0 if self.shut_down else 1
        return self._exit_code

    # --- from the transport -----------------------------------------------------------------
    def reply_error(self, msg_id: Any, code: int, message: str) -> None:
        """Send an error response (``msg_id`` None: id null)."""
        error = {"code": code, "message": message}
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": error})

    def reject(self, reason: str, reply: bool = True) -> None:
        """A frame that could not be read: log it and answer a parse error (id null)."""
        log.warning("unreadable message: %s", reason)
        if reply:
            self.reply_error(None, PARSE_ERROR, f"Parse error: {reason}")

    def receive(self, value: Any) -> None:
        """Check one decoded JSON value, turn it into a message and handle it."""
        if not isinstance(value, dict):
            self.reply_error(None, INVALID_REQUEST, "Invalid Request: expected a JSON object")
            return
        method = value.get("method")
        has_id = "id" in value
        if method is None and has_id and ("result" in value or "error" in value):
            if _valid_id(value["id"]):
                self._dispatch(value, None)  # a response to one of our requests
            else:
                log.warning("dropped a response with an invalid id: %s", _short(value))
            return
        problem = self._envelope_problem(value)
        if problem:
            log.warning("invalid message (%s): %s", problem, _short(value))
            if has_id or method is None:
                msg_id = value["id"] if _valid_id(value.get("id")) else None
                self.reply_error(msg_id, INVALID_REQUEST, f"Invalid Request: {problem}")
            return
        message = {k: value[k] for k in _REQUEST_MEMBERS if k in value}  # others: ignored
        message.setdefault("params", None)  # JSON-RPC allows leaving params out
        self._dispatch(message, value["id"] if has_id else None)

    @staticmethod
    def _envelope_problem(value: dict[str, Any]) -> str:
        if value.get("jsonrpc") != "2.0":
            return 'jsonrpc must be "2.0"'
        if not isinstance(value.get("method"), str):
            return "method must be a string"
        if "id" in value and not _valid_id(value["id"]):
            return "id must be a string or an integer"
        if value.get("params") is not None and not isinstance(value["params"], dict | list):
            return "params must be an object or an array"
        return ""

    def _dispatch(self, value: dict[str, Any], msg_id: Any) -> None:
        method = value.get("method")
        if method is not None and self._refused(method, msg_id):
            return
        try:
            message = self.structure_message(value)
        except JsonRpcException as exc:
            cause = exc.__cause__ or exc
            log.warning("invalid params for %s: %s", method, _short(cause, 400))
            if msg_id is not None and method is not None:
                text = f"Invalid params for {method}: {_short(cause, 400)}"
                self.reply_error(msg_id, INVALID_PARAMS, text)
            return
        if method == types.INITIALIZE:
            self.initialize_received = True
        try:
            self.handle_message(message)
        except Exception:  # one message must not end the session
            log.exception("failed to handle %s", method or "a response")

    def structure_message(self, data: dict[str, Any]) -> Any:
        """A decoded message as its lsprotocol type (pygls' generic types for methods
        lsprotocol does not know); :class:`JsonRpcInvalidParams` when it does not fit. Unlike
        pygls' version, a message of the wrong shape costs one log line, not a traceback."""
        try:
            if "method" in data:
                generic = JsonRPCRequestMessage if "id" in data else JsonRPCNotification
                cls = self.get_message_type(data["method"]) or generic
            elif "error" in data:
                cls = types.ResponseErrorMessage
            else:
                cls = self._result_types.pop(data["id"], None) or JsonRPCResponseMessage
            return self._converter.structure(data, cls)
        except Exception as exc:  # cattrs raises many types
            raise JsonRpcInvalidParams() from exc

    def get_message_type(self, method: str) -> Any:  # type: ignore[override]
        """lsprotocol's params type for ``method``. Not cached: pygls' class-wide
        ``lru_cache`` on this kept finished TCP sessions (and their models) alive."""
        return types.METHOD_TO_TYPES.get(method, (None,))[0]

    def get_result_type(self, method: str) -> Any:  # type: ignore[override]
        """lsprotocol's result type for ``method`` (not cached, as above)."""
        return types.METHOD_TO_TYPES.get(method, (None, None))[1]

    # --- lifecycle --------------------------------------------------------------------------
    def _refused(self, method: str, msg_id: Any) -> bool:
        """Answer or drop what the lifecycle does not allow now; True if it was refused."""
        if method in _ALWAYS:
            return False
        refusal = None
        if not self.initialize_received and method != types.INITIALIZE:
            refusal = (SERVER_NOT_INITIALIZED, "Server not initialized")
        elif method == types.INITIALIZE and self.initialize_received:
            refusal = (INVALID_REQUEST, "initialize was already sent")
        elif self._shutdown:
            refusal = (INVALID_REQUEST, "the server is shutting down")
        if refusal is None:
            return False
        if msg_id is not None:
            self.reply_error(msg_id, *refusal)
        else:
            log.info("dropped %s: %s", method, refusal[1])
        return True

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args: Any) -> None:  # type: ignore[override]  # pygls': a generator
        """End the session: exit code 0 after ``shutdown``, 1 without."""
        self.end_session(0 if self._shutdown else 1)

    @lsp_method(types.WORKSPACE_EXECUTE_COMMAND)
    def lsp_workspace__execute_command(self, params: types.ExecuteCommandParams) -> Any:
        """A command this server does not have: -32601 (pygls answers -32602); else pygls'."""
        if params.command not in self.fm.commands:
            known = ", ".join(sorted(self.fm.commands))
            raise JsonRpcMethodNotFound(f"unknown command {params.command!r} (known: {known})")
        return (yield from super().lsp_workspace__execute_command(params))

    # --- documents --------------------------------------------------------------------------
    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params: types.DidOpenTextDocumentParams) -> None:
        self._server.documents.open(params.text_document)

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params: types.DidChangeTextDocumentParams) -> None:
        self._server.documents.change(params, self._server.encoding)

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params: types.DidCloseTextDocumentParams) -> None:
        self._server.forget(params.text_document.uri)
