"""Exact speculative decoding by prompt lookup: drafts from the text itself, verified in one call.

Code repeats itself (identifiers, argument lists, whole lines), so the tokens that followed the
latest earlier occurrence of the last 3 (else 2, else 1) ids of the prompt plus the text
generated so far are a good guess at what comes next. :class:`LookupDrafter` keeps an n-gram
index of those ids and proposes ``k`` tokens; the engine feeds the current token and the ``k``
drafts in one forward call, keeps the drafts greedy decoding would have chosen plus the model's
own next token, and leaves the rest of the written positions to be overwritten (the KV cache
is written by position). :class:`DraftLength` adapts ``k`` to how many drafts were kept, so text
that does not repeat pays for one-token calls only.

Exactness. Greedy output with speculation must be identical, token for token, to greedy output
without it, and the cache it leaves must equal one built without it. That holds when row ``i``
of a verify call computes exactly what a one-token call at position ``p + i`` computes:

* the model runs verify calls ``rowwise`` (``codegen/modeling.py``): attention and the MLP's
  activation one row at a time with a one-token call's shapes; rotary values from one table;
  LayerNorm, adds and casts work per row anyway; the head refines each row apart;
* every linear layer is a weight-only int8/int4 one whose kernel computes each row alone for
  up to ``small_rows`` rows (``_weight_int8pack_mm``: one fixed-order dot product per output,
  whatever the number of rows), so a verify call has at most ``small_rows`` rows.

Dense float32/bf16 matmuls do not have that property: MKL takes a matrix-vector path for one
row and a blocked matrix-matrix path for more, which round differently (measured: rows differ
by ~1e-6), and the blocked path costs several one-row calls on a 2-core CPU. So
:func:`verify_width` turns speculation off for dense weights, CUDA and ``torch.compile``, and
:func:`rows_agree` checks the property once per engine, for every verify size, on this
machine's kernels (at warm-up, before the first speculative request); a failed check also
turns it off, with the reason in the status.
Sampled rows (temperature > 0) never speculate; neither do forked candidate rows.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import CodeGenForCausalLM, KVCache
from codegen_lsp.engine.api import Cancel, GenerateStats
from codegen_lsp.engine.draft import ModelDrafter
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.kv_cache import KVSlot
from codegen_lsp.engine.quantize import Int4Linear, Int8Linear
from codegen_lsp.engine.sampling import DecodeState, interrupted
from codegen_lsp.engine.step import Step


class _Engine(Protocol):
    """What :func:`decode_lookup` uses of the local engine (local.py imports this module)."""

    draft: Any  # a draft CodeGenEngine, or None
    spec_width: int
    step: Step

    def _choose(
        self, state: DecodeState, logits: torch.Tensor, generator: torch.Generator | None
    ) -> int: ...


NGRAMS = (3, 2, 1)  # the suffix lengths tried, longest first
MAX_WIDTH = 8  # rows of a verify call: the current token plus at most 7 drafts
START_DRAFTS = 2
MAX_REST = 16  # most one-token steps between two tries after drafts keep being rejected
MODES = ("auto", "off", "lookup", "draft")


class LookupDrafter:
    """Prompt-lookup drafts: what followed the latest earlier occurrence of the ids' suffix."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = list(ids)
        self._latest: dict[tuple[int, ...], int] = {}  # n-gram -> end of its latest occurrence
        self._indexed = 0  # n-grams ending at 1 .. _indexed are in the index

    def extend(self, tokens: list[int]) -> None:
        """The text grew by ``tokens``."""
        self.ids.extend(tokens)

    def _catch_up(self) -> None:
        ids = self.ids
        # index every end but the last: the suffix must find an *earlier* occurrence
        for end in range(self._indexed + 1, len(ids)):
            for n in NGRAMS:
                if end >= n:
                    self._latest[tuple(ids[end - n : end])] = end
        self._indexed = max(self._indexed, len(ids) - 1)

    def propose(self, k: int, min_n: int = 1) -> tuple[list[int], int]:
        """Up to ``k`` draft tokens and the length of the matched suffix (0: no match).
        Drafts may run into the suffix itself, which continues a repeating cycle."""
        if k <= 0:
            return [], 0
        self._catch_up()
        ids, length = self.ids, len(self.ids)
        for n in NGRAMS:
            if n < min_n or length < n:
                continue
            end = self._latest.get(tuple(ids[length - n :]))
            if end is None:
                continue
            drafts: list[int] = []
            for t in range(k):
                j = end + t
                drafts.append(ids[j] if j < length else drafts[j - length])
            return drafts, n
        return [], 0


class DraftLength:
    """How many drafts to verify next. A verify call of ``1 + k`` rows costs more than a
    one-token step (native kernels on 2 Intel Xeon vCPUs, ~1k context, 350M shape: 1.12x for 2
    rows, 1.26x for 4, 1.9x for 8; the shipped model 1.08x / 1.32x / 2.0x), so ``k`` doubles
    only while every draft is kept, drops to what was kept plus
    one after a miss, and halves to 0 after misses. At 0 only a 3-token match is tried, with
    one draft; a miss there rests 2, 4, ... up to 16 steps before the next try."""

    def __init__(self, most: int) -> None:
        self.most = max(0, most)
        self.k = min(START_DRAFTS, self.most)
        self._rest = 0  # steps left without drafting
        self._backoff = 0

    def next(self) -> tuple[int, int]:
        """(drafts to ask for, shortest suffix match to accept)."""
        if self.k > 0:
            return self.k, 1
        if self._rest > 0:
            self._rest -= 1
            return 0, NGRAMS[0]
        return min(1, self.most), NGRAMS[0]

    def update(self, drafted: int, kept: int) -> None:
        """A verify call kept ``kept`` of ``drafted`` drafts."""
        if drafted == 0:
            return
        if kept == drafted:
            self.k = min(self.most, max(START_DRAFTS, 2 * self.k))
            self._backoff = 0
        elif kept > 0:
            self.k = min(self.most, kept + 1)
        elif self.k > 0:
            self.k //= 2
        else:
            self._backoff = min(MAX_REST, 2 * self._backoff or 2)
            self._rest = self._backoff


def verify_width(model: nn.Module, device: torch.device, compiled: bool) -> tuple[int, str]:
    """Most rows a verify call may have with every row exact (1: no speculation), and why
    speculation is off ("" when it is on)."""
    if compiled:
        return 1, "off: compiled kernels fuse across rows"
    if device.type != "cpu":
        return 1, f"off: matmuls on {device.type} are not row-exact"
    if any(isinstance(m, nn.Linear) for m in model.modules()):
        return 1, (
            "off: dense matmuls round a one-token step and a multi-token verify differently "
            "(lookup needs int8 or int4 weights)"
        )
    widths = [m.small_rows for m in model.modules() if isinstance(m, Int8Linear | Int4Linear)]
    width = min([MAX_WIDTH, *widths])
    return (width, "") if width > 1 else (1, "off: quantized kernels take one row per call")


@torch.inference_mode()
def rows_agree(
    model: CodeGenForCausalLM,
    head: LogitsHead,
    config: CodeGenConfig,
    kv_dtype: torch.dtype,
    device: torch.device,
    width: int,
) -> bool:
    """True when rowwise verify calls of every size from 2 to ``width`` rows reproduce
    one-token steps bit for bit (hidden states, logits and the keys and values written) on
    this machine's kernels (``width`` one-token steps and ``width - 1`` verify calls)."""
    step = Step(model.transformer, head, device)
    gen = torch.Generator().manual_seed(1234)
    start = 5
    tokens = torch.randint(0, config.vocab_size, (1, start + width), generator=gen)
    caches = [KVCache(config, 1, start + width, kv_dtype, device) for _ in range(width)]
    for cache in caches:
        step.hidden(tokens[:, :start], 0, cache)
    one, *verifies = caches
    steps = [step.hidden(tokens[:, p : p + 1], p, one)[:, -1] for p in range(start, start + width)]
    stepped = torch.cat(steps)  # [width, E]
    logits = torch.cat([step.logits(h[None]) for h in stepped])  # [width, V]
    for rows, cache in zip(range(2, width + 1), verifies, strict=True):
        verified = step.hidden(tokens[:, start : start + rows], start, cache, exact=True)[0]
        if not torch.equal(verified, stepped[:rows]):
            return False
        if not torch.equal(step.logits(verified, exact=True), logits[:rows]):
            return False
        span = slice(start, start + rows)
        for a, b in zip(one.buffers, cache.buffers, strict=True):
            if not torch.equal(a[:, :, span], b[:, :, span]):
                return False
    return True


def decode_lookup(
    engine: _Engine,
    state: DecodeState,
    slot: KVSlot,
    hidden: torch.Tensor,
    position: int,
    cancel: Cancel,
    deadline: float | None,
    generator: torch.Generator | None,
    stats: GenerateStats,
    drafts: str = "lookup",
) -> None:
    """Greedy decoding of one row of ``engine`` in the slot, each call verifying drafts
    (prompt lookup, or the draft model's with ``drafts="draft"``): the current token and
    ``k`` drafts go in one row-exact call; drafts are kept while greedy decoding chooses
    them, the model's own choice after them comes free. Only kept positions are recorded."""
    row = state.rows[0]
    drafter: LookupDrafter | ModelDrafter = LookupDrafter(slot.tokens[:position])
    if drafts == "draft" and engine.draft is not None and slot.key is not None:
        room = state.max_new + engine.spec_width
        drafter = ModelDrafter(engine.draft, slot.key, slot.tokens[:position], room)
    length = DraftLength(engine.spec_width - 1)
    logits = engine.step.logits(hidden)  # [1, V]
    token: int | None = None
    while True:
        if interrupted(state, cancel, deadline):
            return
        if token is None:
            token = engine._choose(state, logits, generator)
            if state.done():
                return
        drafter.extend([token])
        k, min_n = length.next()
        proposed, _ = drafter.propose(min(k, state.max_new - len(row.ids)), min_n)
        fed = [token, *proposed]
        out = engine.step.hidden([fed], position, slot.cache, exact=True)[0]  # [T, E]
        rows = engine.step.logits(out, exact=True)  # [T, V]
        stats.decode_forwards += 1
        stats.drafted_tokens += len(proposed)
        slot.record((position, position + 1), [token], out[:1])
        position += 1
        token, kept = None, 0
        for i, draft in enumerate(proposed):
            chosen = engine._choose(state, rows[i : i + 1], generator)
            if chosen != draft or state.done():
                kept += chosen == draft
                token = chosen
                break
            kept += 1
            drafter.extend([draft])
            slot.record((position, position + 1), [draft], out[i + 1 : i + 2])
            position += 1
        else:
            logits = rows[len(proposed) :]
        stats.accepted_tokens += kept
        length.update(len(proposed), kept)
        if state.done():
            return
