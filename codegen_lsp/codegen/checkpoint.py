"""Find and load CodeGen checkpoints; write them in the published layout.

A model reference is a local directory, or a hub id such as ``Salesforce/codegen-350M-mono``
resolved from the local Hugging Face cache (downloaded only when the caller allows it).
Weights come from ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``)
or ``pytorch_model.bin`` (read with ``weights_only=True``; never unpickled otherwise), one
tensor at a time straight into the final dtype (:mod:`codegen_lsp.codegen.weights`), into a
model built on the meta device; names, shapes and dtypes are checked before any data is read.
Every failure is one :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.download import PATTERNS as HUB_PATTERNS
from codegen_lsp.codegen.download import DownloadError, ProgressCallback, download
from codegen_lsp.codegen.locate import CheckpointError, check_local
from codegen_lsp.codegen.modeling import CodeGenForCausalLM, qkv_to_hf
from codegen_lsp.codegen.weights import (
    TensorEntry,
    WeightFileError,
    WeightFiles,
    bin_entries,
    safetensors_entries,
)

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_BIN = "pytorch_model.bin"
PYTORCH_BIN_INDEX = "pytorch_model.bin.index.json"
# Buffers some published checkpoints carry; they are recomputed, never loaded.
IGNORED_SUFFIXES = ("attn.causal_mask", "attn.masked_bias", "attn.bias")
# Files a CodeGen tokenizer may consist of (those present travel with a checkpoint).
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
)


def resolve(
    ref: str | os.PathLike[str],
    allow_download: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Path:
    """Turn a model reference into a local checkpoint directory; a hub id missing from the
    cache is downloaded when allowed (:mod:`codegen_lsp.codegen.download`: ``progress`` gets
    bytes and percent, ``cancel`` stops it, the partial file stays for a later resume)."""
    text = os.fspath(ref)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return path
    check_local(text)  # a missing path or a file: one message with what a model folder holds
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with tokenizers
        raise CheckpointError(f"{text}: huggingface_hub is not installed") from None
    # modeling_*.py: read as text for its qkv shard count (config.qkv_shards_of), never run
    patterns = list(HUB_PATTERNS)
    try:
        return Path(snapshot_download(text, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - any cache miss is reported the same way
        if not allow_download:
            raise CheckpointError(
                f"{text}: not found as a local directory or in the Hugging Face cache; "
                "downloads are off (enable allowDownload / --allow-download to fetch it, "
                f"or run: codegen-lsp pull {text})"
            ) from None
    try:
        return download(text, progress=progress, cancel=cancel)
    except DownloadError as exc:
        raise CheckpointError(str(exc)) from None


def copy_tokenizer_files(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer files present in ``source`` to ``target``; their names."""
    copied = [name for name in TOKENIZER_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copyfile(source / name, target / name)
    return copied


def load_bin(file: Path, mmap: bool = False) -> dict[str, Tensor]:
    """A ``.bin`` state dict, read with ``weights_only=True`` (memory-mapped with ``mmap``,
    where the file's format allows it)."""
    if not file.is_file():
        raise CheckpointError(f"{file}: file not found")
    try:
        try:
            data = torch.load(str(file), map_location="cpu", weights_only=True, mmap=mmap or None)
        except RuntimeError:
            if not mmap:
                raise
            return load_bin(file)  # an old (non-zip) file cannot be mapped: read it whole
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad pickles
        raise CheckpointError(
            f"{file}: cannot read as a weights-only PyTorch checkpoint ({exc})"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file}: expected a state dict, found {type(data).__name__}")
    return data


def shard_files(index_file: Path) -> list[Path]:
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
        names = sorted(set(index["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index_file}: invalid shard index ({exc})") from None
    return [index_file.parent / name for name in names]


def open_weights(directory: Path) -> tuple[WeightFiles, Path]:
    """The tensors of a checkpoint directory, listed but not read, and the file (or index)
    they come from."""
    if (directory / SAFETENSORS).exists():
        source, files, is_safetensors = directory / SAFETENSORS, [directory / SAFETENSORS], True
    elif (directory / SAFETENSORS_INDEX).exists():
        source = directory / SAFETENSORS_INDEX
        files, is_safetensors = shard_files(source), True
    elif (directory / PYTORCH_BIN).exists():
        source, files, is_safetensors = directory / PYTORCH_BIN, [directory / PYTORCH_BIN], False
    elif (directory / PYTORCH_BIN_INDEX).exists():
        source = directory / PYTORCH_BIN_INDEX
        files, is_safetensors = shard_files(source), False
    else:
        raise CheckpointError(
            f"{directory}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX} "
            f"or {PYTORCH_BIN})"
        )
    entries: dict[str, TensorEntry] = {}
    bins: dict[Path, dict[str, Tensor]] = {}
    for file in files:
        if is_safetensors:
            try:
                entries.update(safetensors_entries(file))
            except WeightFileError as exc:
                raise CheckpointError(str(exc)) from None
        else:
            bins[file] = load_bin(file, mmap=True)
            entries.update(bin_entries(file, bins[file]))
    return WeightFiles(entries, bins), source


def qkv_blocks(shards: int) -> list[int]:
    """:func:`~codegen_lsp.codegen.modeling.qkv_from_hf` as a block order for reading:
    published qkv rows are ``[shard, (q, v, k), rows]``; block ``i`` of plain q|k|v rows
    (``[(q, k, v), shard, rows]``) is the published block ``qkv_blocks(shards)[i]``."""
    return [shard * 3 + part for part in (0, 2, 1) for shard in range(shards)]


# how a parameter is filled: a tensor's name in the checkpoint, or "" for zeros
Plan = dict[str, str]


def _plan(weights: WeightFiles, model: CodeGenForCausalLM, source: Path) -> Plan:
    """Check names, shapes and dtypes against the model before any data is read; where each
    parameter comes from."""
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    present = {k: v for k, v in weights.entries.items() if not k.endswith(IGNORED_SUFFIXES)}
    plan = {name: name for name in present}
    tied = model.config.tie_word_embeddings and "transformer.wte.weight" in present
    if "lm_head.weight" not in present and tied:
        plan["lm_head.weight"] = "transformer.wte.weight"
        plan.setdefault("lm_head.bias", "")
    missing = sorted(set(expected) - set(plan))
    unexpected = sorted(set(plan) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing weights: {_short(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected weights: {_short(unexpected)}")
    for name, shape in expected.items():
        if not plan[name]:
            continue
        entry = weights.entries[plan[name]]
        if entry.shape != shape:
            raise CheckpointError(
                f"{source}: {name} has shape {entry.shape}, the config implies {shape}"
            )
        if not isinstance(entry.dtype, torch.dtype) or not entry.dtype.is_floating_point:
            raise CheckpointError(f"{source}: {name} has dtype {entry.dtype}")
    return plan


def _short(names: Iterable[str]) -> str:
    names = list(names)
    more = f" (and {len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


class _SkipInit(TorchFunctionMode):
    """Module constructors skip their random initialisation (every weight is loaded next).
    On the meta device ``normal_`` would run torch's Python meta kernels, whose first use
    imports ~800 modules (sympy among them, ~65 MB resident) for nothing."""

    INIT = frozenset({"normal_", "uniform_", "kaiming_uniform_", "fill_", "zero_"})

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in self.INIT:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


# called once a Linear layer's weights are loaded: a module to put in its place, or None
LinearHook = Callable[[str, nn.Linear], "nn.Module | None"]


def load_model(
    directory: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    on_linear: LinearHook | None = None,
    qkv_shards: int | None = None,
) -> CodeGenForCausalLM:
    """Load a CodeGen checkpoint directory into :class:`CodeGenForCausalLM` (eval mode).

    The model is built on the meta device and filled one tensor at a time, each read straight
    into ``dtype``; ``on_linear(name, layer)`` (for example a quantizer) sees every
    ``nn.Linear`` as soon as its weights are in, before the next layer is read, and may
    return a module to put in its place, so the full-precision layer is freed at once.
    ``qkv_shards`` overrides the checkpoint's own qkv shard count (``config.qkv_shards_of``).
    A tensor holding NaN or infinity is refused, naming it (checked as it is read)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found")
    try:
        config = CodeGenConfig.from_file(directory / "config.json", qkv_shards=qkv_shards)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    weights, source = open_weights(directory)
    with torch.device("meta"), _SkipInit():
        model = CodeGenForCausalLM(config)
    with weights:
        plan = _plan(weights, model, source)
        # by name: holding the modules would keep a replaced layer's weights alive
        for module_name in [name for name, _ in model.named_modules()]:
            module = model.get_submodule(module_name)
            prefix = f"{module_name}." if module_name else ""
            for pname, param in list(module.named_parameters(recurse=False)):
                tensor = _fill(weights, model, plan[prefix + pname], prefix + pname, param, dtype)
                module.register_parameter(pname, nn.Parameter(tensor.to(device)))
            if on_linear is not None and isinstance(module, nn.Linear):
                replacement = on_linear(module_name, module)
                if replacement is not None:
                    parent, _, child = module_name.rpartition(".")
                    setattr(model.get_submodule(parent), child, replacement)
    return model.eval()


def _fill(
    weights: WeightFiles,
    model: CodeGenForCausalLM,
    key: str,
    name: str,
    param: Tensor,
    dtype: torch.dtype,
) -> Tensor:
    """The tensor for parameter ``name``: read from ``key`` (qkv rows permuted), shared with
    a parameter loaded before it (a tied head), or zeros (a tied head's bias)."""
    if not key:
        return torch.zeros(param.shape, dtype=dtype)
    if key != name:
        return model.get_parameter(key).detach()
    shards = model.config.qkv_shards
    blocks = qkv_blocks(shards) if name.endswith("attn.qkv_proj.weight") else None
    try:
        return weights.read(key, dtype, blocks)
    except WeightFileError as exc:
        raise CheckpointError(str(exc)) from None


def hf_state_dict(model: CodeGenForCausalLM) -> dict[str, Tensor]:
    """The model's weights in the published layout (qkv rows in ``config.qkv_shards``
    shards, which ``save_checkpoint`` records in ``config.json``)."""
    shards = model.config.qkv_shards
    return {
        k: (qkv_to_hf(v, shards) if k.endswith("attn.qkv_proj.weight") else v).detach().contiguous()
        for k, v in model.state_dict().items()
    }


def save_checkpoint(
    model: CodeGenForCausalLM,
    directory: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
    fmt: str = "safetensors",
    shards: int = 1,
) -> Path:
    """Write ``config.json`` and weights (``safetensors``, sharded, or ``bin``) to a directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    state = hf_state_dict(model)
    if dtype is not None:
        state = {k: v.to(dtype) for k, v in state.items()}
        config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if fmt == "bin":
        torch.save(state, directory / PYTORCH_BIN)
        return directory
    if fmt != "safetensors":
        raise ValueError(f"unknown checkpoint format {fmt!r}")
    if shards <= 1:
        save_file(state, str(directory / SAFETENSORS), metadata={"format": "pt"})
        return directory
    names = list(state)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        part = names[i::shards]
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in part}, str(directory / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    index = {"metadata": {}, "weight_map": weight_map}
    (directory / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return directory
