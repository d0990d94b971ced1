"""Draft-model speculation: a smaller CodeGen with the same tokenizer proposes the drafts.

:class:`ModelDrafter` has the interface of :class:`~codegen_lsp.engine.speculate.LookupDrafter`
(``extend`` with the tokens the text grew by, ``propose`` up to ``k`` drafts), so the target
engine's verify loop is the same for both and so is its exactness: every draft is checked
against the target's own greedy choice in a row-exact verify call, so the text never depends on
the draft model, only the number of target calls does.

The draft keeps its own KV slot (its engine's prefix cache, under the document's key, so the
next keystroke reuses its prompt too). A proposal feeds the tokens the draft has not seen yet
in one call (the last accepted token at least), then decodes ``k`` greedy tokens one at a time;
positions it wrote for drafts the target rejected are simply written again next time (its cache
is written by position). Its block plan and rounding do not matter: its output is only a guess.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from codegen_lsp.engine.kv_cache import common_prefix

DRAFT_KEY = "\0draft:"


def same_vocabulary(target_bytes: list[bytes], draft_bytes: list[bytes]) -> str:
    """Why a draft model's tokenizer cannot draft for the target ("" when it can): every id
    both know must mean the same bytes."""
    shared = min(len(target_bytes), len(draft_bytes))
    if shared < 256:
        return f"the draft tokenizer has {len(draft_bytes)} ids"
    differ = next((i for i in range(shared) if target_bytes[i] != draft_bytes[i]), None)
    if differ is not None:
        return f"token {differ} is {draft_bytes[differ]!r} there, {target_bytes[differ]!r} here"
    return ""


class ModelDrafter:
    """Greedy drafts of a draft engine (a ``CodeGenEngine``: not imported, local.py imports
    this module) for one generation."""

    def __init__(self, engine: Any, key: str, ids: list[int], room: int) -> None:
        self.engine = engine
        self.ids = list(ids)
        self.limit = engine.n_ctx
        self.vocab = engine.tokenizer.vocab_size
        cache = engine.cache
        need = min(self.limit, len(ids) + room)
        self.slot, reused = cache.acquire(DRAFT_KEY + key, self.ids, need=need)
        never = threading.Event()
        engine._prefill(self.slot, self.ids[:-1], reused, never, None)
        self.written = list(self.ids[:-1])  # tokens whose K/V the slot holds, by position

    def extend(self, tokens: list[int]) -> None:
        """The text grew by ``tokens``."""
        self.ids.extend(tokens)

    @torch.inference_mode()
    def propose(self, k: int, min_n: int = 1) -> tuple[list[int], int]:
        """Up to ``k`` greedy draft tokens (``min_n`` is lookup's; unused here)."""
        length = len(self.ids)
        k = min(k, self.limit - length)
        if k <= 0 or length == 0:
            return [], 0
        start = min(common_prefix(self.written, self.ids), length - 1)
        step = self.engine.step
        feed = self.ids[start:]
        drafts: list[int] = []
        while len(drafts) < k:
            hidden = step.hidden([feed], start, self.slot.cache)[:, -1]
            logits = step.logits(hidden)[0, : self.vocab]
            drafts.append(int(logits.argmax()))
            start += len(feed)
            feed = drafts[-1:]
        self.written = self.ids + drafts[:-1]
        return drafts, 1
