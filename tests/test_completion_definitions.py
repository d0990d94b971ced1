"""The choice behind the definitions block (definitions.py) and recent edits (recent_edits.py):
which names are asked about and in what order, what of a definition is shown, the token
budget, a block that stays put while the user types, and edits ranking snippet windows."""

from __future__ import annotations

from codegen_lsp.completion.context import Cursor
from codegen_lsp.completion.definitions import (
    MAX_NAMES,
    DefinitionContext,
    Head,
    head_of,
    names_near,
    render,
)
from codegen_lsp.completion.editor_context import EditorContext
from codegen_lsp.completion.languages import LANGUAGES
from codegen_lsp.completion.neighbors import Neighbor, best_windows, identifiers
from codegen_lsp.completion.options import CompletionOptions
from codegen_lsp.completion.recent_edits import EDIT_BONUS, RecentEdits, edit_bonus

PY, TS = LANGUAGES["python"], LANGUAGES["typescript"]


def cursor_at_end(text: str, language=PY) -> Cursor:
    lines = text.splitlines(keepends=True)
    return Cursor.at(lines, len(lines) - 1, len(lines[-1]), language)


def names(text: str) -> list[str]:
    return [n.name for n in names_near(cursor_at_end(text))]


def test_names_are_the_statements_uses_nearest_first() -> None:
    text = (
        "from shop.client import Client, fetch_page\n"
        "from shop import settings\n"
        "def run(url, *, size: PageSize = 3):\n"
        "    client = Client(url, settings.TIMEOUT)  # fetch_all is in a comment\n"
        "    page = client.fetch_page(size, 'parse_page in a string')\n"
        "    total = len(page) + merge_totals(page, fetc"
    )
    # the word being typed, builtins, keywords, locals, parameters and strings are left out
    assert names(text) == [
        "merge_totals",
        "fetch_page",
        "TIMEOUT",
        "settings",
        "Client",
        "PageSize",
    ]


def test_positions_are_where_the_name_is_used() -> None:
    found = names_near(cursor_at_end("x = 1\nvalue = shop.fetch_page(x, "))
    assert [(n.name, n.line, n.column) for n in found] == [("fetch_page", 1, 13), ("shop", 1, 8)]


def test_names_in_an_open_string_and_far_lines_are_not_asked() -> None:
    far = "far_away_name()\n" + "\n" * 10
    assert names(far + 'msg = f"{render_value(') == []
    assert names(far + "x = 2\n") == []


def test_at_most_max_names() -> None:
    text = "value = " + " + ".join(f"name_{i}" for i in range(20)) + " + "
    found = names(text)
    assert len(found) == MAX_NAMES and found[0] == "name_19"


def test_the_head_of_a_function_is_its_signature_and_docstring() -> None:
    text = (
        "def fetch_page(url: str,\n"
        "               retries: int = 3) -> Page:\n"
        '    """Fetch one page.\n'
        "\n"
        "    A long explanation nobody needs here.\n"
        '    """\n'
        "    return Page(url)\n"
    )
    assert head_of(text, PY) == (
        "def fetch_page(url: str,\n"
        "               retries: int = 3) -> Page:\n"
        '    """Fetch one page.\n'
    )


def test_the_head_of_a_class_lists_fields_and_method_signatures() -> None:
    text = (
        "    class Client(Base):\n"
        '        """A client."""\n'
        "        timeout: float = 10\n"
        "        retries = 3\n"
        "\n"
        "        def __init__(self, url: str) -> None:\n"
        "            self.url = url\n"
        "\n"
        "        @property\n"
        "        def name(self) -> str:\n"
        "            return self.url\n"
        "    def after_the_class(): pass\n"
    )
    assert head_of(text, PY) == (
        "class Client(Base):\n"
        '    """A client."""\n'
        "    timeout: float = 10\n"
        "    retries = 3\n"
        "    def __init__(self, url: str) -> None:\n"
        "    def name(self) -> str:\n"
    )


def test_heads_of_constants_imports_modules_and_brace_languages() -> None:
    assert head_of("MAX_PAGES = 10\nOTHER = 2\n", PY) == "MAX_PAGES = 10\n"
    assert head_of("import os\n", PY) == ""
    assert head_of('"""A module docstring."""\nimport os\n', PY) == ""  # a module's answer
    assert head_of("# a comment\n", PY) == ""
    assert head_of("", PY) == ""
    ts = "export function add(a: number, b: number): number {\n  return a + b;\n}\n"
    assert head_of(ts, TS) == "export function add(a: number, b: number): number {\n"
    cls = "class Box {\n  size: number;\n  grow(by: number): void {\n    this.size += by;\n  }\n}\n"
    assert head_of(cls, TS) == "class Box {\n  size: number;\n  grow(by: number): void {\n}\n"


def test_the_head_of_a_huge_line_is_cut() -> None:
    head = head_of("def f(" + "a, " * 100_000 + "):\n    pass\n", PY)
    assert len(head) < 200


def heads(*names: str) -> list[Head]:
    return [Head(n, f"{n}.py", f"def {n}(a, b):\n") for n in names]


def test_render_keeps_the_nearest_and_lists_it_last() -> None:
    words = lambda text: len(text.split())  # noqa: E731
    block = render(heads("near", "far"), "#", 100, words)
    assert block.index("near") > block.index("far")
    assert block.endswith("# def near(a, b):\n")
    short = render(heads("near", "far"), "#", 12, words)  # room for one definition only
    assert "near" in short and "far" not in short
    assert render(heads("near"), "", 100, words) == ""
    assert render(heads("near"), "#", 5, words) == ""  # not even one line of the head fits


def test_the_block_stays_put_while_typing() -> None:
    context = DefinitionContext()
    cursor = cursor_at_end("page = fetch_page(url, ")
    used = names_near(cursor)
    assert context.block("doc", used, "#", 200, len) == ""
    context.store("doc", "fetch_page", heads("fetch_page")[0])
    block = context.block("doc", used, "#", 200, len)
    assert "def fetch_page(a, b):" in block
    for typed in ("page = fetch_page(url, r", "page = fetch_page(url, re"):
        assert context.block("doc", names_near(cursor_at_end(typed)), "#", 200, len) == block
    # a name that leaves the query does not change the block
    assert context.block("doc", names_near(cursor_at_end("x = 1\n")), "#", 200, len) == block
    # a new name's definition does, and so does a changed head
    context.store("doc", "merge", heads("merge")[0])
    both = names_near(cursor_at_end("page = merge(fetch_page(url), "))
    grown = context.block("doc", both, "#", 200, len)
    assert "def merge" in grown and "def fetch_page" in grown
    context.store("doc", "merge", Head("merge", "merge.py", "def merge(a, b, c):\n"))
    assert "def merge(a, b, c)" in context.block("doc", both, "#", 200, len)
    assert context.known("doc", "merge") and not context.known("other", "merge")


def test_answers_go_stale() -> None:
    context = DefinitionContext()
    context.store("doc", "gone", None, retry_s=0.0)
    context.store("doc", "kept", None, retry_s=60.0)
    assert not context.known("doc", "gone") and context.known("doc", "kept")


def test_the_editor_context_asks_only_for_names_without_an_answer() -> None:
    from codegen_lsp.completion.core import EngineInfo

    editor = EditorContext()
    asked: list[list[str]] = []
    editor.resolve = lambda key, found: asked.append([n.name for n in found])
    engine = EngineInfo(2048, lambda text: list(range(len(text.split()))))
    cursor = cursor_at_end("page = merge(fetch_page(url), ")
    options = CompletionOptions()
    assert editor.definitions_block("doc", cursor, engine, options) == ""
    editor.store("doc", "fetch_page", heads("fetch_page")[0])
    editor.store("doc", "merge", None)
    block = editor.definitions_block("doc", cursor, engine, options)
    # nearest first; then only the name still without an answer
    assert asked == [["url", "fetch_page", "merge"], ["url"]] and "def fetch_page" in block
    off = CompletionOptions(definitions="off")
    assert editor.definitions_block("doc", cursor, engine, off) == ""
    assert len(asked) == 2


def test_recent_edits_follow_their_lines_and_merge() -> None:
    edits = RecentEdits()
    edits.record("a", 10, 10, 0)  # typing on line 10
    edits.record("a", 11, 11, 0)  # the same place: one region
    assert edits.lines("a") == (11,)
    edits.record("a", 2, 2, 3)  # three lines inserted above: the region moves down
    assert edits.lines("a") == (3, 14)
    edits.record("a", 0, 5, 0)  # lines 0-5 replaced by one: the region above moves up
    assert edits.lines("a") == (0, 9)
    edits.forget("a")
    assert edits.lines("a") == ()


def test_a_window_holding_a_recent_edit_is_ranked_first() -> None:
    assert (
        edit_bonus((30, 5), 20, 40) == EDIT_BONUS and edit_bonus((30, 5), 0, 20) == EDIT_BONUS / 2
    )
    assert edit_bonus((), 0, 20) == 0.0
    lines = [f"def helper_{i}(value):\n    return value + {i}\n" for i in range(30)]
    text = "".join(lines).splitlines(keepends=True)
    query = identifiers("total = helper_3(value) + helper_4(value)")
    plain = best_windows(query, [Neighbor("util.py", text, 1)], 1)
    edited = best_windows(query, [Neighbor("util.py", text, 1, (50,))], 1)
    assert plain[0].start == 0 and edited[0].start in (40, 50)


def test_an_edit_far_above_in_the_file_itself_is_a_snippet_only_above_its_window() -> None:
    from codegen_lsp.completion.core import Completer, EngineInfo

    lines = [f"def helper_{i}(value):\n    return value * {i}\n" for i in range(60)]
    text = "".join(lines).splitlines(keepends=True) + ["total = helper_2(value) + helper_3("]
    cursor = Cursor.at(text, len(text) - 1, len(text[-1]), PY, "calc.py")
    engine = EngineInfo(2048, lambda t: list(range(len(t.split()))))
    options = CompletionOptions(context_tokens=200)
    completer = Completer()
    completer.prepare("calc", cursor, engine, options, block="")  # the window starts far down
    start = completer._windows["calc"]
    assert start > 40
    own = Neighbor("calc.py", text, 2, (5,), own=True)  # edited helper_2/3 at the top
    block = completer.context_block("calc", cursor, engine, options, [own])
    assert "Compare this snippet from calc.py:" in block and "def helper_2(value):" in block
    fresh = Completer()
    fresh.prepare("calc", cursor, engine, options, block="")
    inside = Neighbor("calc.py", text, 3, (len(text) - 2,), own=True)  # an edit in the window
    assert fresh.context_block("calc", cursor, engine, options, [inside]) == ""
    assert fresh.context_block("calc", cursor, engine, options, [own]) != ""
