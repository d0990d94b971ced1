"""Functions without a body (functions.py): which ones, and what a body replaces."""

from __future__ import annotations

import pytest

from codegen_lsp.completion.functions import Stub, find_stub
from codegen_lsp.completion.languages import language_for
from codegen_lsp.server.documents import split_lines

PY = language_for("python")
C = language_for("c")


def apply(text: str, stub: Stub, body: str) -> str:
    """The document after replacing the stub's region with a generated body."""
    lines = split_lines(text)

    def offset(pos: tuple[int, int]) -> int:
        return sum(len(x) for x in lines[: pos[0]]) + pos[1]

    return text[: offset(stub.start)] + stub.replacement(body) + text[offset(stub.end) :]


def stub_at(text: str, line: int, language=PY) -> Stub | None:
    return find_stub(split_lines(text), line, language)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # pass
            "def add(a, b):\n    pass\n\nx = 1\n",
            "def add(a, b):\n    return a + b\n\nx = 1\n",
        ),
        (  # ellipsis after a docstring
            'def add(a, b):\n    """Sum."""\n    ...\n',
            'def add(a, b):\n    """Sum."""\n    return a + b\n',
        ),
        (  # docstring only, multi-line docstring
            'def add(a, b):\n    """Sum\n\n    of two.\n    """\n\nx = 1\n',
            'def add(a, b):\n    """Sum\n\n    of two.\n    """\n    return a + b\n\nx = 1\n',
        ),
        (  # signature only, end of file without a newline
            "def add(a, b):",
            "def add(a, b):\n    return a + b",
        ),
        (  # one-line stub
            "def add(a, b): pass\nx = 1\n",
            "def add(a, b):\n    return a + b\nx = 1\n",
        ),
        (  # multi-line signature, comment kept
            "def add(\n    a,\n    b,\n) -> int:\n    # add them\n    pass\n",
            "def add(\n    a,\n    b,\n) -> int:\n    # add them\n    return a + b\n",
        ),
    ],
)
def test_python_stub_replacement(text: str, expected: str) -> None:
    stub = stub_at(text, 0)
    assert stub is not None
    assert apply(text, stub, "return a + b") == expected


def test_method_stub_keeps_indentation() -> None:
    text = "class A:\n    def f(self):\n        ...\n    def g(self):\n        return 1\n"
    stub = stub_at(text, 1)
    assert stub is not None and stub.body_indent == "        "
    assert apply(text, stub, "return 0") == text.replace("...", "return 0")
    assert stub.preview("return 0") == "def f(self):\n    return 0"


def test_functions_with_a_body_are_not_stubs() -> None:
    text = "def f(x):\n    return x\n\ndef g(x): return x\n"
    assert stub_at(text, 0) is None
    assert stub_at(text, 3) is None
    assert stub_at("x = 1\n", 0) is None


def test_hover_anywhere_in_the_stub() -> None:
    text = "def add(\n    a, b):\n    pass\n\nx = 1\n"
    assert stub_at(text, 1) is not None
    assert stub_at(text, 2) is not None
    assert stub_at(text, 4) is None


def test_prompt_prefix_for_one_line_stub() -> None:
    stub = stub_at("def f(x): ...  # todo\n", 0)
    assert stub is not None and stub.prefix_line == "def f(x):\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("int add(int a, int b) {\n}\n", "int add(int a, int b) {\n    return a + b;\n}\n"),
        ("int add(int a, int b) {}\n", "int add(int a, int b) {\n    return a + b;\n}\n"),
        (
            "int add(int a, int b) {\n    // TODO\n}\n",
            "int add(int a, int b) {\n    // TODO\n    return a + b;\n}\n",
        ),
    ],
)
def test_brace_stub_replacement(text: str, expected: str) -> None:
    stub = stub_at(text, 0, C)
    assert stub is not None
    assert apply(text, stub, "return a + b;") == expected


def test_brace_non_stubs() -> None:
    assert stub_at("if (x) {\n}\n", 0, C) is None
    assert stub_at("int f() {\n    return 1;\n}\n", 0, C) is None
    assert stub_at("int x = 1;\n", 0, C) is None
