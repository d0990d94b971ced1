"""Suggestions and generated bodies -> LSP objects (ranges in the negotiated encoding).

Completion items and inline items replace the word being typed: their range runs from the
start of the identifier before the cursor to the cursor, and their text is that word plus
the suggestion, so clients that filter by the word keep them. Everything is plain text
(no snippets); multi-line items are inserted as they are (``insertTextMode: asIs``).
"""

from __future__ import annotations

import re
from typing import Any

from lsprotocol import types

from codegen_lsp.completion.functions import Stub
from codegen_lsp.server.documents import Document

COMMAND_GENERATE = "codegen.generateFunction"
COMMAND_STATUS = "codegen.status"
COMMAND_ACCEPTED = "codegen.accepted"  # an inline item's command: run when it is accepted
ACCEPT_KINDS = ("all", "word", "line")
LABEL_CHARS = 60
WORD_MAX_CHARS = 256  # a longer run of word characters is not a word: items insert at the cursor
_WORD = re.compile(r"\w*")


def word_before(before: str) -> str:
    """The identifier characters just before the cursor (Unicode-aware); "" when there are more
    than WORD_MAX_CHARS of them (a hash or a blob, not a word being typed).

    Matched on the reversed tail of the text, anchored: the cost is bounded whatever the line
    (a search for ``\\w*$`` restarts at every word character and is quadratic in the run)."""
    tail = before[-(WORD_MAX_CHARS + 1) :][::-1]
    match = _WORD.match(tail)
    size = match.end() if match else 0
    return "" if size > WORD_MAX_CHARS else before[len(before) - size :]


def _word_range(doc: Document, line: int, column: int, encoding: str) -> tuple[str, types.Range]:
    """The word before (line, column) and its range; an empty range at the end of the document
    when the line is no longer there (callers check the document first: this never raises)."""
    if not 0 <= line < len(doc.lines):
        last = len(doc.lines) - 1
        end = doc.position(last, len(doc.lines[last]), encoding)
        return "", types.Range(end, end)
    text = doc.lines[line]
    word = word_before(text[max(0, column - WORD_MAX_CHARS - 1) : column])
    start = doc.position(line, column - len(word), encoding)
    return word, types.Range(start, doc.position(line, column, encoding))


def _label(text: str) -> str:
    first = text.lstrip("\n").split("\n", 1)[0].strip()
    more = "…" if "\n" in text.strip("\n") or len(first) > LABEL_CHARS else ""
    return first[:LABEL_CHARS] + more


def fenced(code: str, language: str) -> str:
    """Markdown code block (fence longer than any backtick run in ``code``)."""
    runs = [len(m) for m in re.findall(r"`+", code)]
    fence = "`" * max(3, max(runs, default=0) + 1)
    return f"{fence}{language}\n{code}\n{fence}"


def completion_list(
    doc: Document,
    line: int,
    column: int,
    suggestions: list[str],
    encoding: str,
    markdown: bool = True,
) -> types.CompletionList:
    """A completion list (``isIncomplete``: clients ask again on every keystroke)."""
    word, rng = _word_range(doc, line, column, encoding)
    items = []
    for i, suggestion in enumerate(suggestions):
        text = word + suggestion
        multiline = "\n" in text
        doc_text = fenced(text, doc.language_id) if markdown else text
        items.append(
            types.CompletionItem(
                label=_label(text) or text,
                kind=types.CompletionItemKind.Text,
                detail="codegen",
                documentation=types.MarkupContent(
                    types.MarkupKind.Markdown if markdown else types.MarkupKind.PlainText,
                    doc_text,
                ),
                sort_text=f"{i:04d}",
                filter_text=text,
                text_edit=types.TextEdit(rng, text),
                insert_text_format=types.InsertTextFormat.PlainText,
                insert_text_mode=types.InsertTextMode.AsIs if multiline else None,
            )
        )
    return types.CompletionList(is_incomplete=True, items=items)


def inline_list(
    doc: Document, line: int, column: int, suggestions: list[str], encoding: str
) -> types.InlineCompletionList:
    """Inline (ghost text) items replacing the word before the cursor."""
    word, rng = _word_range(doc, line, column, encoding)
    accepted = types.Command(title="Accepted", command=COMMAND_ACCEPTED, arguments=["all"])
    items = [
        types.InlineCompletionItem(insert_text=word + s, range=rng, command=accepted)
        for s in suggestions
    ]
    return types.InlineCompletionList(items=items)


def command_arguments(uri: str, position: types.Position) -> list[Any]:
    """Arguments of ``codegen.generateFunction``: ``[uri, {line, character}]``."""
    return [uri, {"line": position.line, "character": position.character}]


_ARGS_HELP = "expected [uri, {line, character}] or [{textDocument: {uri}, position}]"


def parse_command_arguments(args: tuple[Any, ...]) -> tuple[str, types.Position]:
    """(uri, position) from ``codegen.generateFunction`` arguments; ValueError if malformed.

    Both ``[uri, position]`` (what the editor plugins send) and one
    TextDocumentPositionParams-shaped object are accepted.
    """
    try:
        if len(args) == 2:
            uri, pos = args
        elif len(args) == 1:
            uri, pos = args[0]["textDocument"]["uri"], args[0]["position"]
        else:
            raise ValueError(_ARGS_HELP)
        line, character = pos["line"], pos["character"]
    except (KeyError, TypeError):
        raise ValueError(_ARGS_HELP) from None
    ok = isinstance(uri, str) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (line, character)
    )
    if not ok:
        raise ValueError("uri must be a string and line/character non-negative integers")
    return uri, types.Position(line, character)


def hover(doc: Document, stub: Stub, body: str, encoding: str) -> types.Hover:
    """A hover showing the function with its generated body."""
    code = fenced(stub.preview(body), doc.language_id)
    note = "*codegen: generated body — use the code action “Generate function body” to insert it.*"
    end = len(doc.lines[stub.def_line].rstrip("\r\n"))
    rng = types.Range(
        doc.position(stub.def_line, 0, encoding), doc.position(stub.def_line, end, encoding)
    )
    return types.Hover(types.MarkupContent(types.MarkupKind.Markdown, f"{code}\n\n{note}"), rng)


def code_action(uri: str, position: types.Position) -> types.CodeAction:
    """The code action that generates a function body at ``position``."""
    title = "Generate function body (codegen)"
    return types.CodeAction(
        title=title,
        kind=types.CodeActionKind.RefactorRewrite,
        command=types.Command(
            title=title, command=COMMAND_GENERATE, arguments=command_arguments(uri, position)
        ),
    )


def body_edit(doc: Document, stub: Stub, body: str, encoding: str) -> types.WorkspaceEdit:
    """The workspace edit that puts a generated body into the function."""
    start = doc.position(*stub.start, encoding)
    end = doc.position(*stub.end, encoding)
    edit = types.TextEdit(types.Range(start, end), stub.replacement(body))
    return types.WorkspaceEdit(changes={doc.uri: [edit]})
