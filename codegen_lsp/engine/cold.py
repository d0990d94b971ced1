"""A cold prompt answers from its tail first; the whole prompt is prefilled while idle.

A file just opened has nothing cached: on a 350M model ~900 tokens before the cursor take
seconds to prefill. When the uncached part of a request's prompt (at least :data:`MIN_COLD`
tokens) would take longer than ``coldStartMs`` at the engine's measured prefill rate, the
request runs on the prompt's last tokens that fit that time (at least :data:`MIN_TAIL`, from
the line start before them where one is near), under a key of its own, and the whole prompt
is noted for the background: the worker prefills it block by block while no request waits
(:meth:`ColdStart.background`; a new request interrupts it between blocks and the blocks done
stay cached). The next keystroke
whose prompt is then cached runs on the whole prompt as usual. The tail's start stays put
while the user types, so consecutive cold keystrokes reuse the tail's cache too.

Exactness is untouched: the background prefill is the request's own prefill (the same
tokens, the same block plan), as if the request had run and been cancelled after it; a cold
answer is the answer to a shorter prompt, said in its stats (``cold_tail``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import Protocol

from codegen_lsp.engine.api import Cancel, GenerateRequest, GenerateResult, GenerateStats
from codegen_lsp.engine.prefix_cache import PrefixCache

MIN_TAIL = 128  # a cold answer reads at least this many tokens
MIN_COLD = 512  # a prompt is cold only when at least this many of its tokens are uncached
LINE_SEARCH = 48  # tokens after the cut searched for a line start
COLD_SUFFIX = "\0cold"  # the tail's cache slot key: never the document's own slot
RATE_WEIGHT = 0.3  # weight of a new prefill-rate observation


class _Engine(Protocol):
    token_bytes: list[bytes]
    cache: PrefixCache

    def _generate(self, req: GenerateRequest, cancel: Cancel) -> GenerateResult: ...


@dataclass
class ColdStart:
    """The cold-start policy of one engine: its prefill rate, the tails' starts per
    document, and the prompt waiting for a background prefill."""

    budget_ms: float  # 0: off
    min_cold: int = MIN_COLD
    rate: float = 0.0  # prefill tokens per second (0: not measured yet)
    cuts: dict[str, int] = field(default_factory=dict)
    pending: GenerateRequest | None = None

    def observe(self, stats: GenerateStats) -> None:
        """Learn the prefill rate from a request's prefill (64 tokens or more)."""
        if stats.prefilled_tokens < 64 or stats.prefill_ms <= 0:
            return
        rate = stats.prefilled_tokens / (stats.prefill_ms / 1000)
        self.rate = rate if not self.rate else (1 - RATE_WEIGHT) * self.rate + RATE_WEIGHT * rate

    def plan(self, engine: _Engine, req: GenerateRequest) -> GenerateRequest:
        """``req``, or the request on its tail when its uncached part is too slow to prefill
        (then ``req`` itself waits for the background)."""
        if self.budget_ms <= 0 or not self.rate or req.key.endswith(COLD_SUFFIX):
            return req
        ids = req.prompt
        fits = max(MIN_TAIL, int(self.rate * self.budget_ms / 1000))
        short = max(fits, self.min_cold)
        # the cache is only looked at for prompts long enough to be cold (not per keystroke)
        if len(ids) <= short or len(ids) - engine.cache.reusable(ids) <= short:
            self.cuts.pop(req.key, None)
            return req
        cut = self.cuts.get(req.key, -1)
        if not 0 < cut < len(ids) or len(ids) - cut > 2 * fits:
            cut = line_start(ids, len(ids) - fits, engine.token_bytes)
            self.cuts[req.key] = cut
        self.pending = req
        return replace(req, key=req.key + COLD_SUFFIX, prompt=ids[cut:])

    def background(self, engine: _Engine, cancel: threading.Event) -> bool:
        """Prefill the waiting prompt until done or ``cancel``; True while work remains."""
        req = self.pending
        if req is None:
            return False
        result = engine._generate(replace(req, prefill_only=True, on_token=None), cancel)
        if not result.cancelled:
            self.pending = None
        self.observe(result.stats)
        return self.pending is not None


def line_start(ids: list[int], cut: int, token_bytes: list[bytes]) -> int:
    """The last position at or before ``cut`` (within :data:`LINE_SEARCH`) whose previous
    token ends a line, else ``cut``: a tail starts at a line start, a little longer."""
    cut = max(0, cut)
    for i in range(cut, max(0, cut - LINE_SEARCH), -1):
        if i > 0 and token_bytes[ids[i - 1]].endswith(b"\n"):
            return i
    return cut
