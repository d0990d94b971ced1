"""Post-processing filters (postprocess.py): each filter alone, then the pipeline."""

from __future__ import annotations

from codegen_lsp.completion.postprocess import (
    Around,
    cut_loops,
    drop_blank,
    drop_repeat_of_after,
    drop_suffix_overlap,
    postprocess,
    trim_trailing_whitespace,
)


def around_of(marked_cursor) -> Around:
    return Around(marked_cursor.after, marked_cursor.text_after(2000))


def test_trim_trailing_whitespace() -> None:
    assert trim_trailing_whitespace("a  \n  b\t\n\n", Around()) == "a\n  b"
    assert trim_trailing_whitespace("\n    x = 1   ", Around()) == "\n    x = 1"


def test_drop_suffix_overlap(marked) -> None:
    around = around_of(marked("print(█)"))
    assert drop_suffix_overlap('"hi")', around) == '"hi"'
    assert drop_suffix_overlap(")", around) == ")"  # all of it: left to drop_repeat_of_after
    assert drop_suffix_overlap('"hi"', around) == '"hi"'


def test_drop_blank() -> None:
    assert drop_blank("  \n ", Around()) is None
    assert drop_blank(" x", Around()) == " x"


def test_drop_repeat_of_after(marked) -> None:
    around = around_of(marked("def f():\n    █\n    return 1\n"))
    assert drop_repeat_of_after("return 1", around) is None
    assert drop_repeat_of_after("x = 2", around) == "x = 2"
    around = around_of(marked("foo(█bar)"))
    assert drop_repeat_of_after("bar", around) is None
    assert drop_repeat_of_after("ba", around) is None


def test_pipeline_dedupes_and_drops(marked) -> None:
    around = around_of(marked("x = f(█)"))
    out = postprocess(["1)  ", "1)", ")", "   ", "2, 3)"], around)
    assert out == ["1", "2, 3"]


def test_cut_loops_keeps_one_copy_of_a_repeated_block() -> None:
    loop = "None:\n    x = x\nif x is None:\n    x = x\nif x is None:\n    x = x\nif x is"
    assert cut_loops(loop, Around()) == "None:\n    x = x"  # cursor was after "if x is "
    three = "\n    total += 1\n    total += 1\n    total += 1\n    total +="
    assert cut_loops(three, Around()) == "\n    total += 1"
    pairs = "\n    a.append(1)\n    b.append(2)\n    a.append(1)\n    b.append(2)"
    assert cut_loops(pairs, Around()) == "\n    a.append(1)\n    b.append(2)"


def test_cut_loops_leaves_real_code_alone() -> None:
    for text in (
        "\n    next(it)\n    next(it)\n    return it",  # one line twice: often real
        "\n    f(\n        1,\n    )\n    )\n    )",  # short lines repeat legitimately
        "\n    self.assertEqual(a, 1)\n    self.assertEqual(b, 2)\n    self.assertEqual(a, 1)",
        "\n    x = 1\n    y = 2\n    x = 1\n    y = ",  # second copy incomplete
    ):
        assert cut_loops(text, Around()) == text


def test_pipeline_cuts_a_greedy_loop() -> None:
    looping = "x:\n        pass\n    if x:\n        pass\n    if x:\n        pass\n    if"
    assert postprocess([looping], Around()) == ["x:\n        pass"]
