"""The engine contract: everything the layers above the engine may use, and nothing more.

The completion and server layers build :class:`GenerateRequest` objects, hand them to an
:class:`Engine` (through the worker) and read :class:`GenerateResult` objects; they never
touch tensors, caches or checkpoints. An engine is made by an :data:`EngineFactory` from an
:class:`EngineSpec` (defined in ``engine/spec.py``, where the model's settings are declared).
The local engine (``engine/local.py``) implements this protocol; so can one that streams
tokens from another process, without changes above this layer.

Stopping is incremental: a request carries a :class:`StopRule`, the engine starts one
:class:`StopCheck` per candidate and feeds it each new piece of text, so the cost of a stop
check per step does not grow with the text generated so far.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from codegen_lsp.engine.spec import EngineSpec as EngineSpec  # part of the contract

# progress(message, percentage) while an engine loads
ProgressFn = Callable[[str, int], None]
# on_token(row, token_id): called on the engine's thread after each token a row accepts
TokenFn = Callable[[int, int], None]
# on_first_line(candidate): called once on the engine's thread when the first candidate's
# text (healed bytes removed, cut by its stop rule) holds a complete non-blank line: a Candidate
# ("early") of the text up to that line's end with the per-token figures of its tokens, so a
# suggestion can be shown while the rest is still decoded
LineFn = Callable[["Candidate"], None]
# The cancel handle: the engine checks ``is_set()`` at every step and stops when it is set.
Cancel = threading.Event


class StopCheck(Protocol):
    """The stop state of one candidate while it is generated."""

    def feed(self, piece: str) -> int | None:
        """``piece`` was appended to the text: where to cut the whole text now, or None."""
        ...

    def finish(self) -> int | None:
        """Generation ended for another reason: where to cut the whole text, or None."""
        ...


class StopRule(Protocol):
    """Makes the :class:`StopCheck` of each candidate of a request."""

    def start(self) -> StopCheck:
        """A fresh check for one candidate."""
        ...


def generation_limit(n_ctx: int) -> int:
    """The most tokens one request may generate in a context of ``n_ctx`` positions: half
    of it, so that the other half is left for the prompt whatever the settings ask."""
    return max(1, n_ctx // 2)


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen: ``temperature == 0`` means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")


@dataclass
class GenerateRequest:
    """One generation job.

    ``key`` names the document: the prefix cache looks for that document's slot first.
    ``prompt`` is already windowed token ids. ``heal`` backs off the prompt's last token
    (token healing). With ``greedy_first`` the first of ``n`` candidates is greedy and the
    others are sampled with ``sampling``.
    """

    key: str
    prompt: list[int]
    max_new_tokens: int = 64
    n: int = 1
    sampling: SamplingParams = field(default_factory=SamplingParams)
    greedy_first: bool = False
    heal: bool = True
    stop: StopRule | None = None
    time_limit_s: float | None = None
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)
    on_token: TokenFn | None = None
    # strings the stop rule cuts at: a remote engine sends them so the server stops early
    # (the stop rule still decides every cut)
    stop_strings: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] = ()  # tokens that end a candidate as eos does (infill: <eom>)
    # speculative decoding: auto (draft model if loaded, else lookup) | off | lookup | draft;
    # exact where it runs (greedy rows only; see engine/speculate.py), so it never changes text
    speculation: str = "auto"
    on_first_line: LineFn | None = None  # local engines only; a remote one answers whole
    prefill_only: bool = False  # fill the cache and stop (the engine's background prefill)


MARGIN_CAP = 100.0  # a token that was the only one allowed (healing) has this margin


@dataclass
class Candidate:
    """One continuation: its text (after the prompt's text, healed text removed, cut by the
    stop rule), its ids, the sum of their log-probabilities under the model, why it ended
    (``stop``, ``eos``, ``length``, ``cancelled`` or ``time``), and for each token that
    produced its text (in order; tokens after the stop rule's cut left out): its
    log-probability, its margin (its log-probability minus that of the likeliest other token:
    positive when it was the top choice, capped at ``MARGIN_CAP``), the entropy of the
    distribution it was drawn from (nats) and where its text starts in ``text``. An engine that
    cannot tell margins or entropies (a remote one) gives NaN for them."""

    text: str
    token_ids: list[int]
    finish_reason: str
    logprob: float = 0.0
    token_logprobs: list[float] = field(default_factory=list)
    token_margins: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)
    token_starts: list[int] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float:
        """Average log-probability per generated token (0 for an empty continuation)."""
        return self.logprob / len(self.token_ids) if self.token_ids else 0.0


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
    # speculative decoding: draft tokens verified, drafts kept, decode forward calls
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    decode_forwards: int = 0
    cold_tail: int = 0  # a cold answer: the prompt's last tokens it read (engine/cold.py)

    @property
    def tokens_per_forward(self) -> float:
        """Generated tokens per decode forward call (1 without speculation; 0 if none ran)."""
        return self.generated_tokens / self.decode_forwards if self.decode_forwards else 0.0


@dataclass
class GenerateResult:
    """What a job produced; ``cancelled`` when it was superseded or cancelled."""

    candidates: list[Candidate] = field(default_factory=list)
    stats: GenerateStats = field(default_factory=GenerateStats)
    cancelled: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What the layers above may know about the loaded model, as data.

    ``family`` is ``codegen`` or ``codegen2``; ``data`` the training mix of a published
    CodeGen checkpoint (``mono``, ``multi``, ``nl``) or ``""`` when unknown.
    """

    name: str
    family: str = "codegen"
    data: str = ""
    parameters: int = 0
    fim: tuple[int, int, int] | None = None  # (<mask_1>, <sep>, <eom>) ids: CodeGen2 infill
    weight_bytes: int = 0  # memory the loaded weights take in this process (0: remote)

    @property
    def multi_language(self) -> bool:
        """Trained on many languages (a language/path header helps it)."""
        return self.data in ("multi", "nl")


@dataclass(frozen=True)
class CacheStats:
    """The engine's KV cache: bytes held, its budget, slots evicted so far."""

    held_bytes: int = 0
    budget_bytes: int = 0
    evictions: int = 0


@dataclass(frozen=True)
class Health:
    """Whether an engine can serve now, why not, and figures for the status."""

    ok: bool = True
    message: str = ""
    details: dict[str, object] = field(default_factory=dict)


# watch(health): called from any thread when an engine's health changes
HealthFn = Callable[[Health], None]


class Engine(Protocol):
    """Token ids in, continuations out. Used from one thread at a time (the worker's),
    except ``encode``, ``info``, ``n_ctx``, ``bos_id``, ``description``, ``cache_stats``,
    ``health``, ``watch`` and ``close``, which are safe from any thread."""

    info: ModelInfo
    n_ctx: int  # positions a prompt plus its continuation may take
    bos_id: int | None  # prepended when a prompt starts where the file starts
    description: str  # one line for the status bar and logs

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        ...

    def generate(self, request: GenerateRequest, cancel: Cancel) -> GenerateResult:
        """Run ``request`` until every candidate ends or ``cancel`` is set."""
        ...

    def clear_cache(self) -> None:
        """Drop every cached prefix."""
        ...

    def cache_stats(self) -> CacheStats:
        """The KV cache's figures now."""
        ...

    def health(self) -> Health:
        """Whether the engine can serve now (a local one always can)."""
        ...

    def watch(self, callback: HealthFn | None) -> None:
        """Call ``callback`` whenever :meth:`health` changes (None: stop)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (connections, threads); it is not used again."""
        ...


@runtime_checkable
class IdleWork(Protocol):
    """An engine with work for the worker's idle time (a local one's background prefill)."""

    def idle(self, cancel: Cancel) -> bool:
        """Do a piece of the work until done or ``cancel``; True while work remains."""
        ...


EngineFactory = Callable[[EngineSpec, ProgressFn], Engine]


class EngineNotReady(RuntimeError):
    """A job was submitted while no engine is loaded."""


class EngineUnavailable(RuntimeError):
    """The engine cannot serve now (a remote endpoint is down); its :meth:`Engine.health`
    says why, and whoever watches it tells the user, so a request failing this way is not
    reported again."""
