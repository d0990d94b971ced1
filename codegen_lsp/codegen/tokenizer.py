"""CodeGen's tokenizer on the `tokenizers` library: encode, exact decode, token bytes.

CodeGen uses GPT-2's byte-level BPE (50257 ids; ``<|endoftext|>`` = 50256 is bos, eos and
unk; no pad) plus 38 non-special whitespace tokens matched before BPE, longest first:
runs of 31..2 spaces at ids 50257..50286 and runs of 9..2 tabs at ids 50287..50294.
That makes 50295 ids the tokenizer can decode; the model's embedding has more rows
(51200), and the engine must never sample an id at or above :attr:`vocab_size`.

A checkpoint directory is read the way the published Salesforce checkpoints ship it:
``tokenizer.json`` if present, otherwise ``vocab.json`` + ``merges.txt`` (+
``added_tokens.json``, ``special_tokens_map.json``). Any byte-level BPE ``tokenizer.json``
trained with `tokenizers` works too, provided it has ``<|endoftext|>`` and leaves the text
alone (no normalizer, no prefix space), so that decoding gives back the exact text.

Reference for the behaviour: transformers' ``CodeGenTokenizer`` (test-only; never imported
here), whose ids and ``truncate_before_pattern`` results the tests compare against.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE

__all__ = ["CodeGenTokenizer", "TokenizerError", "truncate_before_pattern"]

EOS_TOKEN = "<|endoftext|>"
FIM_TOKENS = ("<mask_1>", "<sep>", "<eom>")  # CodeGen2's infill format (its model card)
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


class TokenizerError(ValueError):
    """A tokenizer file is missing or unusable, or an id is outside the vocabulary."""


def _byte_alphabet() -> dict[str, int]:
    """GPT-2's stand-in character for each byte, mapped back to the byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = {b: chr(b) for b in printable}
    others = (b for b in range(256) if b not in chars)
    chars.update({b: chr(256 + n) for n, b in enumerate(others)})
    return {char: b for b, char in chars.items()}


_CHAR_TO_BYTE = _byte_alphabet()


def _raw_bytes(token: str) -> bytes:
    """The bytes `tokenizers`' ByteLevel decoder produces for one token string.

    A token made only of byte stand-in characters is mapped back byte by byte; any
    other token (an added token such as a run of spaces) stands for its own UTF-8.
    """
    try:
        return bytes(_CHAR_TO_BYTE[char] for char in token)
    except KeyError:
        return token.encode("utf-8")


def truncate_before_pattern(text: str, patterns: Sequence[str]) -> str:
    """Cut ``text`` the way CodeGen's ``decode(..., truncate_before_pattern=...)`` does.

    First the text is cut before a second line starting with ``print``, then before a
    second line starting with ``def``; then before the earliest match of any of
    ``patterns`` (regular expressions, compiled with ``re.MULTILINE``).
    """
    for line_start in ("^print", "^def"):
        starts = [match.start() for match in re.finditer(line_start, text, re.MULTILINE)]
        if len(starts) > 1:
            text = text[: starts[1]]
    found = [re.compile(pattern, re.MULTILINE).search(text) for pattern in patterns]
    cuts = [match.start() for match in found if match is not None]
    return text[: min(cuts)] if cuts else text


class CodeGenTokenizer:
    """Byte-level BPE tokenizer with CodeGen's ids and exact, unmodified decoding."""

    eos_id: int
    bos_id: int
    vocab_size: int
    special_ids: frozenset[int]

    def __init__(self, tokenizer: Tokenizer, source: str) -> None:
        """Wrap a loaded ``tokenizers.Tokenizer``; ``source`` names it in error messages."""
        _check_exact(tokenizer, source)
        eos = tokenizer.token_to_id(EOS_TOKEN)
        if eos is None:
            raise TokenizerError(f"{source}: the vocabulary has no {EOS_TOKEN} token")
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self._tokenizer = tokenizer
        self._source = source
        self.eos_id = eos
        self.bos_id = eos
        self.vocab_size = max(vocab.values()) + 1
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, token in added.items() if token.special)
        self._token_bytes: list[bytes] | None = None

    def __repr__(self) -> str:
        return f"CodeGenTokenizer({self._source!r}, vocab_size={self.vocab_size})"

    def fim_ids(self) -> tuple[int, int, int] | None:
        """(``<mask_1>``, ``<sep>``, ``<eom>``) ids when the tokenizer has CodeGen2's infill
        tokens, else None (CodeGen1 tokenizers have none)."""
        ids = tuple(self._tokenizer.token_to_id(t) for t in FIM_TOKENS)
        return None if any(i is None for i in ids) else ids  # type: ignore[return-value]

    @classmethod
    def from_file(cls, tokenizer_json: str | Path) -> CodeGenTokenizer:
        """Load a `tokenizers` ``tokenizer.json`` file."""
        path = Path(tokenizer_json)
        if not path.is_file():
            raise TokenizerError(f"{path}: no such tokenizer file")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for bad files
            raise TokenizerError(f"{path}: not a valid tokenizer.json ({error})") from error
        return cls(tokenizer, str(path))

    @classmethod
    def from_dir(cls, path: str | Path) -> CodeGenTokenizer:
        """Load from a checkpoint directory: tokenizer.json, else vocab.json + merges.txt."""
        directory = Path(path)
        if not directory.is_dir():
            raise TokenizerError(f"{directory}: no such tokenizer directory")
        if (directory / "tokenizer.json").is_file():
            return cls.from_file(directory / "tokenizer.json")
        vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
        missing = [p.name for p in (vocab_path, merges_path) if not p.is_file()]
        if missing:
            raise TokenizerError(
                f"{directory}: no tokenizer.json, and no {' or '.join(missing)} to build one from"
            )
        vocab = _read_vocab(vocab_path)
        merges = _read_merges(merges_path)
        try:
            tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False))
        except Exception as error:  # tokenizers rejects merges naming unknown tokens
            raise TokenizerError(
                f"{merges_path}: does not fit {vocab_path.name} ({error})"
            ) from error
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        specials = _read_special_tokens(directory)
        tokenizer.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in specials]
        )
        for token, token_id, special in _read_added_tokens(directory):
            if special or token in specials:
                tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            else:
                tokenizer.add_tokens([AddedToken(token, special=False, normalized=True)])
            if tokenizer.token_to_id(token) != token_id:
                raise TokenizerError(
                    f"{directory}: added token {token!r} should have id {token_id} but got "
                    f"{tokenizer.token_to_id(token)} (ids must follow the vocabulary without gaps)"
                )
        return cls(tokenizer, str(directory))

    def encode(self, text: str) -> list[int]:
        """Token ids for ``text``; no bos/eos is added (``<|endoftext|>`` in text is eos)."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def decode(
        self,
        ids: Sequence[int],
        truncate_before_pattern: Sequence[str] | None = None,
        *,
        skip_special_tokens: bool = False,
    ) -> str:
        """The exact text of ``ids``; optionally cut with :func:`truncate_before_pattern`."""
        ids = list(ids)
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise TokenizerError(
                f"token id {bad} is outside the vocabulary 0..{self.vocab_size - 1}"
            )
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        if truncate_before_pattern:
            text = _truncate(text, truncate_before_pattern)
        return text

    def token_bytes(self) -> list[bytes]:
        """Raw bytes of every id below ``vocab_size``; special tokens and unused ids give b""."""
        if self._token_bytes is None:
            table = [b""] * self.vocab_size
            for token, token_id in self._tokenizer.get_vocab(with_added_tokens=True).items():
                if token_id not in self.special_ids:
                    table[token_id] = _raw_bytes(token)
            self._token_bytes = table
        return list(self._token_bytes)


_truncate = truncate_before_pattern  # `decode` has a parameter of the same name


def _check_exact(tokenizer: Tokenizer, source: str) -> None:
    """Refuse tokenizers whose decode would not give back the exact input text."""
    if not isinstance(tokenizer.model, BPE):
        raise TokenizerError(f"{source}: the model is not BPE")
    if not isinstance(tokenizer.decoder, decoders.ByteLevel):
        raise TokenizerError(f"{source}: the decoder is not ByteLevel (byte-level BPE expected)")
    normalizer = _state(tokenizer.normalizer)
    if normalizer and normalizer.get("normalizers") != []:
        raise TokenizerError(
            f"{source}: has a normalizer, so decoding would not give back the text"
        )
    for part in _walk(_state(tokenizer.pre_tokenizer)):
        if part.get("type") == "ByteLevel" and part.get("add_prefix_space"):
            raise TokenizerError(
                f"{source}: the ByteLevel pre-tokenizer has add_prefix_space=true, which adds a "
                "space in front of the text; CodeGen tokenizers use add_prefix_space=false"
            )


def _state(component: Any) -> dict[str, Any] | None:
    """The JSON settings of a tokenizer component (normalizer, pre-tokenizer), or None."""
    return None if component is None else json.loads(component.__getstate__())


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every dict inside a JSON value (to look into Sequence pre-tokenizers)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _load_json(path: Path) -> Any:
    """Parse a JSON file, turning any failure into a TokenizerError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerError(f"{path}: cannot read JSON ({error})") from error


def _read_vocab(path: Path) -> dict[str, int]:
    """vocab.json: a token -> id object."""
    vocab = _load_json(path)
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError(f"{path}: expected a non-empty JSON object of token -> id")
    if not all(isinstance(i, int) and i >= 0 for i in vocab.values()):
        raise TokenizerError(f"{path}: every id must be a non-negative integer")
    return vocab


def _read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: an optional ``#version`` line, then one ``left right`` pair a line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TokenizerError(f"{path}: cannot read merges ({error})") from error
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=2):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise TokenizerError(f"{path}:{number}: expected 'left right', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _token_text(value: Any, path: Path) -> str:
    """A special token entry: a string or an AddedToken-like dict with "content"."""
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    if isinstance(value, str):
        return value
    raise TokenizerError(f"{path}: unexpected special token entry {value!r}")


def _read_special_tokens(directory: Path) -> list[str]:
    """``<|endoftext|>`` plus the special tokens named in special_tokens_map.json."""
    specials = [EOS_TOKEN]
    path = directory / "special_tokens_map.json"
    if path.is_file():
        table = _load_json(path)
        if not isinstance(table, dict):
            raise TokenizerError(f"{path}: expected a JSON object")
        for key, value in table.items():
            values = value if key == "additional_special_tokens" else [value]
            if key in _SPECIAL_KEYS or key == "additional_special_tokens":
                specials += [_token_text(v, path) for v in values if v is not None]
    return list(dict.fromkeys(specials))


def _read_added_tokens(directory: Path) -> list[tuple[str, int, bool]]:
    """(token, id, special) from added_tokens.json and tokenizer_config.json, by id."""
    found: dict[int, tuple[str, bool]] = {}
    path = directory / "added_tokens.json"
    if path.is_file():
        table = _load_json(path)
        if not isinstance(table, dict) or not all(isinstance(i, int) for i in table.values()):
            raise TokenizerError(f"{path}: expected a JSON object of token -> id")
        found.update({token_id: (token, False) for token, token_id in table.items()})
    path = directory / "tokenizer_config.json"
    if path.is_file():
        config = _load_json(path)
        decoder = config.get("added_tokens_decoder", {}) if isinstance(config, dict) else {}
        for key, entry in decoder.items():
            if not key.isdigit() or not isinstance(entry, dict):
                raise TokenizerError(f"{path}: bad added_tokens_decoder entry {key!r}")
            found[int(key)] = (_token_text(entry, path), bool(entry.get("special", False)))
    return [(token, token_id, special) for token_id, (token, special) in sorted(found.items())]
