"""Converters to LSP objects (convert.py): word ranges, items, command arguments."""

from __future__ import annotations

import pytest
from lsprotocol import types

from codegen_lsp.completion.functions import find_stub
from codegen_lsp.completion.languages import language_for
from codegen_lsp.server.convert import (
    body_edit,
    command_arguments,
    completion_list,
    fenced,
    hover,
    inline_list,
    parse_command_arguments,
    word_before,
)
from codegen_lsp.server.documents import Document


def test_word_before() -> None:
    assert word_before("x = os.pa") == "pa"
    assert word_before("名前") == "名前"
    assert word_before("f(") == ""


def test_completion_items_replace_the_word() -> None:
    doc = Document.open("file:///a.py", "python", 1, 'a = "😀"; os.pa')
    result = completion_list(doc, 0, 14, ["th.join(a)", "th\n    x"], "utf-16")
    assert result.is_incomplete
    first, second = result.items
    assert first.text_edit.range == types.Range(types.Position(0, 13), types.Position(0, 15))
    assert first.text_edit.new_text == "path.join(a)" and first.label == "path.join(a)"
    assert first.insert_text_format == types.InsertTextFormat.PlainText
    assert second.insert_text_mode == types.InsertTextMode.AsIs and second.label == "path…"
    assert "```python\npath\n    x\n```" == second.documentation.value


def test_inline_items() -> None:
    doc = Document.open("file:///a.py", "python", 1, "x = va")
    (item,) = inline_list(doc, 0, 6, ["lue"], "utf-8").items
    assert item.insert_text == "value"
    assert item.range == types.Range(types.Position(0, 4), types.Position(0, 6))


def test_fence_survives_backticks() -> None:
    assert fenced("a ``` b", "md").startswith("````md\n")


def test_hover_and_edit_for_a_stub() -> None:
    doc = Document.open("file:///a.py", "python", 1, "def f(x):\n    pass\n")
    stub = find_stub(doc.lines, 0, language_for("python"))
    assert stub is not None
    shown = hover(doc, stub, "return x", "utf-16")
    assert "def f(x):\n    return x" in shown.contents.value
    (edit,) = body_edit(doc, stub, "return x", "utf-16").changes["file:///a.py"]
    assert edit.range == types.Range(types.Position(1, 0), types.Position(2, 0))
    assert edit.new_text == "    return x\n"


def test_generate_function_arguments() -> None:
    position = types.Position(3, 4)
    args = tuple(command_arguments("file:///a.py", position))
    assert parse_command_arguments(args) == ("file:///a.py", position)
    as_object = {"textDocument": {"uri": "file:///a.py"}, "position": {"line": 3, "character": 4}}
    assert parse_command_arguments((as_object,)) == ("file:///a.py", position)
    for bad in [(), ("x",), ("u", {"line": -1, "character": 0}), (1, {"line": 0, "character": 0})]:
        with pytest.raises(ValueError):
            parse_command_arguments(bad)
