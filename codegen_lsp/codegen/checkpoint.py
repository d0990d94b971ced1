"""Find and load CodeGen checkpoints; write them in the published layout.

A model reference is a local directory, or a hub id such as ``Salesforce/codegen-350M-mono``
resolved from the local Hugging Face cache (downloaded only when the caller allows it).
Weights come from ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``)
or ``pytorch_model.bin`` (read with ``weights_only=True``; never unpickled otherwise). Every
failure is one :class:`CheckpointError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.modeling import CodeGenForCausalLM, qkv_from_hf, qkv_to_hf

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


class CheckpointError(ValueError):
    """A checkpoint that cannot be found or loaded; the message names the file and problem."""


def is_hub_id(ref: str) -> bool:
    """True for ``owner/name`` references that are not an existing local path."""
    if os.path.exists(os.path.expanduser(ref)):
        return False
    parts = ref.split("/")
    return (
        len(parts) == 2 and all(parts) and not ref.startswith((".", "~", "/")) and "\\" not in ref
    )


def resolve(ref: str | os.PathLike[str], allow_download: bool = False) -> Path:
    """Turn a model reference into a local checkpoint directory."""
    text = os.fspath(ref)
    path = Path(os.path.expanduser(text))
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{path}: expected a checkpoint directory, found a file")
    if not is_hub_id(text):
        raise CheckpointError(f"{path}: model directory not found")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with tokenizers
        raise CheckpointError(f"{text}: huggingface_hub is not installed") from None
    patterns = ["*.json", "*.safetensors", "*.txt", "*.bin"]
    try:
        return Path(snapshot_download(text, allow_patterns=patterns, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any cache miss is reported the same way
        if not allow_download:
            raise CheckpointError(
                f"{text}: not found as a local directory or in the Hugging Face cache; "
                "downloads are off (enable allowDownload / --allow-download to fetch it)"
            ) from None
        cause = exc
    try:
        return Path(snapshot_download(text, allow_patterns=patterns))
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{text}: download failed: {exc} (cache lookup: {cause})") from None


def _load_safetensors(file: Path) -> dict[str, Tensor]:
    if not file.is_file():
        raise CheckpointError(f"{file}: file not found")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({exc})") from None


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


def read_state_dict(directory: Path) -> tuple[dict[str, Tensor], Path]:
    """All tensors of a checkpoint directory, and the file (or index) they came from."""
    candidates: list[tuple[Path, list[Path], bool]] = []
    if (directory / SAFETENSORS).exists():
        candidates.append((directory / SAFETENSORS, [directory / SAFETENSORS], True))
    elif (directory / SAFETENSORS_INDEX).exists():
        index = directory / SAFETENSORS_INDEX
        candidates.append((index, shard_files(index), True))
    elif (directory / PYTORCH_BIN).exists():
        candidates.append((directory / PYTORCH_BIN, [directory / PYTORCH_BIN], False))
    elif (directory / PYTORCH_BIN_INDEX).exists():
        index = directory / PYTORCH_BIN_INDEX
        candidates.append((index, shard_files(index), False))
    if not candidates:
        raise CheckpointError(
            f"{directory}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX} "
            f"or {PYTORCH_BIN})"
        )
    source, files, is_safetensors = candidates[0]
    state: dict[str, Tensor] = {}
    for file in files:
        state.update(_load_safetensors(file) if is_safetensors else load_bin(file))
    return state, source


def _check_and_convert(
    state: dict[str, Tensor], model: CodeGenForCausalLM, source: Path
) -> dict[str, Tensor]:
    expected = {name: p.shape for name, p in model.state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith(IGNORED_SUFFIXES)}
    if "lm_head.weight" not in state and model.config.tie_word_embeddings:
        state["lm_head.weight"] = state.get("transformer.wte.weight", torch.empty(0))
        state.setdefault("lm_head.bias", torch.zeros(model.config.vocab_size))
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{source}: missing weights: {_short(missing)}")
    if unexpected:
        raise CheckpointError(f"{source}: unexpected weights: {_short(unexpected)}")
    for name, shape in expected.items():
        if tuple(state[name].shape) != tuple(shape):
            raise CheckpointError(
                f"{source}: {name} has shape {tuple(state[name].shape)}, "
                f"the config implies {tuple(shape)}"
            )
        if not state[name].is_floating_point():
            raise CheckpointError(f"{source}: {name} has dtype {state[name].dtype}")
    return {
        k: qkv_from_hf(v) if k.endswith("attn.qkv_proj.weight") else v for k, v in state.items()
    }


def _short(names: Iterable[str]) -> str:
    names = list(names)
    more = f" (and {len(names) - 5} more)" if len(names) > 5 else ""
    return ", ".join(names[:5]) + more


def load_model(
    directory: str | os.PathLike[str],
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> CodeGenForCausalLM:
    """Load a CodeGen checkpoint directory into :class:`CodeGenForCausalLM` (eval mode)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: model directory not found")
    try:
        config = CodeGenConfig.from_file(directory / "config.json")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    state, source = read_state_dict(directory)
    with torch.device("meta"):
        model = CodeGenForCausalLM(config)
    state = _check_and_convert(state, model, source)
    state = {k: v.to(dtype=dtype, device=device) for k, v in state.items()}
    model.load_state_dict(state, assign=True)
    return model.eval()


def hf_state_dict(model: CodeGenForCausalLM) -> dict[str, Tensor]:
    """The model's weights in the published layout (shard-ordered qkv)."""
    return {
        k: (qkv_to_hf(v) if k.endswith("attn.qkv_proj.weight") else v).detach().contiguous()
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
