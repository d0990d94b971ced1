"""Type-ahead (typeahead.py): typing through a suggestion answers without the model."""

from __future__ import annotations

from codegen_lsp.completion.typeahead import ANCHOR_CHARS, Entry, TypeAhead, remaining

BEFORE = "import os\n\ndef main():\n    path = os."


def test_same_position_returns_whole_suggestion() -> None:
    entry = Entry(BEFORE, "", ("getcwd()",))
    assert remaining(entry, BEFORE, "") == ["getcwd()"]


def test_typed_prefix_returns_the_rest() -> None:
    entry = Entry(BEFORE, "", ("getcwd()", "path.join(a, b)"))
    assert remaining(entry, BEFORE + "get", "") == ["cwd()"]
    assert remaining(entry, BEFORE + "pa", "") == ["th.join(a, b)"]


def test_other_text_or_all_of_it_typed_misses() -> None:
    entry = Entry(BEFORE, "", ("getcwd()",))
    assert remaining(entry, BEFORE + "gex", "") == []
    assert remaining(entry, BEFORE + "getcwd()", "") == []
    assert remaining(entry, BEFORE + "get", ")") == []  # text after the cursor changed


def test_typing_across_lines() -> None:
    entry = Entry(BEFORE, "", ("getcwd()\n    print(path)",))
    assert remaining(entry, BEFORE + "getcwd()\n    pr", "") == ["int(path)"]


def test_short_anchor_must_match_whole_text_before() -> None:
    entry = Entry("de", "", ("f main():",))
    assert remaining(entry, "def", "") == [" main():"]
    # the same two characters somewhere else in a longer document are not the anchor
    assert remaining(entry, "x = 1\nde", "") == []


def test_cache_forwards_while_typing_and_forgets() -> None:
    cache = TypeAhead()
    cache.remember("doc", BEFORE, "", ["getcwd()"])
    for typed in ["", "g", "ge", "get", "getc"]:
        assert cache.lookup("doc", BEFORE + typed, "") == ["getcwd()"[len(typed) :]]
    assert cache.lookup("doc", BEFORE + "getcwd()", "") == []
    assert cache.lookup("other", BEFORE, "") == []
    cache.forget("doc")
    assert cache.lookup("doc", BEFORE, "") == []


def test_cache_keeps_newest_entries() -> None:
    cache = TypeAhead(per_key=2)
    long_prefix = "#" * ANCHOR_CHARS
    for i in range(3):
        cache.remember("doc", f"{long_prefix}{i}:", "", [f"s{i}"])
    assert cache.lookup("doc", f"{long_prefix}2:", "") == ["s2"]
    assert cache.lookup("doc", f"{long_prefix}1:", "") == ["s1"]
    assert cache.lookup("doc", f"{long_prefix}0:", "") == []
