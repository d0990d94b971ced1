"""LSP handlers: get the document, ask the core, convert, return.

Handlers are registered on a fresh :class:`CodegenServer` by :func:`create_server`:
lifecycle and settings, ``textDocument/completion``, ``textDocument/inlineCompletion``,
``textDocument/hover``, ``textDocument/codeAction``, the ``codegen.generateFunction`` and
``codegen.status`` commands, the ``codegen/status`` and ``codegen/lastPrompt`` requests and the
``codegen/didResolveDefinitions`` notification.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.uris import to_fs_path

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import CompletionSkipped
from codegen_lsp.completion.functions import find_stub
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.service import DEBOUNCE_S, EMPTY, SUPERSEDED, Body, Suggestions
from codegen_lsp.engine.api import EngineFactory
from codegen_lsp.server import convert
from codegen_lsp.server.definitions import RESOLVED_NOTIFICATION, plain
from codegen_lsp.server.documents import Document
from codegen_lsp.server.server import CodegenServer

log = logging.getLogger(__name__)

STATUS_REQUEST = "codegen/status"
LAST_PROMPT_REQUEST = "codegen/lastPrompt"  # {textDocument?: {uri}} -> the prompt by part
ACCEPT_NOTIFICATION = "codegen/didAccept"  # {kind: all | word | line}: a client accepted
CONFIG_PULL_TIMEOUT_S = 5.0


def initialize(ls: CodegenServer, params: types.InitializeParams) -> None:
    """Read initializationOptions and the workspace root."""
    ls.init_settings(params.initialization_options)
    folders = params.workspace_folders or []
    root = params.root_uri or (folders[0].uri if folders else None)
    ls.root = to_fs_path(root) if root else params.root_path


async def initialized(ls: CodegenServer, params: types.InitializedParams) -> None:
    """Show settings problems, pull settings if none came, start loading the model."""
    ls.show_pending_problems()
    if not ls.has_init_settings and ls.client_supports("workspace.configuration"):
        pulled = await _pull_settings(ls)
        if isinstance(pulled, dict):
            await ls.change_settings(pulled)
    ls.load_task = asyncio.ensure_future(ls.load_model())


async def _pull_settings(ls: CodegenServer) -> Any:
    item = types.ConfigurationItem(section="codegen")
    try:
        request = ls.workspace_configuration_async(types.ConfigurationParams(items=[item]))
        values = await asyncio.wait_for(request, CONFIG_PULL_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - settings pull is optional
        log.warning("workspace/configuration failed: %s", exc)
        return None
    return values[0] if values else None


async def did_change_configuration(
    ls: CodegenServer, params: types.DidChangeConfigurationParams
) -> None:
    """New settings pushed (``{"codegen": {...}}``), or a hint to pull them."""
    settings = params.settings
    if not (isinstance(settings, dict) and "codegen" in settings):
        if not ls.client_supports("workspace.configuration"):
            return
        settings = await _pull_settings(ls)
        if settings is None:
            return
    await ls.change_settings(settings)


def shutdown(ls: CodegenServer, params: None) -> None:
    """Stop the worker thread."""
    ls.worker.close(timeout=1.0)


async def completion(
    ls: CodegenServer, params: types.CompletionParams
) -> types.CompletionList | None:
    """Completion items whose edit replaces the word being typed; always isIncomplete."""
    uri = params.text_document.uri
    found = await _suggest(ls, uri, params.position, "completion")
    if found is None:
        return types.CompletionList(is_incomplete=True, items=[])
    out, doc = found
    markdown = types.MarkupKind.Markdown in _doc_formats(ls)
    line, column = out.cursor.line, len(out.cursor.before)
    return convert.completion_list(doc, line, column, out.texts, ls.encoding, markdown)


def _doc_formats(ls: CodegenServer) -> list[types.MarkupKind]:
    caps = ls.client_capabilities.text_document
    item = caps.completion.completion_item if caps and caps.completion else None
    return list(item.documentation_format or []) if item else []


async def inline_completion(
    ls: CodegenServer, params: types.InlineCompletionParams
) -> types.InlineCompletionList:
    """Ghost-text items (LSP 3.18)."""
    uri = params.text_document.uri
    invoked = params.context.trigger_kind == types.InlineCompletionTriggerKind.Invoked
    found = await _suggest(ls, uri, params.position, "inline", explicit=invoked)
    if found is None:
        return types.InlineCompletionList(items=[])
    out, doc = found
    line, column = out.cursor.line, len(out.cursor.before)
    return convert.inline_list(doc, line, column, out.texts, ls.encoding)


async def _suggest(
    ls: CodegenServer, uri: str, position: types.Position, kind: str, explicit: bool = False
) -> tuple[Suggestions, Document] | None:
    """The suggestions and the document they still apply to; None when there are none (the
    reason is logged) or the document's text changed after the cursor was taken (edited,
    shrunk, closed or reopened while generating): the answer's ranges are then not built at
    all, and the client asks again for the new text."""
    label = f"{ls.protocol.msg_id} {kind}"
    taken: list[tuple[int, int] | None] = [None]

    def snapshot() -> Cursor:
        taken[0] = _state(ls, uri)
        return ls.cursor(uri, position)

    try:
        out = await ls.service.suggest(uri, snapshot, label, explicit)
    except CompletionSkipped as skipped:
        level = logging.DEBUG if str(skipped) == SUPERSEDED else logging.INFO
        log.log(level, "request %s %s: %s", ls.protocol.msg_id, kind, skipped)
        return None
    if not out.texts and out.source == "model":
        log.debug("request %s %s: %s", ls.protocol.msg_id, kind, EMPTY)
    doc = ls.documents.get(uri)
    if doc is None or doc.state != taken[0]:
        log.info("request %s %s: the document changed while generating", ls.protocol.msg_id, kind)
        return None
    return out, doc


def _state(ls: CodegenServer, uri: str) -> tuple[int, int] | None:
    """The open document's (serial, version), or None."""
    doc = ls.documents.get(uri)
    return doc.state if doc is not None else None


async def _body(ls: CodegenServer, uri: str, position: types.Position) -> Body:
    """The generated body at ``position``; CompletionSkipped says why there is none."""

    def version() -> tuple[int, int] | None:
        return _state(ls, uri)

    label = f"{ls.protocol.msg_id} body"
    return await ls.service.function_body(uri, version, lambda: ls.cursor(uri, position), label)


async def hover(ls: CodegenServer, params: types.HoverParams) -> types.Hover | None:
    """On a function without a body: the function with a generated body."""
    uri = params.text_document.uri
    try:
        found = await _body(ls, uri, params.position)
    except CompletionSkipped as skipped:
        log.debug("request %s hover: %s", ls.protocol.msg_id, skipped)
        return None
    doc = ls.documents.get(uri)
    if doc is None:
        log.debug("request %s hover: closed", ls.protocol.msg_id)
        return None
    return convert.hover(doc, found.stub, found.text, ls.encoding)


def code_action(ls: CodegenServer, params: types.CodeActionParams) -> list[types.CodeAction] | None:
    """Offer "Generate function body" inside a function without a body (no model call)."""
    only = params.context.only
    kind = types.CodeActionKind.RefactorRewrite.value
    if only and not any(kind == k or kind.startswith(f"{k}.") for k in only):
        return None
    doc = ls.documents.get(params.text_document.uri)
    if doc is None or not ls.settings.enabled(doc.language_id):
        return None
    language = language_for(doc.language_id, doc.uri)
    if find_stub(doc.lines, params.range.start.line, language) is None:
        return None
    return [convert.code_action(doc.uri, params.range.start)]


async def generate_function(ls: CodegenServer, *args: Any) -> dict[str, Any]:
    """``codegen.generateFunction``: generate the body and apply it with workspace/applyEdit."""
    try:
        uri, position = convert.parse_command_arguments(args)
    except ValueError as exc:
        raise JsonRpcInvalidParams(f"{convert.COMMAND_GENERATE}: {exc}") from None
    try:
        found = await _body(ls, uri, position)
    except CompletionSkipped as skipped:
        return {"applied": False, "reason": str(skipped)}
    doc = ls.documents.get(uri)
    if doc is None:
        return {"applied": False, "reason": "closed"}
    edit = convert.body_edit(doc, found.stub, found.text, ls.encoding)
    params = types.ApplyWorkspaceEditParams(edit=edit, label="Generate function body")
    try:
        result = await ls.workspace_apply_edit_async(params)
    except JsonRpcException as exc:  # an editor that declines answers with an error (eglot)
        log.info("the editor declined the generated edit: %s", exc)
        return {"applied": False, "reason": f"the editor declined the edit: {exc}"}
    return {"applied": bool(result.applied), "reason": result.failure_reason or ""}


def accepted(ls: CodegenServer, kind: Any) -> None:
    """A suggestion (``all``) or part of one (``word``, ``line``) was accepted: counted, in
    memory only (shown in ``codegen/status``; nothing leaves the machine)."""
    if kind not in convert.ACCEPT_KINDS:
        log.debug("ignoring an accept of kind %r", kind)
        return
    ls.service.count_accept(kind)


def did_accept(ls: CodegenServer, params: Any) -> None:
    """``codegen/didAccept`` from the Neovim plugin (``{"kind": ...}``)."""
    kind = params.get("kind") if isinstance(params, dict) else getattr(params, "kind", None)
    accepted(ls, kind)


def accepted_command(ls: CodegenServer, *args: Any) -> None:
    """``codegen.accepted``: the command of every inline item (VS Code runs it on accept)."""
    accepted(ls, args[0] if args else "all")


def status_request(ls: CodegenServer, params: Any) -> dict[str, Any]:
    """``codegen/status``: state, message and counters."""
    return ls.status()


def status_command(ls: CodegenServer, *args: Any) -> dict[str, Any]:
    """``codegen.status`` as a command, for clients that only run commands."""
    return ls.status()


def did_resolve_definitions(ls: CodegenServer, params: Any) -> None:
    """``codegen/didResolveDefinitions``: what the client's language servers resolved."""
    ls.definitions.answer(params)


def last_prompt(ls: CodegenServer, params: Any) -> dict[str, Any] | None:
    """``codegen/lastPrompt``: the last prompt (of ``textDocument.uri`` when given) by part,
    with token counts; null before the first model request."""
    data = plain(params)
    document = data.get("textDocument") if isinstance(data, dict) else None
    uri = document.get("uri") if isinstance(document, dict) else None
    return ls.service.editor.view(uri if isinstance(uri, str) else None)


def create_server(factory: EngineFactory, debounce_s: float = DEBOUNCE_S) -> CodegenServer:
    """A server with every handler registered."""
    ls = CodegenServer(factory, debounce_s)
    ls.feature(types.INITIALIZE)(initialize)
    ls.feature(types.INITIALIZED)(initialized)
    ls.feature(types.SHUTDOWN)(shutdown)
    ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)(did_change_configuration)
    ls.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=["."], resolve_provider=False),
    )(completion)
    ls.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())(
        inline_completion
    )
    ls.feature(types.TEXT_DOCUMENT_HOVER)(hover)
    ls.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]),
    )(code_action)
    ls.command(convert.COMMAND_GENERATE)(generate_function)
    ls.command(convert.COMMAND_STATUS)(status_command)
    ls.command(convert.COMMAND_ACCEPTED)(accepted_command)
    ls.feature(STATUS_REQUEST)(status_request)
    ls.feature(ACCEPT_NOTIFICATION)(did_accept)
    ls.feature(RESOLVED_NOTIFICATION)(did_resolve_definitions)
    ls.feature(LAST_PROMPT_REQUEST)(last_prompt)
    return ls
