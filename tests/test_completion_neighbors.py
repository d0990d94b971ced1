"""Snippets from other open files: which windows are chosen, the token budget, the block's
stability while typing, and the open/closed documents offered (``Documents.others``)."""

from __future__ import annotations

from lsprotocol import types

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.core import Completer, CompletionOptions, EngineInfo
from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.neighbors import Neighbor, NeighborContext, best_windows, query_of
from codegen_lsp.server.documents import Documents

PY = language_for("python", "a.py")
MODELS = "".join(
    f"class Invoice{i}:\n    def total_amount(self, line_items, tax_rate):\n"
    f"        return sum(item.price for item in line_items) * (1 + tax_rate)\n\n"
    for i in range(6)
)
UNRELATED = "".join(
    "def render_png(canvas, width_px):\n    canvas.fill(width_px)\n" for _ in range(9)
)
CURRENT = "def bill(customer, line_items, tax_rate):\n    amount = "


def lines_of(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def cursor(text: str) -> Cursor:
    lines = lines_of(text)
    return Cursor.at(lines, len(lines) - 1, len(lines[-1]), PY, "billing.py")


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_the_most_similar_file_is_chosen_and_an_unrelated_one_is_not() -> None:
    neighbors = [
        Neighbor("render.py", lines_of(UNRELATED)),
        Neighbor("models.py", lines_of(MODELS)),
    ]
    chosen = best_windows(query_of(cursor(CURRENT)), neighbors, 2)
    assert [s.path for s in chosen] == ["models.py"]
    assert "tax_rate" in chosen[0].text


def test_the_block_is_comments_within_the_budget() -> None:
    context = NeighborContext()
    neighbors = [Neighbor("models.py", lines_of(MODELS))]
    block = context.block("k", cursor(CURRENT), neighbors, 2, 60, lambda t: len(chars(t)) // 4)
    assert block.startswith("# Compare this snippet from models.py:\n")
    assert all(line.startswith("#") for line in block.splitlines())
    assert sum(len(line) // 4 for line in block.splitlines(keepends=True)) <= 60
    counted: list[str] = []

    def counting(text: str) -> int:
        counted.append(text)
        return len(text) // 4

    again = context.block("k", cursor(CURRENT + "x"), neighbors, 2, 60, counting)
    assert again == block and counted == []  # same query and documents: nothing recomputed
    assert context.block("k", cursor(CURRENT), neighbors, 0, 60, len) == ""
    assert context.block("k", cursor(CURRENT), neighbors, 2, 0, len) == ""


def test_typing_keeps_the_block_and_the_prompt_start() -> None:
    completer = Completer()
    engine = EngineInfo(n_ctx=4096, encode=chars)
    options = CompletionOptions(context_files=2, context_file_tokens=400)
    neighbors = [
        Neighbor("models.py", lines_of(MODELS)),
        Neighbor("render.py", lines_of(UNRELATED)),
    ]
    prompts = []
    for typed in ["", "s", "su", "sum(", "sum(item.price for item in line_items)"]:
        prepared = completer.prepare(
            "billing.py", cursor(CURRENT + typed), engine, options, neighbors
        )
        prompts.append(prepared.request.prompt)
    block = chars("# Compare this snippet from models.py:\n")
    assert all(p[: len(block)] == block for p in prompts)
    shared = min(len(p) for p in prompts) - 60  # every prompt shares all but its last line
    assert all(p[:shared] == prompts[0][:shared] for p in prompts)
    # a new line a few lines down still keeps the same snippet (it scores about as well)
    later = completer.prepare("billing.py", cursor(CURRENT + "1\n    tax = 2\n    x = "),
                              engine, options, neighbors)  # fmt: skip
    assert later.request.prompt[: len(block) + 200] == prompts[0][: len(block) + 200]


def test_open_and_recently_closed_documents_of_the_language() -> None:
    docs = Documents(remember_closed=2)
    for name, language in [("a", "python"), ("b", "python"), ("c", "go"), ("d", "python")]:
        docs.open(types.TextDocumentItem(f"file:///{name}.py", language, 1, name))
    assert [d.uri for d in docs.others("file:///a.py", "python")] == [
        "file:///b.py",
        "file:///d.py",
    ]
    docs.close("file:///b.py")
    docs.close("file:///d.py")
    docs.close("file:///c.py")  # only the last 2 closed are remembered
    assert [d.uri for d in docs.others("file:///a.py", "python")] == ["file:///d.py"]
    docs.open(types.TextDocumentItem("file:///d.py", "python", 2, "d2"))
    assert [d.text for d in docs.others("file:///a.py", "python")] == ["d2"]
