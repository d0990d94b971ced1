"""Loading: an :class:`~codegen_lsp.engine.api.EngineSpec` in, a ready local engine out.

:func:`load_engine` resolves the checkpoint (the spec's model or the shipped default: the
one place that knows where that lives), picks device, dtype and weight format for this
machine, checks that it fits, loads weights (quantizing each linear layer as soon as it is
read, so no full-precision copy of the model is ever held; see ``docs/memory.md``) and the
tokenizer, warms up and reports progress. :func:`model_info` reads what kind of CodeGen a
checkpoint is, as data.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from codegen_lsp.codegen.checkpoint import CheckpointError, LinearHook, load_model, resolve
from codegen_lsp.codegen.default import default_model_dir
from codegen_lsp.codegen.download import DownloadState
from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.engine import kernels
from codegen_lsp.engine.api import EngineSpec, ModelInfo, ProgressFn
from codegen_lsp.engine.draft import same_vocabulary
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.machine import (
    EngineConfigError,
    check_fits,
    dtype_name,
    pick_device,
    pick_dtype,
    pick_quantize,
    release_freed_memory,
)
from codegen_lsp.engine.quantize import (
    act_dtype_for,
    quantized_layer,
    weight_count,
    weight_nbytes,
)
from codegen_lsp.engine.remote import RemoteEngine
from codegen_lsp.engine.selfcheck import check_quantized
from codegen_lsp.engine.weight_cache import WeightCache
from codegen_lsp.engine.weight_files import machine_id, read_rows_verdict, write_rows_verdict

DOWNLOAD_SHARE = 80  # percent of a load's progress bar taken by a download before it
# Salesforce/codegen-350M-mono, models--Salesforce--codegen2-1B, codegen-2B-multi ...
_PUBLISHED = re.compile(r"(codegen2?)-(\d+(?:_\d+)?[MB])(?:-(mono|multi|nl))?", re.IGNORECASE)

log = logging.getLogger(__name__)
KV_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}


def shipped_model_dir() -> Path:
    """The shipped default checkpoint; a clear error when the package lacks it."""
    directory = default_model_dir()
    if not (directory / "config.json").is_file():
        raise CheckpointError(f"no model set and the default model is not installed ({directory})")
    return directory


def model_directory(spec: EngineSpec, progress: ProgressFn | None = None) -> Path:
    """The checkpoint directory for ``spec``: its model reference or the shipped default. A
    download (``allowDownload``) reports through ``progress``, which may raise
    :class:`~codegen_lsp.codegen.download.Cancelled` to stop it (the part stays for later)."""
    if spec.model:
        steps = progress if isinstance(progress, LoadSteps) else LoadSteps(progress)
        download_progress = steps.download(spec.model) if progress is not None else None
        return resolve(spec.model, spec.allow_download, progress=download_progress)
    return shipped_model_dir()


class LoadSteps:
    """A load's progress: a download, when one comes first, takes the first
    :data:`DOWNLOAD_SHARE` percent of the bar (bytes and percent in the message), and the
    load's own steps share the rest, so the percentage only ever rises."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress or (lambda _message, _percent: None)
        self.floor = 0

    def __call__(self, message: str, percent: int) -> None:
        self.progress(message, self.floor + percent * (100 - self.floor) // 100)

    def download(self, name: str) -> Callable[[DownloadState], None]:
        """The progress callback of ``name``'s download."""

        def on_download(state: DownloadState) -> None:
            self.floor = state.percent * DOWNLOAD_SHARE // 100
            note = f" ({state.note})" if state.note not in ("", "done", "cached") else ""
            self.progress(f"downloading {name}: {state.describe()}{note}", self.floor)

        return on_download


def model_info(
    directory: Path, parameters: int = 0, fim: tuple[int, int, int] | None = None
) -> ModelInfo:
    """Family and training data of the checkpoint in ``directory``, from its config's
    ``_name_or_path`` or its path (hub cache folders carry the published name)."""
    if directory.resolve() == default_model_dir().resolve():
        return ModelInfo(directory.name, "codegen", "mono", parameters, fim)  # trained on Python
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        named = str(config.get("_name_or_path", "")) if isinstance(config, dict) else ""
    except (OSError, UnicodeDecodeError, ValueError):
        named = ""
    for text in (named, *reversed(directory.parts)):
        found = _PUBLISHED.search(text)
        if found:
            family, data = found.group(1).lower(), (found.group(3) or "").lower()
            return ModelInfo(directory.name, family, data, parameters, fim)
    return ModelInfo(directory.name, "codegen2" if fim else "codegen", "", parameters, fim)


def starts_files_with_bos(directory: Path) -> bool:
    """Whether the checkpoint was trained with ``<|endoftext|>`` before each file, so a prompt
    at a file's start should begin with it: ``"file_start_bos": true`` in its
    ``generation_config.json`` (the shipped model says so; published CodeGen checkpoints do
    not, and get what transformers gives them: the text's ids alone)."""
    try:
        config = json.loads((directory / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(config, dict) and config.get("file_start_bos") is True


def file_start_id(spec: EngineSpec, directory: Path, tokenizer: CodeGenTokenizer) -> int | None:
    """The id a prompt at a file's start begins with, or None: as the spec says, else as the
    checkpoint says (:func:`starts_files_with_bos`)."""
    wanted = spec.file_start_bos
    if wanted is None:
        wanted = starts_files_with_bos(directory)
    return tokenizer.bos_id if wanted else None


def load_remote(spec: EngineSpec, progress: ProgressFn | None = None) -> RemoteEngine:
    """A remote engine for ``spec.endpoint``: tokenizer and config from ``spec.model`` (or
    the shipped model), no weights. An endpoint that is down does not fail the load: the
    engine reports it in its health and keeps trying."""
    report = LoadSteps(progress)
    report("resolving tokenizer", 0)
    directory = model_directory(spec, report)
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        n_positions = int(config.get("n_positions") or config.get("n_ctx") or 2048)
        vocab_size = int(config.get("vocab_size") or 0)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{directory / 'config.json'}: cannot read ({exc})") from None
    tokenizer = CodeGenTokenizer.from_dir(directory)
    try:
        engine = RemoteEngine(
            spec,
            tokenizer,
            model_info(directory, fim=tokenizer.fim_ids()),
            n_positions,
            max(vocab_size, 0),
        )
    except ValueError as exc:
        raise EngineConfigError(str(exc)) from None
    engine.bos_id = file_start_id(spec, directory, tokenizer)
    report(f"connecting to {engine.client.url}", 50)
    engine.connect()
    report("ready" if engine.health().ok else "endpoint not reachable yet", 100)
    return engine


def load_engine(
    spec: EngineSpec, progress: ProgressFn | None = None
) -> CodeGenEngine | RemoteEngine:
    """Load the model ``spec`` names and return an engine ready to generate (a remote one
    when ``spec.endpoint`` is set)."""
    if spec.endpoint:
        return load_remote(spec, progress)
    report = LoadSteps(progress)
    report("resolving model", 0)
    directory = model_directory(spec, report)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    quantize = pick_quantize(spec.quantize, device, dtype)
    if spec.threads > 0:
        torch.set_num_threads(spec.threads)
    kernels.set_threads(kernels.default_threads())  # the threads a native call is shared among
    report("checking memory", 5)
    name = spec.model or "the default model"
    check_fits(
        directory,
        name,
        dtype,
        quantize,
        device,
        spec.cache_memory_mb,
        spec.memory_limit_mb,
        spec.dense_prefill,
    )
    packed = f", {quantize} weights, {kernels.describe()}" if quantize != "none" else ""
    report(f"loading {directory.name} ({dtype_name(dtype)}{packed}, {device})", 10)
    layers: dict[str, nn.Module] = {}  # the unquantized head, kept for refinement
    cache = cached_weights(directory, spec, quantize, dtype, device)
    model = cache.load(layers) if cache is not None else None
    if model is None:
        hook = (
            None
            if quantize == "none"
            else quantize_on_load(quantize, dtype, spec.dense_prefill, layers)
        )
        try:
            model = load_model(
                directory,
                dtype=dtype,
                device=device,
                on_linear=hook,
                qkv_shards=spec.qkv_shards or None,  # 0: the checkpoint's own count
            )
        except (MemoryError, torch.OutOfMemoryError) as exc:
            raise EngineConfigError(
                f"{directory.name}: out of memory while loading ({exc})"
            ) from None
    for note in check_quantized(model) if quantize != "none" else []:
        log.warning("%s: %s", directory.name, note)
    report("loading tokenizer", 60)
    tokenizer = CodeGenTokenizer.from_dir(directory)
    head_layer = layers.get("lm_head", model.lm_head)
    head = LogitsHead.for_layers(model.lm_head, head_layer)
    del layers
    release_freed_memory()
    engine = CodeGenEngine(
        model,
        tokenizer,
        info=replace(
            model_info(directory, weight_count(model), tokenizer.fim_ids()),
            weight_bytes=weight_nbytes(model, head.weight, head.bias),
        ),
        cache_memory_mb=spec.cache_memory_mb,
        prefix_reuse=spec.prefix_reuse,
        compile=spec.compile,
        quantize=quantize,
        kv_dtype=KV_DTYPES.get(spec.kv_dtype),  # auto: None, the engine's choice
        head=head,
        cold_start_ms=spec.cold_start_ms,
    )
    engine.bos_id = file_start_id(spec, directory, tokenizer)
    if spec.draft_model:
        report(f"loading the draft model {spec.draft_model}", 80)
        engine.draft = load_draft(spec, engine)
    # the speculation row check (seconds; 20 s for a 2B model) is kept with the weight cache
    machine = f"{machine_id()}; {kernels.describe()}; {torch.get_num_threads()} threads"
    if cache is not None and cache.hit:
        verdict = read_rows_verdict(cache.root, cache.key, machine)
        if verdict is not None:
            engine.settle_rows(verdict)
    report("warming up", 90)
    engine.warmup()
    if cache is not None and engine.rows_verdict is not None:
        write_rows_verdict(cache.root, cache.key, machine, engine.rows_verdict)
    release_freed_memory()
    report("ready", 100)
    if cache is not None and not cache.hit:  # written after ready: the first start pays nothing
        cache.save_in_background(model, head_layer)
    return engine


def cached_weights(
    directory: Path, spec: EngineSpec, quantize: str, dtype: torch.dtype, device: torch.device
) -> WeightCache | None:
    """The weight-cache entry for this load (quantized CPU weights only), or None."""
    if quantize == "none" or device.type != "cpu":
        return None
    return WeightCache.for_load(
        directory, quantize, dtype, spec.dense_prefill, spec.qkv_shards or None
    )


def load_draft(spec: EngineSpec, target: CodeGenEngine) -> CodeGenEngine:
    """The ``draftModel`` engine: the target's device, dtype and weights, a quarter of its
    cache budget (64 MiB at least); its tokenizer must give every id the target's bytes."""
    draft_spec = replace(
        spec,
        model=spec.draft_model,
        draft_model="",
        cache_memory_mb=max(64, spec.cache_memory_mb // 4),
        memory_limit_mb=0,
    )
    try:
        draft = load_engine(draft_spec)
    except (CheckpointError, EngineConfigError) as exc:
        raise EngineConfigError(f"draftModel {spec.draft_model}: {exc}") from None
    assert isinstance(draft, CodeGenEngine)
    why = same_vocabulary(target.token_bytes, draft.token_bytes)
    if why:
        raise EngineConfigError(
            f"draftModel {spec.draft_model} cannot draft for this model: {why} "
            "(it needs the same tokenizer, as the CodeGen mono/multi sizes share)"
        )
    return draft


def quantize_on_load(
    quantize: str, dtype: torch.dtype, dense_prefill: bool, kept: dict[str, nn.Module]
) -> LinearHook:
    """The hook that quantizes each linear layer as soon as it is loaded (so its
    full-precision weights are freed before the next one is read); keeps the head's."""
    bits, act_dtype = (8 if quantize == "int8" else 4), act_dtype_for(dtype)

    def hook(name: str, linear: nn.Linear) -> nn.Module:
        release_freed_memory()  # the layer before this one (freed tensors stay otherwise)
        if name == "lm_head":
            kept[name] = linear
        return quantized_layer(
            linear, bits, act_dtype, keep_dense=dense_prefill, is_head=name == "lm_head"
        )

    return hook
