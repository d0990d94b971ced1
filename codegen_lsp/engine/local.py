"""The local engine: a CodeGen model in this process, with KV reuse across requests.

:class:`CodeGenEngine.generate` runs one :class:`~codegen_lsp.engine.api.GenerateRequest`:
token healing, the prefix cache (reuse the longest common token prefix, prefill only the
rest), one shared prefill then ``n`` forked rows, and the one decode loop of the project,
which checks the cancel flag, the time limit, eos and each row's stop check at every step.
A greedy row decoded in the slot itself may verify prompt-lookup drafts in the same loop
(``engine/speculate.py``: exact, so the text is the same with speculation on or off).
Every command that generates runs this loop.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import torch

from codegen_lsp.codegen.checkpoint import CheckpointError
from codegen_lsp.codegen.modeling import CodeGenForCausalLM, CodeGenModel
from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.engine import kernels
from codegen_lsp.engine.api import (
    CacheStats,
    Cancel,
    GenerateRequest,
    GenerateResult,
    GenerateStats,
    Health,
    HealthFn,
    ModelInfo,
)
from codegen_lsp.engine.cold import ColdStart
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.healing import heal, prefix_index
from codegen_lsp.engine.kv_cache import KVSlot, default_kv_dtype, kv_bytes_per_token, plan_blocks
from codegen_lsp.engine.machine import EngineConfigError, dtype_name
from codegen_lsp.engine.prefix_cache import CacheBudgetError, PrefixCache
from codegen_lsp.engine.quantize import weight_count
from codegen_lsp.engine.sampling import DecodeState, fit_prompt, interrupted, sample_step
from codegen_lsp.engine.speculate import decode_lookup, rows_agree, verify_width
from codegen_lsp.engine.step import Step

log = logging.getLogger(__name__)

MAX_BLOCK = 256  # largest prefill call; also the worst-case recompute after an edit
MIN_CONTEXT = 256  # refuse a cache budget that cannot hold this many positions


class CodeGenEngine:
    """Generation with KV reuse across requests; one instance is owned by one thread."""

    def __init__(
        self,
        model: CodeGenForCausalLM,
        tokenizer: CodeGenTokenizer,
        *,
        info: ModelInfo | None = None,
        cache_memory_mb: float = 512,
        prefix_reuse: bool = True,
        compile: bool = False,
        quantize: str = "none",
        max_block: int = MAX_BLOCK,
        kv_dtype: torch.dtype | None = None,
        head: LogitsHead | None = None,
        cold_start_ms: float = 0,
    ) -> None:
        config = model.config
        if max_block < 1 or max_block & (max_block - 1):
            raise ValueError(f"max_block must be a power of two, got {max_block}")
        if tokenizer.vocab_size > config.vocab_size:
            raise CheckpointError(
                f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                f"{config.vocab_size}: they do not belong together"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.bos_id: int | None = tokenizer.bos_id
        self.prefix_reuse = prefix_reuse
        self.max_block = max_block
        self.quantize = quantize
        self.device = model.device
        self.act_dtype = next(p for p in model.parameters() if p.is_floating_point()).dtype
        attend = kernels.table().entries["attend"]
        native_kv = attend.impl == "native" and self.act_dtype in kernels.ATTEND_CONTRACT.kv_dtypes
        self.kv_dtype = kv_dtype or default_kv_dtype(self.device, self.act_dtype, native_kv)
        budget = int(cache_memory_mb * 2**20)
        per_token = kv_bytes_per_token(config, self.kv_dtype)
        fit = budget // per_token
        if fit < MIN_CONTEXT:
            raise EngineConfigError(
                f"cache memory {cache_memory_mb} MiB holds only {fit} positions of this model "
                f"({per_token / 1024:.0f} KiB each); at least {MIN_CONTEXT} are needed"
            )
        self.n_ctx = min(config.n_positions, fit)
        self.cache = PrefixCache(
            config, self.kv_dtype, self.device, budget, max_block=max_block, n_ctx=self.n_ctx
        )
        self.head = head or LogitsHead.for_model(model)
        self.token_bytes = tokenizer.token_bytes()
        self.prefix_index = prefix_index(tokenizer)
        forward: CodeGenModel = model.transformer
        if attend.impl == "native":  # one-token and verify calls
            model.transformer.use_decode_attention(kernels.decode_attention)
        if compile:  # the compiled module is called as the model it wraps
            forward = cast(CodeGenModel, torch.compile(model.transformer, dynamic=True))
        self.step = Step(forward, self.head, self.device)  # every call of the model
        # rows per speculative verify call (1: speculation off, for the reason given)
        self.spec_width, self.spec_reason = verify_width(model, self.device, compile)
        self._rows_checked = False
        self.draft: CodeGenEngine | None = None  # draftModel: a smaller CodeGen, same tokenizer
        self.cold = ColdStart(cold_start_ms)  # a cold prompt's tail first (engine/cold.py)
        n_params = weight_count(model)
        self.info = info or ModelInfo("model", parameters=n_params)
        self.description = (
            f"{self.info.name}: CodeGen {n_params / 1e6:.0f}M, {dtype_name(self.act_dtype)}"
            f"{f', {quantize} weights' if quantize != 'none' else ''}, {self.device}, "
            f"{torch.get_num_threads()} threads, context {self.n_ctx}, "
            f"{dtype_name(self.kv_dtype)} KV cache {cache_memory_mb:g} MiB"
            f"{'' if prefix_reuse else ', prefix reuse off'}"
        )

    # --- Engine protocol ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode(ids)

    def clear_cache(self) -> None:
        """Drop every cached prefix."""
        self.cache.clear()

    def cache_stats(self) -> CacheStats:
        """Bytes held now (a sum of slot sizes, safe to read from another thread)."""
        return CacheStats(self.cache.nbytes, self.cache.budget_bytes, self.cache.evictions)

    def health(self) -> Health:
        """A local engine can always serve."""
        details = {"remote": False, "speculation": self.speculation_state()}
        return Health(details={**details, "kernels": kernels.describe()})

    def speculation_state(self) -> str:
        """``lookup (up to N drafts)`` or ``off: why`` (for the status)."""
        if self.spec_width > 1:
            source = f"draft model {self.draft.info.name}" if self.draft else "lookup"
            return f"{source} (greedy rows, up to {self.spec_width - 1} drafts)"
        return self.spec_reason

    def _speculates(self, req: GenerateRequest) -> bool:
        """Whether ``req``'s greedy rows verify lookup drafts (checked once on this machine)."""
        if req.speculation == "off" or self.spec_width <= 1:
            return False
        if self.rows_verdict is None:
            config, dev = self.model.config, self.device
            self.settle_rows(
                rows_agree(self.model, self.head, config, self.kv_dtype, dev, self.spec_width)
            )
        return self.spec_width > 1

    @property
    def rows_verdict(self) -> bool | None:
        """Whether verify rows equal one-token steps here; None before the check ran."""
        return self.spec_width > 1 if self._rows_checked else None

    def settle_rows(self, agree: bool) -> None:
        """The row check's verdict: found at the first speculation, or known from an earlier
        start with the same weights, code and CPU (the weight cache keeps it)."""
        self._rows_checked = True
        if not agree:
            self.spec_width = 1
            self.spec_reason = "off: verify rows differ from one-token steps on this machine"
            log.warning("speculative decoding %s", self.spec_reason)

    def watch(self, callback: HealthFn | None) -> None:
        """Health never changes locally."""

    def close(self) -> None:
        """Drop the cache (the weights go with the engine)."""
        self.cache.clear()

    def warmup(self) -> None:
        """Run a short generation so the first real request does not pay for kernel setup,
        then, with the cold start on, 64-token prefills (the second one timed) for its rate."""
        runs = ((3, 2), (64, 0), (64, 0)) if self.cold.budget_ms > 0 else ((3, 2),)
        for n, new in runs:  # the first also checks the verify rows
            self.cache.clear()
            req = GenerateRequest("\0warmup", [self.tokenizer.eos_id] * n, max_new_tokens=new)
            stats = self.generate(req, threading.Event()).stats
        self.cold.rate = 0.0
        self.cold.observe(stats)  # a 3-token prompt teaches nothing: the rate stays unknown
        self.cache.clear()

    def idle(self, cancel: Cancel) -> bool:
        """The worker's idle time: the background prefill of a cold prompt."""
        return self.cold.background(self, cancel)

    def generate(self, req: GenerateRequest, cancel: Cancel) -> GenerateResult:
        """Continue ``req.prompt``: reuse cached KV, prefill the rest, decode ``req.n`` rows.

        A KV cache that cannot make room for the request is emptied and the request run
        once more: a request alone always fits the cache's context.
        """
        run = self.cold.plan(self, req)
        try:
            result = self._generate(run, cancel)
        except CacheBudgetError as exc:
            log.warning("%s; emptying the KV cache and running the request again", exc)
            self.cache.clear()
            result = self._generate(run, cancel)
        result.stats.cold_tail = len(run.prompt) if run is not req else 0
        self.cold.observe(result.stats)
        return result

    @torch.inference_mode()
    def _generate(self, req: GenerateRequest, cancel: Cancel) -> GenerateResult:
        start = time.perf_counter()
        stats = GenerateStats(prompt_tokens=len(req.prompt))
        if req.n < 1 or req.max_new_tokens < 0:
            raise ValueError(f"bad request: n={req.n}, max_new_tokens={req.max_new_tokens}")
        prompt, max_new = fit_prompt(req, self.n_ctx, self.tokenizer.bos_id)
        healed = heal(prompt, self.token_bytes, self.prefix_index) if req.heal else None
        ids = healed.ids if healed else prompt
        removed = healed.removed if healed else b""
        deadline = start + req.time_limit_s if req.time_limit_s else None

        slot, reused = self.cache.acquire(
            req.key, ids, need=len(ids) + max_new, reuse=self.prefix_reuse
        )
        stats.reused_tokens = reused
        stats.prefilled_tokens = len(ids) - reused
        hidden = self._prefill(slot, ids, reused, cancel, deadline)
        stats.prefill_ms = (time.perf_counter() - start) * 1000
        state = DecodeState.start(req, max_new, removed, self.tokenizer.eos_id)
        if hidden is None:
            state.finish_all("cancelled" if cancel.is_set() else "time")
        elif max_new == 0 or req.prefill_only:
            state.finish_all("length")
        else:
            decode_start = time.perf_counter()
            drafts = ""  # where greedy rows' drafts come from: "" (none), lookup, draft
            if self._speculates(req):
                use_draft = self.draft is not None and req.speculation != "lookup"
                drafts = "draft" if use_draft else "lookup"
            self._decode_rows(state, slot, len(ids), cancel, deadline, stats, drafts)
            stats.decode_ms = (time.perf_counter() - decode_start) * 1000
        result = GenerateResult(
            candidates=state.candidates(),
            stats=stats,
            cancelled=cancel.is_set(),
        )
        stats.generated_tokens = sum(len(c.token_ids) for c in result.candidates)
        stats.total_ms = (time.perf_counter() - start) * 1000
        return result

    # --- pieces -------------------------------------------------------------------------
    def _prefill(
        self,
        slot: KVSlot,
        ids: list[int],
        reused: int,
        cancel: Cancel,
        deadline: float | None,
    ) -> torch.Tensor | None:
        """Compute the blocks of ``ids``' plan after ``reused``; the last hidden state [1, E]."""
        for block in plan_blocks(len(ids), self.max_block):
            s, e = block
            if e <= reused:
                continue
            if cancel.is_set() or (deadline is not None and time.perf_counter() > deadline):
                return None
            hidden = self.step.hidden([ids[s:e]], s, slot.cache)[:, -1]  # [1, E]
            slot.record(block, ids[s:e], hidden)
        return slot.last_hidden()

    def _decode_rows(
        self,
        state: DecodeState,
        slot: KVSlot,
        length: int,
        cancel: Cancel,
        deadline: float | None,
        stats: GenerateStats,
        drafts: str = "",
    ) -> None:
        """Decode every row: in forked rows, as many at a time as the cache budget allows, or
        one after another in the slot itself (always for one row: its tokens stay cached);
        with ``drafts`` (``lookup`` or ``draft``), greedy rows in the slot verify drafts."""
        generator = None
        if state.params.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(state.params.seed)
        n = len(state.rows)
        need = length + state.max_new
        group = 1 if n == 1 else self.cache.rows_that_fit(need, n)
        if group <= 1:
            # one row at a time in the slot itself (no copy); row 0 last, so the slot keeps
            # the first candidate's tokens for the next keystroke
            for first in reversed(range(n)):
                slot.truncate(length)
                sub = state.group(first, 1)
                greedy = state.params.temperature == 0 or (state.greedy_first and first == 0)
                hidden = slot.decode_start()
                if drafts and greedy:
                    decode_lookup(
                        self, sub, slot, hidden, length, cancel, deadline, generator, stats, drafts
                    )
                else:
                    self._decode(sub, slot, hidden, length, cancel, deadline, generator, stats)
            return
        for first in range(0, n, group):
            sub = state.group(first, group)
            with self.cache.scratch(slot, len(sub.rows), need) as work:
                rows = slot.decode_start().expand(len(sub.rows), -1)  # [rows, E]
                self._decode(sub, work, rows, length, cancel, deadline, generator, stats, False)

    def _decode(
        self,
        state: DecodeState,
        slot: KVSlot,
        hidden: torch.Tensor,
        position: int,
        cancel: Cancel,
        deadline: float | None,
        generator: torch.Generator | None,
        stats: GenerateStats,
        keep: bool = True,
    ) -> None:
        """Sample, check, feed back, one token per step, until every row has finished."""
        vocab = self.tokenizer.vocab_size
        while True:
            if interrupted(state, cancel, deadline):
                return
            logits = self.step.logits(hidden)  # [rows, V] float32
            next_ids = sample_step(
                state, logits, vocab, self.prefix_index, self.token_bytes, generator
            )
            if state.done():
                return
            hidden = self.step.hidden([[t] for t in next_ids], position, slot.cache)[:, -1]
            stats.decode_forwards += 1
            if keep:
                slot.record((position, position + 1), next_ids[:1], hidden)
            position += 1

    def _choose(
        self, state: DecodeState, logits: torch.Tensor, generator: torch.Generator | None
    ) -> int:
        """The next token of the single row of ``state`` from its logits ``[1, V]``."""
        vocab = self.tokenizer.vocab_size
        return sample_step(state, logits, vocab, self.prefix_index, self.token_bytes, generator)[0]
