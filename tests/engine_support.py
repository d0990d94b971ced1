"""Helpers for engine tests: a stop rule from a plain function, an engine without a model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from codegen_lsp.engine.api import (
    CacheStats,
    Candidate,
    GenerateRequest,
    GenerateResult,
    Health,
    HealthFn,
    ModelInfo,
    SamplingParams,
)

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "seed")


@dataclass
class _WholeText:
    fn: Callable[[str], int | None]
    text: list[str] = field(default_factory=list)

    def feed(self, piece: str) -> int | None:
        self.text.append(piece)
        return self.fn("".join(self.text))

    def finish(self) -> int | None:
        return None


@dataclass(frozen=True)
class WholeTextStop:
    """A stop rule calling ``fn(text so far)`` at every step that adds text (tests only:
    quadratic, which the real rules are not)."""

    fn: Callable[[str], int | None]

    def start(self) -> _WholeText:
        return _WholeText(self.fn)


def request_kwargs(kwargs: dict) -> dict:
    """``GenerateRequest`` keywords from test shorthand: sampling knobs and plain stop
    functions become ``SamplingParams`` and :class:`WholeTextStop`."""
    picked = {k: kwargs.pop(k) for k in SAMPLING_KEYS if k in kwargs}
    if picked:
        kwargs["sampling"] = SamplingParams(**picked)
    if callable(kwargs.get("stop")) and not hasattr(kwargs["stop"], "start"):
        kwargs["stop"] = WholeTextStop(kwargs["stop"])
    return kwargs


class FakeEngine:
    """An engine without a model: ``max_new_tokens`` steps of 1 ms, each writing ``" 0"``
    and checking the cancel flag; ``prompt == [-1]`` raises. Records what it ran."""

    n_ctx = 1 << 20  # no limit on prompt or steps
    bos_id = None
    description = "fake"
    info = ModelInfo("fake")

    def __init__(self, step_s: float = 0.001) -> None:
        self.step_s = step_s
        self.started: dict[str, threading.Event] = {}
        self.ran: list[str] = []
        self.cancelled: list[str] = []

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if 0 <= i < 0x110000)

    def clear_cache(self) -> None:
        pass

    def health(self) -> Health:
        return Health()

    def watch(self, callback: HealthFn | None) -> None:
        pass

    def close(self) -> None:
        pass

    def cache_stats(self) -> CacheStats:
        return CacheStats()

    def generate(self, req: GenerateRequest, cancel: threading.Event) -> GenerateResult:
        name = getattr(req, "prompt_name", self.decode(req.prompt[-8:]))
        self.started.setdefault(name, threading.Event()).set()
        self.ran.append(name)
        steps = 0
        check = req.stop.start() if req.stop else None
        while steps < req.max_new_tokens and not cancel.is_set():
            if req.prompt == [-1]:
                raise RuntimeError("engine failure")
            time.sleep(self.step_s)
            steps += 1
            if check is not None and check.feed(" 0") is not None:
                break
        if cancel.is_set():
            self.cancelled.append(name)
        reason = "cancelled" if cancel.is_set() else "length"
        return GenerateResult(
            [Candidate(" 0" * steps, [0] * steps, reason)], cancelled=cancel.is_set()
        )


class NumberTokenizer:
    """A tokenizer of ``vocab`` ids whose token ``i`` reads ``<i>`` (for engines over models
    that have no real tokenizer, such as transformers-made random checkpoints)."""

    def __init__(self, vocab: int, bos_id: int = 1, eos_id: int = 2) -> None:
        self.vocab_size = vocab
        self.bos_id = bos_id
        self.eos_id = eos_id
        self._bytes = [f"<{i}>".encode() for i in range(vocab)]

    def token_bytes(self) -> list[bytes]:
        return list(self._bytes)

    def encode(self, text: str) -> list[int]:
        return [int(part) for part in text.replace(">", "").split("<") if part]

    def decode(self, ids: list[int]) -> str:
        return "".join(f"<{i}>" for i in ids)


def greedy_ids(model, prompt: list[int], max_new_tokens: int, vocab: int) -> list[int]:
    """Greedy ids on the engine's decode loop (float32, no healing, eos ignored)."""
    from codegen_lsp.engine.local import CodeGenEngine

    engine = CodeGenEngine(model, NumberTokenizer(vocab), cache_memory_mb=16, prefix_reuse=False)
    request = GenerateRequest("greedy", prompt, max_new_tokens, heal=False, ignore_eos=True)
    return engine.generate(request, threading.Event()).candidates[0].token_ids
