"""Per-step choice of the next token for every candidate row, and the stop rules.

:class:`DecodeState` tracks each row of a request: the ids generated so far, the healed
bytes it still has to produce, its continuation bytes, and why it finished (``eos``,
``stop``, ``length``, ``cancelled``, ``time``). :func:`sample_step` masks ids the tokenizer
cannot decode and, while healing, ids that do not continue the removed bytes, then samples
with :func:`codegen_lsp.codegen.generation.sample` (greedy at temperature 0, else seeded
temperature / top-k / top-p).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

import torch
from torch import Tensor

from codegen_lsp.codegen.generation import SamplingParams, sample
from codegen_lsp.engine.api import Candidate, GenerateRequest, StopFn
from codegen_lsp.engine.healing import TokenPrefixIndex, advance


def valid_utf8_prefix(data: bytes) -> str:
    """Decode ``data``, leaving out an incomplete UTF-8 sequence at its end."""
    return codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=False)


@dataclass
class Row:
    """One candidate being generated."""

    remaining: bytes  # healed bytes still to produce
    ids: list[int] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)  # bytes of all generated ids
    finish: str | None = None
    cut: int | None = None  # where the stop callback cut the text
    text: str = ""


@dataclass
class DecodeState:
    """The rows of one request and the rules that end them."""

    rows: list[Row]
    max_new: int
    removed: bytes
    eos_id: int
    params: SamplingParams
    seed: int | None
    stop: StopFn | None
    ignore_eos: bool = False

    @classmethod
    def start(cls, req: GenerateRequest, max_new: int, removed: bytes, eos_id: int) -> DecodeState:
        """Fresh rows for ``req`` (``removed``: healed bytes every row must produce first)."""
        params = SamplingParams(req.temperature, req.top_p, req.top_k)
        rows = [Row(remaining=removed) for _ in range(req.n)]
        return cls(rows, max_new, removed, eos_id, params, req.seed, req.stop, req.ignore_eos)

    def finish_all(self, reason: str) -> None:
        """End every row that is still going."""
        for row in self.rows:
            if row.finish is None:
                row.finish = reason

    def done(self) -> bool:
        """True when every row has finished."""
        return all(row.finish is not None for row in self.rows)

    def candidates(self, token_bytes: list[bytes]) -> list[Candidate]:
        """The rows as candidates: text after the original prompt, ids, finish reason."""
        out = []
        for row in self.rows:
            text = row.text if row.cut is None else row.text[: row.cut]
            out.append(
                Candidate(text=text, token_ids=list(row.ids), finish_reason=row.finish or "length")
            )
        return out

    def accept(self, row: Row, token: int, token_bytes: list[bytes]) -> None:
        """Add ``token`` to ``row`` and apply eos, the stop callback and the length limit."""
        if token == self.eos_id:
            row.finish = "eos"
            return
        piece = token_bytes[token]
        row.ids.append(token)
        row.data.extend(piece)
        row.remaining = advance(row.remaining, piece)
        if not row.remaining and len(row.data) >= len(self.removed):
            row.text = valid_utf8_prefix(bytes(row.data[len(self.removed) :]))
            if self.stop is not None:
                cut = self.stop(row.text)
                if cut is not None:
                    row.cut = max(0, min(cut, len(row.text)))
                    row.finish = "stop"
                    return
        if len(row.ids) >= self.max_new:
            row.finish = "length"


def sample_step(
    state: DecodeState,
    logits: Tensor,
    vocab_limit: int,
    index: TokenPrefixIndex,
    token_bytes: list[bytes],
    generator: torch.Generator | None,
) -> list[int]:
    """Choose the next id of every row from ``logits`` [rows, V]; returns ids to feed back."""
    logits = logits.float()  # [rows, V], a fresh tensor: masked in place
    logits[:, vocab_limit:] = float("-inf")
    if state.ignore_eos:
        logits[:, state.eos_id] = float("-inf")
    for r, row in enumerate(state.rows):
        if row.remaining and row.finish is None:
            allowed = index.allowed_mask(row.remaining)  # [vocab_limit]
            logits[r, :vocab_limit].masked_fill_(~allowed, float("-inf"))
    next_ids = sample(logits, state.params, generator).tolist()
    for row, token in zip(state.rows, next_ids, strict=True):
        if row.finish is None:
            state.accept(row, token, token_bytes)
    return [int(t) for t in next_ids]
