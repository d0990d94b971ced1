"""The CodeGen engine: load a model for this machine, then token ids in, continuations out.

:func:`load_engine` resolves the checkpoint (``spec.model`` or the shipped default), picks
device, dtype and quantization, loads weights and tokenizer and reports progress.
:class:`CodeGenEngine.generate` runs one :class:`~codegen_lsp.engine.api.GenerateRequest`:
token healing, the prefix cache (reuse the longest common token prefix, prefill only the
rest), one shared prefill then ``n`` forked rows, and a decode loop that checks the cancel
flag, the time limit, eos and the stop callback at every step.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from pathlib import Path

import torch

from codegen_lsp.codegen.checkpoint import CheckpointError, load_model, resolve
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.engine.api import GenerateRequest, GenerateResult, GenerateStats
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.healing import TokenPrefixIndex, heal
from codegen_lsp.engine.kv_cache import KVSlot, kv_bytes_per_token, plan_blocks
from codegen_lsp.engine.prefix_cache import PrefixCache
from codegen_lsp.engine.quantize import quantize_linears, weight_count
from codegen_lsp.engine.sampling import DecodeState, sample_step
from codegen_lsp.engine.worker import EngineSpec, ProgressFn

MAX_BLOCK = 256  # largest prefill call; also the worst-case recompute after an edit
MIN_CONTEXT = 256  # refuse a cache budget that cannot hold this many positions


class EngineConfigError(ValueError):
    """Settings that cannot work on this machine (unknown dtype, CUDA missing, ...)."""


def _cpu_has_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    capability = torch.backends.cpu.get_cpu_capability()
    return "BF16" in capability.upper() or "AMX" in capability.upper()


def pick_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EngineConfigError(
            f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EngineConfigError(f"device {name!r} was asked for but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise EngineConfigError(f"device {name!r} is not supported (auto, cpu, cuda, cuda:N)")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is bfloat16 on CUDA or a CPU with native bf16, else float32."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if _cpu_has_bf16() else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise EngineConfigError(f"dtype {name!r} is not one of auto, {', '.join(table)}")
    if table[name] == torch.float16 and device.type == "cpu":
        raise EngineConfigError("float16 is not supported on CPU (use bfloat16 or float32)")
    return table[name]


def pick_quantize(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """``auto`` is weight-only int8 on a CPU with bf16 activations, else none."""
    if name not in ("auto", "none", "int8", "int4"):
        raise EngineConfigError(f"quantize {name!r} is not one of auto, none, int8, int4")
    if name == "auto":
        return "int8" if device.type == "cpu" and dtype == torch.bfloat16 else "none"
    if name in ("int8", "int4") and device.type != "cpu":
        raise EngineConfigError(f"{name} weights are implemented for CPU only")
    if name in ("int8", "int4") and dtype != torch.bfloat16:
        raise EngineConfigError(f"{name} weights need bfloat16 activations (set dtype to bfloat16)")
    return name


def model_directory(spec: EngineSpec) -> Path:
    """The checkpoint directory for ``spec``: its model reference or the shipped default."""
    if spec.model:
        return resolve(spec.model, allow_download=spec.allow_download)
    try:
        from codegen_lsp.codegen.default import default_model_dir
    except ImportError:
        raise CheckpointError("no model set and the default model is not installed") from None
    return Path(default_model_dir())


def available_memory(device: torch.device) -> int | None:
    """Bytes free for weights on ``device`` (None when unknown)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_model_fits(
    directory: Path, dtype: torch.dtype, quantize: str, device: torch.device
) -> None:
    """Refuse, with a clear message, a model that cannot fit in memory."""
    try:
        config = CodeGenConfig.from_file(directory)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    d, inner, vocab = config.n_embd, config.inner_dim, config.vocab_size
    weights = 2 * vocab * d + config.n_layer * (4 * d * d + 2 * d * inner)
    itemsize = torch.empty((), dtype=dtype).element_size()
    # int8/int4 keep a dense copy for prefill beside the packed weights
    factor = {"none": 1.0, "int8": 1.5, "int4": 1.25}[quantize]
    need = int(weights * itemsize * factor)
    free = available_memory(device)
    if free is not None and need > free:
        raise EngineConfigError(
            f"{directory.name} needs about {need / 2**30:.1f} GiB of memory on {device} "
            f"({dtype_name(dtype)}{', ' + quantize if quantize != 'none' else ''}) but only "
            f"{free / 2**30:.1f} GiB is available: choose a smaller model or dtype"
        )


def load_engine(spec: EngineSpec, progress: ProgressFn | None = None) -> CodeGenEngine:
    """Load the model ``spec`` names and return an engine ready to generate."""
    report = progress or (lambda _message, _percent: None)
    report("resolving model", 0)
    directory = model_directory(spec)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    quantize = pick_quantize(spec.quantize, device, dtype)
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    check_model_fits(directory, dtype, quantize, device)
    report(f"loading {directory.name} ({dtype_name(dtype)}, {device})", 10)
    try:
        model = load_model(directory, dtype=dtype, device=device)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        raise EngineConfigError(f"{directory.name}: out of memory while loading ({exc})") from None
    report("loading tokenizer", 60)
    tokenizer = CodeGenTokenizer.from_dir(directory)
    head = LogitsHead.for_model(model)  # keeps the unquantized head weights for refinement
    if quantize in ("int8", "int4"):
        report(f"quantizing weights to {quantize}", 70)
        quantize_linears(model, bits=8 if quantize == "int8" else 4)
    engine = CodeGenEngine(
        model,
        tokenizer,
        cache_memory_mb=spec.cache_memory_mb,
        prefix_reuse=spec.prefix_reuse,
        compile=spec.compile,
        name=directory.name,
        quantize=quantize,
        kv_dtype=None if spec.kv_dtype == "auto" else pick_dtype(spec.kv_dtype, device),
        head=head,
    )
    report("warming up", 90)
    engine.warmup()
    report("ready", 100)
    return engine


_INDEXES: weakref.WeakKeyDictionary[CodeGenTokenizer, TokenPrefixIndex] = (
    weakref.WeakKeyDictionary()
)


def prefix_index(tokenizer: CodeGenTokenizer) -> TokenPrefixIndex:
    """The token prefix index of ``tokenizer`` (built once per tokenizer)."""
    index = _INDEXES.get(tokenizer)
    if index is None:
        index = _INDEXES[tokenizer] = TokenPrefixIndex(tokenizer.token_bytes())
    return index


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


class CodeGenEngine:
    """Generation with KV reuse across requests; one instance is owned by one thread."""

    def __init__(
        self,
        model: CodeGenForCausalLM,
        tokenizer: CodeGenTokenizer,
        *,
        cache_memory_mb: float = 512,
        prefix_reuse: bool = True,
        compile: bool = False,
        name: str = "model",
        quantize: str = "none",
        max_block: int = MAX_BLOCK,
        kv_dtype: torch.dtype | None = None,
        head: LogitsHead | None = None,
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
        # CPU attention over a bf16 cache is ~10x slower than over a float32 one
        self.kv_dtype = kv_dtype or (torch.float32 if self.device.type == "cpu" else self.act_dtype)
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
        self._forward = model.transformer
        if compile:
            self._forward = torch.compile(model.transformer, dynamic=True)
        n_params = weight_count(model)
        self.description = (
            f"{name}: CodeGen {n_params / 1e6:.0f}M, {dtype_name(self.act_dtype)}"
            f"{f', {quantize} weights' if quantize != 'none' else ''}, {self.device}, "
            f"{torch.get_num_threads()} threads, context {self.n_ctx}, "
            f"{dtype_name(self.kv_dtype)} KV cache {cache_memory_mb:g} MiB"
            f"{'' if prefix_reuse else ', prefix reuse off'}"
        )

    # --- Engine protocol ------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self.tokenizer.encode(text)

    def decode_text(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self.tokenizer.decode(ids)

    def warmup(self) -> None:
        """Run a short generation so the first real request does not pay for kernel setup."""
        req = GenerateRequest(key="\0warmup", prompt=[self.tokenizer.eos_id] * 3, max_new_tokens=2)
        self.generate(req, threading.Event())
        self.cache.clear()

    @torch.inference_mode()
    def generate(self, req: GenerateRequest, cancel: threading.Event) -> GenerateResult:
        """Continue ``req.prompt``: reuse cached KV, prefill the rest, decode ``req.n`` rows."""
        start = time.perf_counter()
        stats = GenerateStats(prompt_tokens=len(req.prompt))
        if req.n < 1 or req.max_new_tokens < 0:
            raise ValueError(f"bad request: n={req.n}, max_new_tokens={req.max_new_tokens}")
        prompt = list(req.prompt) or [self.tokenizer.bos_id]
        max_new = min(req.max_new_tokens, self.n_ctx - 1)
        if len(prompt) + max_new > self.n_ctx:
            prompt = prompt[len(prompt) + max_new - self.n_ctx :]
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
        elif max_new == 0:
            state.finish_all("length")
        else:
            decode_start = time.perf_counter()
            self._decode_rows(state, slot, len(ids), cancel, deadline)
            stats.decode_ms = (time.perf_counter() - decode_start) * 1000
        result = GenerateResult(
            candidates=state.candidates(self.token_bytes),
            stats=stats,
            cancelled=cancel.is_set(),
        )
        stats.generated_tokens = sum(len(c.token_ids) for c in result.candidates)
        stats.cache_bytes = self.cache.nbytes
        stats.total_ms = (time.perf_counter() - start) * 1000
        return result

    # --- pieces -------------------------------------------------------------------------
    def _prefill(
        self,
        slot: KVSlot,
        ids: list[int],
        reused: int,
        cancel: threading.Event,
        deadline: float | None,
    ) -> torch.Tensor | None:
        """Compute the blocks of ``ids``' plan after ``reused``; the last hidden state [1, E]."""
        for block in plan_blocks(len(ids), self.max_block):
            s, e = block
            if e <= reused:
                continue
            if cancel.is_set() or (deadline is not None and time.perf_counter() > deadline):
                return None
            tokens = torch.tensor([ids[s:e]], device=self.device)  # [1, T]
            positions = torch.arange(s, e, device=self.device)
            hidden = self._forward(tokens, positions, slot.cache)[:, -1]  # [1, E]
            slot.record(block, ids[s:e], hidden)
        return slot.last_hidden()

    def _decode_rows(
        self,
        state: DecodeState,
        slot: KVSlot,
        length: int,
        cancel: threading.Event,
        deadline: float | None,
    ) -> None:
        """Decode every row: in forked rows, as many at a time as the cache budget allows, or
        one after another in the slot itself (always for one row: its tokens stay cached)."""
        generator = None
        if state.seed is not None:
            generator = torch.Generator(device="cpu").manual_seed(state.seed)
        n = len(state.rows)
        need = length + state.max_new
        group = 1 if n == 1 else self.cache.rows_that_fit(need, n)
        if group <= 1:
            # one row at a time in the slot itself (no copy); row 0 last, so the slot keeps
            # the first candidate's tokens for the next keystroke
            for row in reversed(state.rows):
                slot.truncate(length)
                sub = dataclasses.replace(state, rows=[row])
                self._decode(sub, slot, slot.last_hidden(), length, cancel, deadline, generator)
            return
        for first in range(0, n, group):
            sub = dataclasses.replace(state, rows=state.rows[first : first + group])
            with self.cache.scratch(slot, len(sub.rows), need) as work:
                rows = slot.last_hidden().expand(len(sub.rows), -1)  # [rows, E]
                self._decode(sub, work, rows, length, cancel, deadline, generator, keep=False)

    def _decode(
        self,
        state: DecodeState,
        slot: KVSlot,
        hidden: torch.Tensor,
        position: int,
        cancel: threading.Event,
        deadline: float | None,
        generator: torch.Generator | None,
        keep: bool = True,
    ) -> None:
        """Sample, check, feed back, one token per step, until every row has finished."""
        vocab = self.tokenizer.vocab_size
        while True:
            if cancel.is_set():
                state.finish_all("cancelled")
                return
            if deadline is not None and time.perf_counter() > deadline:
                state.finish_all("time")
                return
            logits = self.head(hidden).cpu()  # [rows, V] float32
            next_ids = sample_step(
                state, logits, vocab, self.prefix_index, self.token_bytes, generator
            )
            if state.done():
                return
            tokens = torch.tensor(next_ids, device=self.device)[:, None]  # [rows, 1]
            positions = torch.tensor([position], device=self.device)
            hidden = self._forward(tokens, positions, slot.cache)[:, -1]  # [rows, E]
            if keep:
                slot.record((position, position + 1), next_ids[:1], hidden)
            position += 1
