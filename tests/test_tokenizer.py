"""Tests for codegen_lsp.codegen.tokenizer and tools/build_codegen_tokenizer.py.

transformers' CodeGen tokenizer is the reference for ids and truncate_before_pattern; it is
loaded from the committed fixture (the builder's output), both as it is and as the legacy
vocab.json + merges.txt + added_tokens.json layout that published checkpoints ship.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

from codegen_lsp.codegen.tokenizer import CodeGenTokenizer, TokenizerError, truncate_before_pattern

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "codegen-tokenizer"
BUILDER = REPO / "tools" / "build_codegen_tokenizer.py"
LEGACY_FILES = (
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)
CORPUS_BYTES = 2_500_000  # plain stdlib text; the tab and space variants add ~0.6 MB
PATTERNS = ["^#", re.escape("<|endoftext|>"), "^'''", '^"""', "\n\n\n"]

EDGE_CASES = [
    "",
    "x",
    "Hello world",
    " Hello",
    "emoji 🙂👍🏽 👨‍👩‍👧 flags 🇫🇷🇯🇵 done",
    "CJK: 日本語のテキスト, 中文文本, 한국어 텍스트",
    "combining: e\u0301 a\u0308 \u00a0nbsp\u200bzwsp \x00nul \x7fdel",
    "windows\r\nline\r\n\r\n  endings\r\n\tx\r\n",
    "a" + " " * 40 + "b",
    " " * 40,
    " " * 31 + "|" + " " * 32 + "|" + " " * 62 + "|" + " " * 63,
    "\t" * 20 + "x\n" + "\t" * 9 + "y\n" + "\t" * 10 + "z",
    "mixed\n\t  \t    x\n  \t\ty\n \t \t \tz\n\t \n",
    "trailing spaces   \n\t\t\n   ",
    "<|endoftext|>",
    "before<|endoftext|>after <|endoftext|> <|endoftext|><|endoftext|>",
    "<|endoftext|\n<|endoftext",
    "def f(x):\n    return x  # comment\n\n\n\nclass A:\n\tpass\n",
    "Ġ Ċ ĉ ĠĠ Ã© byte-alphabet characters as text",
]

TRUNCATE_CASES = [
    "    return x\n\ndef g():\n    pass\n",
    "    return x\n# comment\nmore\n",
    "    x = 1\n\n\n\ny = 2\n",
    "    x = 1\n'''doc'''\n",
    '    x = 1\n"""doc"""\n',
    "    x = 1<|endoftext|>junk\n",
    "print(1)\nprint(2)\nprint(3)\n",
    "def a():\n    pass\ndef b():\n    pass\n# tail\n",
    "print(1)\ndef a():\n    pass\nprint(2)\ndef b():\n",
    "    #  not at line start\n    y = '''x'''\n",
    "x = 1\r\n#c\r\n",
    "no patterns here at all",
    "printer = 1\nprintf()\ndefault = 2\ndefine = 3\n",
    "",
]


def _stdlib_texts() -> list[str]:
    """A deterministic ~2.5 MB sample of the stdlib's UTF-8 .py files."""
    root = Path(sysconfig.get_paths()["stdlib"])
    paths: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        skip = {"site-packages", "dist-packages", "__pycache__"}
        subdirs[:] = sorted(d for d in subdirs if d not in skip)
        paths += [Path(directory, f) for f in sorted(files) if f.endswith(".py")]
    step = max(1, sum(p.stat().st_size for p in paths) // CORPUS_BYTES)
    texts = []
    for path in paths[::step]:
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return texts


def _without_eos(text: str) -> bytes:
    """The bytes token_bytes() gives for ``text``: special tokens stand for no text."""
    return text.replace("<|endoftext|>", "").encode("utf-8")


def _reindent(text: str, unit: str) -> str:
    """Replace each 4-space indentation level with ``unit``."""
    return re.sub(r"^(?:    )+", lambda m: unit * (len(m.group()) // 4), text, flags=re.M)


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = _stdlib_texts()
    assert sum(map(len, texts)) > 2_000_000
    tab_heavy = [_reindent(t, "\t") for t in texts[::8]]
    space_heavy = [_reindent(t, " " * 16) for t in texts[3::16]]
    makefile = Path(sysconfig.get_config_var("LIBPL") or "/nonexistent", "Makefile")
    extra = [makefile.read_text("utf-8", "replace")] if makefile.is_file() else []
    return texts + tab_heavy + space_heavy + extra + EDGE_CASES


@pytest.fixture(scope="module")
def ours() -> CodeGenTokenizer:
    return CodeGenTokenizer.from_dir(FIXTURE)


@pytest.fixture(scope="module")
def legacy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture without tokenizer.json: the layout published checkpoints ship."""
    directory = tmp_path_factory.mktemp("codegen-legacy")
    for name in LEGACY_FILES:
        shutil.copy(FIXTURE / name, directory / name)
    return directory


@pytest.fixture(scope="module")
def ours_ids(ours: CodeGenTokenizer, corpus: list[str]) -> list[list[int]]:
    return [ours.encode(text) for text in corpus]


def _transformers_tokenizer(directory: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(directory), model_max_length=10**9)


@pytest.fixture(scope="module")
def reference(legacy_dir: Path) -> Any:
    """transformers' CodeGen tokenizer built from vocab.json + merges.txt + added_tokens.json."""
    return _transformers_tokenizer(legacy_dir)


def test_sizes_and_special_ids(ours: CodeGenTokenizer) -> None:
    assert ours.vocab_size == 50295
    assert ours.eos_id == ours.bos_id == 50256
    assert ours.special_ids == {50256}
    for n in range(2, 32):
        assert ours.encode(" " * n) == [50288 - n]
    for n in range(2, 10):
        assert ours.encode("\t" * n) == [50296 - n]


def test_known_gpt2_ids(ours: CodeGenTokenizer) -> None:
    assert ours.encode("hello") == [31373]
    assert ours.encode(" world") == [995]
    assert ours.encode("Hello world") == [15496, 995]
    assert ours.encode(" Hello") == [18435]
    assert ours.encode(" the") == [262]
    assert ours.encode("The") == [464]
    assert ours.encode("\n") == [198]
    assert ours.encode(" ") == [220]
    assert ours.encode(",") == [11] and ours.encode(".") == [13]
    assert ours.encode("<|endoftext|>") == [50256]
    merges = (FIXTURE / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[:5] == ["#version: 0.2", "Ġ t", "Ġ a", "h e", "i n"]
    assert len(merges) == 1 + 50000


def test_ids_match_transformers(
    reference: Any, ours_ids: list[list[int]], corpus: list[str]
) -> None:
    assert sum(map(len, corpus)) > 3_000_000
    expected = reference(corpus, add_special_tokens=False)["input_ids"]
    for text, got, want in zip(corpus, ours_ids, expected, strict=True):
        assert got == want, f"ids differ for text starting {text[:80]!r}"


def test_fixture_dir_matches_transformers(ours: CodeGenTokenizer, corpus: list[str]) -> None:
    reference = _transformers_tokenizer(FIXTURE)
    assert len(reference) == ours.vocab_size
    assert reference.eos_token_id == ours.eos_id
    sample = corpus[::5] + EDGE_CASES
    expected = reference(sample, add_special_tokens=False)["input_ids"]
    assert [ours.encode(text) for text in sample] == expected


def test_legacy_files_equal_tokenizer_json(
    legacy_dir: Path, ours: CodeGenTokenizer, ours_ids: list[list[int]], corpus: list[str]
) -> None:
    legacy = CodeGenTokenizer.from_dir(legacy_dir)
    assert (legacy.vocab_size, legacy.eos_id, legacy.special_ids) == (
        ours.vocab_size,
        ours.eos_id,
        ours.special_ids,
    )
    assert legacy.token_bytes() == ours.token_bytes()
    assert [legacy.encode(text) for text in corpus] == ours_ids


def test_exact_round_trip(
    ours: CodeGenTokenizer, ours_ids: list[list[int]], corpus: list[str]
) -> None:
    table = ours.token_bytes()
    for text, ids in zip(corpus, ours_ids, strict=True):
        assert ours.decode(ids) == text
        assert b"".join(table[i] for i in ids) == _without_eos(text)


def test_decode_matches_transformers(reference: Any, ours: CodeGenTokenizer) -> None:
    for text in EDGE_CASES:
        ids = ours.encode(text)
        assert ours.decode(ids) == reference.decode(ids) == text
        skipped = reference.decode(ids, skip_special_tokens=True)
        assert ours.decode(ids, skip_special_tokens=True) == skipped


def test_token_bytes(ours: CodeGenTokenizer) -> None:
    table = ours.token_bytes()
    assert len(table) == ours.vocab_size
    assert table[50256] == b""  # special tokens stand for no text
    assert table[50257] == b" " * 31 and table[50286] == b"  "
    assert table[50287] == b"\t" * 9 and table[50294] == b"\t\t"
    assert table[31373] == b"hello" and table[995] == b" world"
    assert ours.encode("🙂") == [8582, 25081]  # one character, split inside its UTF-8
    assert table[8582] + table[25081] == "🙂".encode()
    assert table[ours.encode("    x")[0]] == b"    "  # GPT-2 has space runs too: same bytes
    table[0] = b"changed"
    assert ours.token_bytes()[0] == b"!"  # callers get a copy


@pytest.mark.parametrize("text", TRUNCATE_CASES)
def test_truncate_before_pattern_matches_transformers(
    reference: Any,
    ours: CodeGenTokenizer,
    text: str,
) -> None:
    ids = ours.encode(text)
    want = reference.decode(ids, truncate_before_pattern=PATTERNS)
    assert ours.decode(ids, truncate_before_pattern=PATTERNS) == want
    assert truncate_before_pattern(text, PATTERNS) == want


def test_truncate_before_pattern_on_real_code(
    reference: Any,
    ours: CodeGenTokenizer,
    corpus: list[str],
) -> None:
    for text in corpus[:60]:
        for start in (0, len(text) // 3):
            ids = ours.encode(text[start : start + 3000])
            want = reference.decode(ids, truncate_before_pattern=PATTERNS)
            assert ours.decode(ids, truncate_before_pattern=PATTERNS) == want


def test_truncate_semantics() -> None:
    assert truncate_before_pattern("print(1)\nprint(2)\n", []) == "print(1)\n"
    assert truncate_before_pattern("a\n#b\n\n\n", PATTERNS) == "a\n"
    assert truncate_before_pattern("a\n\n\n#b", PATTERNS) == "a"


def test_decode_rejects_ids_outside_vocabulary(ours: CodeGenTokenizer) -> None:
    for bad in (ours.vocab_size, 51199, -1):
        with pytest.raises(TokenizerError, match=str(bad)):
            ours.decode([15496, bad])
    assert ours.decode([]) == ""


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="no such tokenizer directory"):
        CodeGenTokenizer.from_dir(tmp_path / "absent")
    with pytest.raises(TokenizerError, match="vocab.json or merges.txt"):
        CodeGenTokenizer.from_dir(tmp_path)
    with pytest.raises(TokenizerError, match="no such tokenizer file"):
        CodeGenTokenizer.from_file(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": ', encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokenizer.json: not a valid tokenizer.json"):
        CodeGenTokenizer.from_dir(tmp_path)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "vocab.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="vocab.json: cannot read JSON"):
        CodeGenTokenizer.from_dir(tmp_path)
    (tmp_path / "vocab.json").write_text('{"a": 0, "b": 1, "ab": 2}', encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match=r"merges.txt:2: expected 'left right'"):
        CodeGenTokenizer.from_dir(tmp_path)
    (tmp_path / "merges.txt").write_text("a b\n", encoding="utf-8")
    (tmp_path / "added_tokens.json").write_text('{"  ": 5}', encoding="utf-8")
    with pytest.raises(TokenizerError, match="should have id 5"):
        CodeGenTokenizer.from_dir(tmp_path)


def _trained_tokenizer(texts: list[str], add_prefix_space: bool = False) -> Tokenizer:
    """A small byte-level BPE trained with `tokenizers`, like the project's default model's."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    runs = [" " * n for n in range(31, 1, -1)] + ["\t" * n for n in range(9, 1, -1)]
    tokenizer.add_tokens([AddedToken(run, normalized=True) for run in runs])
    return tokenizer


def test_other_byte_level_tokenizer(tmp_path: Path, corpus: list[str]) -> None:
    texts = corpus[:20]
    _trained_tokenizer(texts).save(str(tmp_path / "tokenizer.json"))
    small = CodeGenTokenizer.from_dir(tmp_path)
    assert small.eos_id == small.bos_id == 0
    assert small.vocab_size == 600 + 38
    assert small.encode("\t\t\t") == [small.vocab_size - 2]
    table = small.token_bytes()
    for text in texts[:5] + EDGE_CASES:
        ids = small.encode(text)
        assert small.decode(ids) == text
        assert b"".join(table[i] for i in ids) == _without_eos(text)


def test_rejects_tokenizers_that_change_the_text(tmp_path: Path, corpus: list[str]) -> None:
    path = tmp_path / "tokenizer.json"
    _trained_tokenizer(corpus[:3], add_prefix_space=True).save(str(path))
    with pytest.raises(TokenizerError, match="add_prefix_space"):
        CodeGenTokenizer.from_file(path)
    tokenizer = _trained_tokenizer(corpus[:3])
    tokenizer.decoder = decoders.BPEDecoder()
    tokenizer.save(str(path))
    with pytest.raises(TokenizerError, match="not ByteLevel"):
        CodeGenTokenizer.from_file(path)
    tokenizer = Tokenizer(models.BPE(vocab={"a": 0}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.save(str(path))
    with pytest.raises(TokenizerError, match="no <\\|endoftext\\|> token"):
        CodeGenTokenizer.from_file(path)


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_codegen_tokenizer", BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_builder_recovers_the_fixture_merges(ours: CodeGenTokenizer) -> None:
    builder = _builder()
    table = ours.token_bytes()
    ranks = {table[i]: i for i in range(ours.eos_id)}  # GPT-2's ids are its BPE ranks
    alphabet = builder.byte_alphabet()
    merges = [
        "".join(alphabet[b] for b in left) + " " + "".join(alphabet[b] for b in right)
        for left, right in builder.recover_merges(ranks)
    ]
    lines = (FIXTURE / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges == lines[1:]
    added = CodeGenTokenizer.from_dir(FIXTURE)
    assert {t: added.encode(t)[0] for t in builder.whitespace_tokens()} == (
        builder.whitespace_tokens()
    )


def test_builder_reproduces_fixture(tmp_path: Path) -> None:
    """Rebuild from the whisper sdist when one is at hand ($WHISPER_SDIST)."""
    source = os.environ.get("WHISPER_SDIST", "/tmp/whl/openai_whisper-20250625.tar.gz")
    if not Path(source).is_file():
        pytest.skip("openai-whisper sdist not available; set WHISPER_SDIST")
    assert _builder().main([str(tmp_path), "--tiktoken", source]) == 0
    for path in sorted(FIXTURE.iterdir()):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
