"""Export a CodeGen checkpoint as GPT-J, the architecture serving engines (vLLM) run natively.

CodeGen is GPT-J with one fused ``qkv_proj`` whose rows are model-parallel shards (4 in
CodeGen1, 8 in CodeGen2-1B/3.7B: the checkpoint's ``qkv_shards``, read as the loader reads it),
each holding that shard's q, v and k rows in that order. Splitting them out gives GPT-J's
``q_proj``, ``k_proj`` and ``v_proj``; every other tensor keeps its name and values, so the
exported model computes the same logits. The export reads and writes one tensor at a time
(safetensors are opened lazily, ``.bin`` files memory-mapped with ``weights_only=True``) and
writes shards of a bounded size, so a 16B checkpoint never sits in memory whole.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from codegen_lsp.codegen.checkpoint import (
    IGNORED_SUFFIXES,
    PYTORCH_BIN,
    PYTORCH_BIN_INDEX,
    SAFETENSORS,
    SAFETENSORS_INDEX,
    CheckpointError,
    copy_tokenizer_files,
    load_bin,
    shard_files,
)
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.modeling import MP_SHARDS, CodeGenForCausalLM
from codegen_lsp.codegen.weights import finite

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# (name, load) for every tensor of a checkpoint, loaded only when ``load()`` is called
Lazy = Iterator[tuple[str, Callable[[], Tensor]]]


def split_qkv(weight: Tensor, shards: int = MP_SHARDS) -> tuple[Tensor, Tensor, Tensor]:
    """q, k and v ``[E, E]`` from a published ``qkv_proj.weight`` ``[3E, E]`` laid out in
    ``shards`` model-parallel shards."""
    out_dim, in_dim = weight.shape
    local = out_dim // (3 * shards)
    parts = weight.reshape(shards, 3, local, in_dim)  # [shard, (q, v, k), local, in]
    q, v, k = (parts[:, i].reshape(in_dim, in_dim).contiguous() for i in range(3))
    return q, k, v


def gptj_config(config: CodeGenConfig, dtype: str) -> dict[str, object]:
    """The ``config.json`` of the exported model (transformers' GPTJConfig field names)."""
    return {
        "architectures": ["GPTJForCausalLM"],
        "model_type": "gptj",
        "vocab_size": config.vocab_size,
        "n_positions": config.n_positions,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "rotary_dim": config.rotary_dims,
        "n_inner": config.n_inner,
        "activation_function": config.activation_function,
        "layer_norm_epsilon": config.layer_norm_epsilon,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "tie_word_embeddings": False,
        "torch_dtype": dtype,
    }


def _lazy_safetensors(files: list[Path]) -> Lazy:
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"{file}: file not found")
        try:
            with safe_open(str(file), framework="pt") as handle:
                for name in handle.keys():  # a safe_open handle, not a dict
                    yield name, partial(handle.get_tensor, name)
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(
                f"{file}: corrupt or truncated safetensors file ({exc})"
            ) from None


def _lazy_bin(files: list[Path]) -> Lazy:
    for file in files:
        state = load_bin(file, mmap=True)
        for name in list(state):
            yield name, partial(state.pop, name)
        del state


def lazy_tensors(directory: Path) -> Lazy:
    """Every tensor of the checkpoint in ``directory``, one at a time."""
    if (directory / SAFETENSORS).exists():
        return _lazy_safetensors([directory / SAFETENSORS])
    if (directory / SAFETENSORS_INDEX).exists():
        return _lazy_safetensors(shard_files(directory / SAFETENSORS_INDEX))
    if (directory / PYTORCH_BIN).exists():
        return _lazy_bin([directory / PYTORCH_BIN])
    if (directory / PYTORCH_BIN_INDEX).exists():
        return _lazy_bin(shard_files(directory / PYTORCH_BIN_INDEX))
    raise CheckpointError(
        f"{directory}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX}, "
        f"{PYTORCH_BIN} or {PYTORCH_BIN_INDEX})"
    )


class _ShardWriter:
    """Collects tensors and writes a safetensors shard whenever ``limit`` bytes are held."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.directory, self.limit = directory, limit
        self.held: dict[str, Tensor] = {}
        self.size = 0
        self.files: list[tuple[str, list[str]]] = []

    def add(self, name: str, tensor: Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self.held and self.size + nbytes > self.limit:
            self.flush()
        self.held[name] = tensor.contiguous()
        self.size += nbytes

    def flush(self) -> None:
        if self.held:
            file = f"part-{len(self.files) + 1:05d}.safetensors"
            save_file(self.held, str(self.directory / file), metadata={"format": "pt"})
            self.files.append((file, list(self.held)))
            self.held, self.size = {}, 0

    def finish(self) -> int:
        """Write the last shard and rename the shards as ``model[-i-of-n].safetensors``."""
        self.flush()
        total = len(self.files)
        weight_map: dict[str, str] = {}
        for i, (file, names) in enumerate(self.files):
            final = SAFETENSORS if total == 1 else f"model-{i + 1:05d}-of-{total:05d}.safetensors"
            (self.directory / file).rename(self.directory / final)
            weight_map.update(dict.fromkeys(names, final))
        if total > 1:
            index = {"metadata": {}, "weight_map": weight_map}
            (self.directory / SAFETENSORS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
        return total


def _convert(
    source: Path,
    config: CodeGenConfig,
    expected: dict[str, tuple[int, ...]],
    dtype: str,
    writer: _ShardWriter,
) -> set[torch.dtype]:
    """Check, convert and write every tensor; the dtypes the source had."""
    seen: set[str] = set()
    dtypes: set[torch.dtype] = set()
    embedding: Tensor | None = None
    for name, load in lazy_tensors(source):
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if name not in expected:
            raise CheckpointError(f"{source}: unexpected weight {name} for this config")
        tensor = load()
        if tuple(tensor.shape) != expected[name] or not tensor.is_floating_point():
            raise CheckpointError(
                f"{source}: {name} is {tuple(tensor.shape)} {tensor.dtype}, "
                f"the config implies {expected[name]} floating point"
            )
        if tensor.is_floating_point() and not finite(tensor):
            raise CheckpointError(
                f"{source}: {name} holds NaN or infinite values: the checkpoint is broken "
                "(download or export it again)"
            )
        dtypes.add(tensor.dtype)
        tensor = tensor if dtype == "keep" else tensor.to(_DTYPES[dtype])
        seen.add(name)
        if name.endswith("attn.qkv_proj.weight"):
            stem = name.removesuffix("qkv_proj.weight")
            for part, value in zip("qkv", split_qkv(tensor, config.qkv_shards), strict=True):
                writer.add(f"{stem}{part}_proj.weight", value)
        else:
            writer.add(name, tensor)
        if name == "transformer.wte.weight":
            embedding = tensor
    if config.tie_word_embeddings and "lm_head.weight" not in seen and embedding is not None:
        writer.add("lm_head.weight", embedding.clone())  # GPT-J's head is never tied
        seen.add("lm_head.weight")
    if "lm_head.bias" not in seen and "lm_head.weight" in seen:
        bias_dtype = embedding_dtype(dtypes) if dtype == "keep" else _DTYPES[dtype]
        writer.add("lm_head.bias", torch.zeros(config.vocab_size, dtype=bias_dtype))
        seen.add("lm_head.bias")
    missing = sorted(set(expected) - seen)
    if missing:
        raise CheckpointError(f"{source}: missing weights: {', '.join(missing[:5])}")
    return dtypes


def embedding_dtype(dtypes: set[torch.dtype]) -> torch.dtype:
    """The dtype of the source's tensors (float32 when they are mixed)."""
    return next(iter(dtypes)) if len(dtypes) == 1 else torch.float32


def export_gptj(
    source: Path,
    target: Path,
    dtype: str = "keep",
    shard_mb: int = 4096,
    qkv_shards: int | None = None,
) -> dict[str, object]:
    """Write the CodeGen checkpoint in ``source`` to ``target`` as GPT-J; a summary.
    ``qkv_shards`` overrides the checkpoint's own qkv shard count, as in ``load_model``."""
    if dtype != "keep" and dtype not in _DTYPES:
        raise CheckpointError(f"dtype {dtype!r}: expected keep, {', '.join(_DTYPES)}")
    try:
        config = CodeGenConfig.from_file(source / "config.json", qkv_shards=qkv_shards)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if target.exists() and any(target.iterdir()):
        raise CheckpointError(f"{target}: exists and is not empty (choose a new directory)")
    if not (source / "tokenizer.json").is_file() and not (source / "vocab.json").is_file():
        raise CheckpointError(f"{source}: no tokenizer (tokenizer.json or vocab.json) to export")
    with torch.device("meta"):
        expected = {n: tuple(p.shape) for n, p in CodeGenForCausalLM(config).state_dict().items()}
    target.mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(target, max(1, shard_mb) << 20)
    try:
        dtypes = _convert(source, config, expected, dtype, writer)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    shards = writer.finish()
    kept = str(embedding_dtype(dtypes)).removeprefix("torch.")
    out_dtype = kept if dtype == "keep" else dtype
    (target / "config.json").write_text(json.dumps(gptj_config(config, out_dtype), indent=2))
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id}
    try:  # keep what the source says about file starts (see engine/loader.py)
        source_generation = json.loads((source / "generation_config.json").read_text())
        if isinstance(source_generation, dict) and "file_start_bos" in source_generation:
            generation["file_start_bos"] = source_generation["file_start_bos"]
    except (OSError, ValueError):
        pass
    (target / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    if "tokenizer_config.json" not in copy_tokenizer_files(
        source, target
    ):  # a tokenizer.json alone: say what it is
        eos = "<|endoftext|>"
        tok_config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": eos,
            "eos_token": eos,
            "unk_token": eos,
            "model_max_length": config.n_positions,
        }
        (target / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    return {
        "shards": shards,
        "dtype": out_dtype,
        "target": str(target),
        "qkv_shards": config.qkv_shards,
    }
