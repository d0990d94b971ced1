"""The engine's contract: what a generation job asks for and what it gives back.

The completion and server layers build :class:`GenerateRequest` objects and read
:class:`GenerateResult` objects; they never touch tensors. Everything here is plain data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

# Given the text generated so far for one candidate (continuation of the prompt text), return
# the index at which to cut it and stop, or None to go on.
StopFn = Callable[[str], "int | None"]


@dataclass
class GenerateRequest:
    """One generation job.

    ``key`` names the document: a newer job with the same key supersedes older ones, and the
    prefix cache looks for a slot of that document first. ``prompt`` is already windowed
    token ids. ``heal`` enables token healing of the prompt's last token.
    """

    key: str
    prompt: list[int]
    max_new_tokens: int = 64
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    heal: bool = True
    stop: StopFn | None = None
    time_limit_s: float | None = None
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)


@dataclass
class Candidate:
    """One continuation: its text (after the prompt's text, healed text removed), its ids,
    and why it ended: ``stop``, ``eos``, ``length``, ``cancelled`` or ``time``."""

    text: str
    token_ids: list[int]
    finish_reason: str


@dataclass
class GenerateStats:
    """Per-job figures for the request log line."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefilled_tokens: int = 0
    generated_tokens: int = 0
    queue_ms: float = 0.0
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    cache_bytes: int = 0  # KV cache memory held after the job


@dataclass
class GenerateResult:
    """What a job produced; ``cancelled`` when it was superseded or cancelled."""

    candidates: list[Candidate] = field(default_factory=list)
    stats: GenerateStats = field(default_factory=GenerateStats)
    cancelled: bool = False
