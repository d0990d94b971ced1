"""Single vs multi line, end of block by indentation, stop sequences (stopping.py)."""

from __future__ import annotations

import pytest

from codegen_lsp.completion.languages import language_for
from codegen_lsp.completion.stopping import (
    MULTI,
    SINGLE,
    StopRule,
    block_indent,
    choose_mode,
    end_of_block,
    first_stop,
    make_stop_rule,
    opens_block,
)

PY = language_for("python")
C = language_for("c")


@pytest.mark.parametrize(
    ("text", "language", "mode"),
    [
        ("x = foo(█)", "python", SINGLE),  # text after the cursor
        ("def f(x):█", "python", MULTI),  # block opener
        ("def f(x):  # comment█", "python", MULTI),
        ("    █", "python", MULTI),  # empty (indented) line
        ("█", "python", MULTI),
        ("x = fo█", "python", SINGLE),  # end of a partial line
        ("int main() {█", "c", MULTI),
        ("if (x) {█ }", "c", SINGLE),
        ("x = {█", "python", SINGLE),  # { opens nothing in Python
        ("d = {'a': 1}█", "python", SINGLE),
    ],
)
def test_choose_mode_auto(marked, text: str, language: str, mode: str) -> None:
    cursor = marked(text, language)
    assert choose_mode(cursor.before, cursor.after, "auto", cursor.language) == mode


def test_choose_mode_setting_overrides(marked) -> None:
    mid_line = marked("foo(█)")
    assert choose_mode(mid_line.before, mid_line.after, "always", PY) == MULTI
    empty = marked("    █")
    assert choose_mode(empty.before, empty.after, "never", PY) == SINGLE


def test_opens_block() -> None:
    assert opens_block("    for x in y:", PY)
    assert not opens_block("x = y", PY)
    assert opens_block("void f() {", C)
    assert not opens_block("void f() {", language_for("plaintext"))


@pytest.mark.parametrize(
    ("text", "width"),
    [("    █", 4), ("\t█", 4), ("def f():█", 1), ("    if x:█", 5), ("    x = 1█", 4)],
)
def test_block_indent(marked, text: str, width: int) -> None:
    cursor = marked(text)
    assert block_indent(cursor.before, cursor.indent, PY) == width


def test_end_of_block_cuts_at_dedent() -> None:
    generated = "\n        y = 1\n\n        return y\n    def other(self):\n"
    cut = end_of_block(generated, min_indent=5)
    assert generated[:cut] == "\n        y = 1\n\n        return y"


def test_end_of_block_waits_for_indentation_to_show() -> None:
    assert end_of_block("\n        y = 1\n    ", min_indent=5) is None
    assert end_of_block("\n        y = 1\nx", min_indent=5) == len("\n        y = 1")


def test_end_of_block_first_line_is_never_cut() -> None:
    assert end_of_block("x = 1", min_indent=8) is None


def test_end_of_block_keeps_one_closer() -> None:
    generated = "\n    return 0;\n}\n\nint g() {\n"
    cut = end_of_block(generated, min_indent=1, closer_indent=0, closers=("}",))
    assert generated[:cut] == "\n    return 0;\n}"
    # not yet complete: wait for the line to end unless generation is over
    assert end_of_block("\n    x;\n}", 1, 0, ("}",)) is None
    assert end_of_block("\n    x;\n}", 1, 0, ("}",), final=True) == len("\n    x;\n}")


def test_end_of_block_drops_closer_when_not_wanted() -> None:
    generated = "\n    return 0;\n}\n"
    assert generated[: end_of_block(generated, 1)] == "\n    return 0;"


def test_first_stop() -> None:
    assert first_stop("a\n\n\nb", ["\n\n\n"]) == 1
    assert first_stop("abc", ["x", ""]) is None
    assert first_stop("print(1)\ndef g", ["\ndef ", "1"]) == 6


def test_single_line_rule_cuts_at_newline(marked) -> None:
    cursor = marked("x = fo█")
    rule = make_stop_rule(SINGLE, cursor.before, cursor.indent, PY)
    assert rule("o(1)\ny = 2") == 4
    assert rule.apply("o(1)\ny = 2") == "o(1)"
    assert rule("o(1") is None


def test_multi_line_rule_in_python_function(marked) -> None:
    cursor = marked("class A:\n    def f(self):█\n")
    rule = make_stop_rule(MULTI, cursor.before, cursor.indent, PY)
    generated = "\n        return 1\n\n    def g(self):\n        pass\n"
    assert rule.apply(generated) == "\n        return 1\n"


def test_multi_line_rule_top_level_stops_at_next_def(marked) -> None:
    cursor = marked("import os\n█")
    rule = make_stop_rule(MULTI, cursor.before, cursor.indent, PY)
    generated = "def main():\n    print(os.getcwd())\n\ndef other():\n"
    assert rule.apply(generated) == "def main():\n    print(os.getcwd())\n"


def test_brace_rule_adds_missing_closer(marked) -> None:
    cursor = marked("int f(int x) {█\n\nint g() { return 1; }\n", "c", "t.c")
    rule = make_stop_rule(
        MULTI, cursor.before, cursor.indent, C, next_line=cursor.next_nonblank_line()
    )
    assert rule.apply("\n    return x;\n}\nint h") == "\n    return x;\n}"


def test_brace_rule_skips_closer_the_document_has(marked) -> None:
    cursor = marked("int f(int x) {█\n}\n", "c", "t.c")
    rule = make_stop_rule(
        MULTI, cursor.before, cursor.indent, C, next_line=cursor.next_nonblank_line()
    )
    assert rule.apply("\n    return x;\n}\n") == "\n    return x;"


def test_user_stop_sequences_apply_in_both_modes(marked) -> None:
    cursor = marked("x = █")
    single = make_stop_rule(SINGLE, cursor.before, cursor.indent, PY, ["STOP"])
    assert single.apply("1 STOP 2") == "1 "
    multi = make_stop_rule(MULTI, "", "", PY, ["STOP"])
    assert multi.apply("a\nb STOP") == "a\nb "


def test_stop_check_cost_per_step_does_not_grow_over_2000_tokens(monkeypatch, tokenizer) -> None:
    """A 2,000-token multi-line generation on the engine: the stop check sees only each new
    piece (plus a stop sequence's length of earlier text), never the text so far."""
    import threading

    from support import random_model

    from codegen_lsp.completion import stopping
    from codegen_lsp.engine.api import GenerateRequest
    from codegen_lsp.engine.local import CodeGenEngine

    windows: list[int] = []
    real = stopping.first_stop

    def counting(text: str, sequences):  # the only place the check reads earlier text
        windows.append(len(text))
        return real(text, sequences)

    monkeypatch.setattr(stopping, "first_stop", counting)
    model = random_model(dict(n_layer=1, n_embd=32, n_head=4, rotary_dim=4, n_positions=2048))
    engine = CodeGenEngine(model, tokenizer, cache_memory_mb=32)
    rule = StopRule(MULTI, min_indent=0, sequences=("\n\n\n\n\n\n\n\n",))
    request = GenerateRequest("long", [50256] * 8, 2000, stop=rule, heal=False, ignore_eos=True)
    result = engine.generate(request, threading.Event())
    (cand,) = result.candidates
    assert len(cand.token_ids) == 2000 and cand.finish_reason == "length"
    longest_piece = max(len(engine.decode([t])) for t in set(cand.token_ids))
    assert len(windows) >= 1500  # one check per step that added text
    assert max(windows) <= longest_piece + len(rule.sequences[0]) - 1
