"""Per-step choice of the next token for every candidate row, and the rules that end a row.

:func:`sample` is greedy at temperature 0, else seeded temperature / top-k / top-p.
:class:`DecodeState` tracks each row of a request: its ids and log-probability, the healed
bytes it still has to produce, its text (decoded incrementally: each step decodes only the
new token's bytes) and the row's :class:`~codegen_lsp.engine.api.StopCheck`, fed only the
new text. :func:`sample_step` masks ids the tokenizer cannot decode and, while healing, ids
that do not continue the removed bytes, then samples and updates every row.
"""

from __future__ import annotations

import codecs
import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from codegen_lsp.engine.api import (
    MARGIN_CAP,
    Cancel,
    Candidate,
    GenerateRequest,
    LineFn,
    SamplingParams,
    StopCheck,
    TokenFn,
    generation_limit,
)
from codegen_lsp.engine.healing import TokenPrefixIndex, advance


def logits_to_probs(logits: Tensor, params: SamplingParams) -> Tensor:
    """Temperature, top-k and top-p applied to ``[B, V]`` logits; returns probabilities.
    Top-p keeps the most likely tokens up to mass ``top_p``, and always the first one (a top-p
    too small for float32, such as 1e-300, keeps that token alone)."""
    logits = logits / max(params.temperature, 1e-5)
    if params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass strictly above each token
        drop = before >= params.top_p  # a top_p below float32's smallest compares as 0 ...
        drop[..., 0] = False  # ... and the most likely token is kept whatever top_p is
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> Tensor:
    """Next token ids ``[B]`` from ``[B, V]`` float logits."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = logits_to_probs(logits.float(), params)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def fit_prompt(req: GenerateRequest, n_ctx: int, empty_id: int) -> tuple[list[int], int]:
    """The prompt and generation budget of ``req`` within ``n_ctx`` positions (an empty
    prompt is ``[empty_id]``). The budget gives way to the prompt, down to
    :func:`generation_limit`: a prompt that fits in the rest is kept whole; a longer one loses
    its oldest tokens. (It was the other way round: a budget of ``n_ctx - 1`` cut any prompt
    to its last token.)"""
    prompt = list(req.prompt) or [empty_id]
    room = max(n_ctx - len(prompt), generation_limit(n_ctx))
    max_new = min(req.max_new_tokens, room, n_ctx - 1)
    if len(prompt) + max_new > n_ctx:
        prompt = prompt[len(prompt) + max_new - n_ctx :]
    return prompt, max_new


def _utf8_decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


@dataclass
class Row:
    """One candidate being generated."""

    remaining: bytes  # healed bytes still to produce
    check: StopCheck | None = None
    ids: list[int] = field(default_factory=list)
    logprob: float = 0.0
    logprobs: list[float] = field(default_factory=list)  # of each id in ``ids``
    margins: list[float] = field(default_factory=list)  # of each id (see Candidate)
    entropies: list[float] = field(default_factory=list)  # of each id's distribution
    starts: list[int] = field(default_factory=list)  # text length before each id's piece
    chars: int = 0  # length of the text in ``pieces``
    pieces: list[str] = field(default_factory=list)  # text after the healed bytes
    decoder: codecs.IncrementalDecoder = field(default_factory=_utf8_decoder)
    finish: str | None = None
    cut: int | None = None  # where the stop check cut the text
    announced: bool = False  # its first line went to on_first_line

    def text(self) -> str:
        """The row's text, cut where its stop check said."""
        text = "".join(self.pieces)
        return text if self.cut is None else text[: max(0, min(self.cut, len(text)))]

    def candidate(self, text: str, finish: str, ids: list[int] | None = None) -> Candidate:
        """The row as a candidate of ``text`` (its text, or the head of it), with the
        per-token figures of the ids whose text starts within it (the ids after a stop
        rule's cut are left out)."""
        n = sum(start < len(text) for start in self.starts)  # starts never decrease
        return Candidate(
            text,
            list(self.ids) if ids is None else ids,
            finish,
            self.logprob if ids is None else sum(self.logprobs[:n]),
            self.logprobs[:n],
            self.margins[:n],
            self.entropies[:n],
            self.starts[:n],
        )


@dataclass
class DecodeState:
    """The rows of one request and the rules that end them."""

    rows: list[Row]
    max_new: int
    eos_id: int
    params: SamplingParams
    greedy_first: bool = False
    ignore_eos: bool = False
    on_token: TokenFn | None = None
    stop_ids: frozenset[int] = frozenset()  # end a row like eos (not part of its text)
    offset: int = 0  # index of rows[0] among the request's rows (a group decoded apart)
    on_first_line: LineFn | None = None

    def group(self, first: int, count: int) -> DecodeState:
        """The state of rows ``first .. first + count`` (the same Row objects)."""
        rows = self.rows[first : first + count]
        return dataclasses.replace(self, rows=rows, offset=self.offset + first)

    @classmethod
    def start(cls, req: GenerateRequest, max_new: int, removed: bytes, eos_id: int) -> DecodeState:
        """Fresh rows for ``req`` (``removed``: healed bytes every row must produce first)."""
        rows = [
            Row(remaining=removed, check=req.stop.start() if req.stop else None)
            for _ in range(req.n)
        ]
        return cls(
            rows,
            max_new,
            eos_id,
            req.sampling,
            req.greedy_first,
            req.ignore_eos,
            req.on_token,
            frozenset(req.stop_ids),
            on_first_line=req.on_first_line,
        )

    def end(self, row: Row, reason: str) -> None:
        """End ``row`` for ``reason``; the stop check gets its last word on the text."""
        row.finish = reason
        if reason != "stop" and row.check is not None:
            row.cut = row.check.finish()

    def finish_all(self, reason: str) -> None:
        """End every row that is still going."""
        for row in self.rows:
            if row.finish is None:
                self.end(row, reason)

    def done(self) -> bool:
        """True when every row has finished."""
        return all(row.finish is not None for row in self.rows)

    def candidates(self) -> list[Candidate]:
        """The rows as candidates: text after the original prompt, ids, finish reason."""
        return [row.candidate(row.text(), row.finish or "length") for row in self.rows]

    def accept(
        self,
        index: int,
        token: int,
        logprob: float,
        token_bytes: list[bytes],
        margin: float = math.nan,
        entropy: float = math.nan,
    ) -> None:
        """Add ``token`` to row ``index`` and apply eos, its stop check and the length limit
        (``margin`` and ``entropy``: see Candidate; NaN when the engine cannot tell)."""
        row = self.rows[index]
        if token == self.eos_id or token in self.stop_ids:
            self.end(row, "eos")
            return
        piece = token_bytes[token]
        row.ids.append(token)
        row.logprob += logprob
        row.logprobs.append(logprob)
        row.margins.append(margin)
        row.entropies.append(entropy)
        row.starts.append(row.chars)
        if self.on_token is not None:
            self.on_token(self.offset + index, token)
        if row.remaining:
            produced = len(row.remaining)
            row.remaining = advance(row.remaining, piece)
            piece = piece[produced:] if not row.remaining else b""
        text = row.decoder.decode(piece)
        if text:
            row.pieces.append(text)
            row.chars += len(text)
            if row.check is not None:
                cut = row.check.feed(text)
                if cut is not None:
                    row.cut = cut
                    self.end(row, "stop")
                    return
            if self.on_first_line is not None and self.offset + index == 0:
                self._announce(row)
        if len(row.ids) >= self.max_new:
            self.end(row, "length")

    def _announce(self, row: Row) -> None:
        """Give ``on_first_line`` the text up to the end of the first non-blank line, once."""
        if row.announced or self.on_first_line is None:
            return
        text = row.text()
        start = len(text) - len(text.lstrip())
        end = text.find("\n", start)
        if start < len(text) and end >= 0:
            row.announced = True
            self.on_first_line(row.candidate(text[:end], "early", []))


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
    chosen = sample(logits, state.params, generator)  # [rows]
    if state.greedy_first and state.offset == 0:
        chosen[0] = logits[0].argmax()
    logp = torch.log_softmax(logits, dim=-1)  # [rows, V]
    logprobs = logp.gather(1, chosen[:, None])[:, 0]  # [rows]
    top = logp.topk(2, dim=-1).values  # [rows, 2]
    other = torch.where(logprobs >= top[:, 0], top[:, 1], top[:, 0])  # likeliest other token
    margins = (logprobs - other).clamp(max=MARGIN_CAP)
    entropies = -torch.nansum(logp.exp() * logp, dim=-1)  # masked ids: 0 * -inf, left out
    next_ids = [int(t) for t in chosen.tolist()]
    figures = zip(logprobs.tolist(), margins.tolist(), entropies.tolist(), strict=True)
    for r, (row, token, (lp, margin, entropy)) in enumerate(
        zip(state.rows, next_ids, figures, strict=True)
    ):
        if row.finish is None:
            state.accept(r, token, lp, token_bytes, margin, entropy)
    return next_ids


def interrupted(state: DecodeState, cancel: Cancel, deadline: float | None) -> bool:
    """End every row (cancelled, or out of time) when the request must stop now."""
    if cancel.is_set():
        state.finish_all("cancelled")
        return True
    if deadline is not None and time.perf_counter() > deadline:
        state.finish_all("time")
        return True
    return False
