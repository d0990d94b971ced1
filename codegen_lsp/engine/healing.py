"""Token healing: when a prompt ends inside a token, back it off and constrain what follows.

A cursor in the middle of a word (``pri|``) leaves a prompt whose last token is a fragment
(``pri``) that the model rarely saw before ``nt(``: it was trained on ``print``. Healing
removes that last token from the prompt and lets the first generated token(s) be anything
whose bytes continue the removed bytes: a token starting with them (``print``), or a shorter
token that is a prefix of them, after which the rest of the removed bytes still constrain
the next step. The candidate's text is what comes after the original prompt text, so the
removed bytes are cut from its front.

:class:`TokenPrefixIndex` answers "which ids start with these bytes" with a binary search
over the tokenizer's byte strings sorted once at load.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass

import torch
from torch import Tensor

from codegen_lsp.codegen.tokenizer import CodeGenTokenizer


class TokenPrefixIndex:
    """Ids sorted by their bytes: the ids starting with a byte string form one range."""

    def __init__(self, token_bytes: list[bytes]) -> None:
        self.vocab_size = len(token_bytes)
        pairs = sorted((b, i) for i, b in enumerate(token_bytes) if b)
        self._bytes = [b for b, _ in pairs]
        self._ids = torch.tensor([i for _, i in pairs], dtype=torch.long)
        self._exact: dict[bytes, list[int]] = {}
        for b, i in pairs:
            self._exact.setdefault(b, []).append(i)
        self._masks: dict[bytes, Tensor] = {}

    def starting_with(self, prefix: bytes) -> Tensor:
        """Ids whose bytes start with ``prefix`` (``prefix`` itself included)."""
        span = self._range(prefix)
        return self._ids[span.start : span.stop]

    def prefixes_of(self, data: bytes) -> list[int]:
        """Ids whose bytes are a non-empty proper prefix of ``data``."""
        return [i for n in range(1, len(data)) for i in self._exact.get(data[:n], [])]

    def extendable(self, data: bytes) -> bool:
        """True when some token's bytes start with ``data`` and are longer."""
        return bool(data) and any(len(self._bytes[j]) > len(data) for j in self._range(data))

    def _range(self, prefix: bytes) -> range:
        lo = bisect.bisect_left(self._bytes, prefix)
        hi = lo
        while hi < len(self._bytes) and self._bytes[hi].startswith(prefix):
            hi += 1
        return range(lo, hi)

    def allowed_mask(self, remaining: bytes) -> Tensor:
        """Bool mask ``[vocab_size]`` of ids that may come next while ``remaining`` must be
        produced: ids starting with it, or a proper prefix of it."""
        mask = self._masks.get(remaining)
        if mask is None:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool)
            mask[self.starting_with(remaining)] = True
            mask[self.prefixes_of(remaining)] = True
            if len(self._masks) > 256:
                self._masks.clear()
            self._masks[remaining] = mask
        return mask


@dataclass
class Healed:
    """A prompt with its last token backed off: ``ids`` to prefill, ``removed`` bytes the
    continuation must start with."""

    ids: list[int]
    removed: bytes = b""


def heal(prompt: list[int], token_bytes: list[bytes], index: TokenPrefixIndex) -> Healed:
    """Back off the prompt's last token when a longer token could replace it."""
    if len(prompt) < 2:
        return Healed(list(prompt))
    last = token_bytes[prompt[-1]] if prompt[-1] < len(token_bytes) else b""
    if not index.extendable(last):
        return Healed(list(prompt))
    return Healed(list(prompt[:-1]), last)


def advance(remaining: bytes, token: bytes) -> bytes:
    """What is left to produce after ``token`` was generated under constraint ``remaining``."""
    return remaining[len(token) :] if remaining.startswith(token) else b""


_INDEXES: weakref.WeakKeyDictionary[CodeGenTokenizer, TokenPrefixIndex] = (
    weakref.WeakKeyDictionary()
)


def prefix_index(tokenizer: CodeGenTokenizer) -> TokenPrefixIndex:
    """The token prefix index of ``tokenizer`` (built once per tokenizer)."""
    index = _INDEXES.get(tokenizer)
    if index is None:
        index = _INDEXES[tokenizer] = TokenPrefixIndex(tokenizer.token_bytes())
    return index
