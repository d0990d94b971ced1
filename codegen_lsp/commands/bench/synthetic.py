"""Random-weight CodeGen checkpoints for tests and benchmarks.

A checkpoint directory is written with :func:`~codegen_lsp.codegen.checkpoint.save_checkpoint`
and a CodeGen tokenizer's files copied beside it, so it loads like a published one. The
shapes of the published models are in :data:`SHAPES`; ``tiny`` is for unit tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from codegen_lsp.codegen.checkpoint import copy_tokenizer_files, save_checkpoint
from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import CodeGenForCausalLM

SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=4, rotary_dim=8, n_positions=512),
    "350M": dict(n_layer=20, n_embd=1024, n_head=16, rotary_dim=32, n_positions=2048),
    "2B": dict(n_layer=32, n_embd=2560, n_head=32, rotary_dim=64, n_positions=2048),
}


def random_model(
    shape: str | dict[str, int] = "tiny",
    vocab_size: int = 51200,
    seed: int = 0,
    std: float = 0.02,
) -> CodeGenForCausalLM:
    """A CodeGen model of a known (or given) shape with random weights."""
    dims: dict[str, Any] = SHAPES[shape] if isinstance(shape, str) else shape  # int fields
    config = CodeGenConfig(vocab_size=vocab_size, **dims)
    model = CodeGenForCausalLM(config)
    model.init_weights(seed=seed, std=std)
    return model.eval()


def copy_tokenizer(source: str | Path, directory: str | Path) -> None:
    """Copy a CodeGen tokenizer's files (those present) from ``source`` to ``directory``."""
    if not copy_tokenizer_files(Path(source), Path(directory)):
        raise FileNotFoundError(f"{source}: no tokenizer files to copy")


def write_checkpoint(
    directory: str | Path,
    tokenizer_dir: str | Path,
    model: CodeGenForCausalLM | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Save ``model`` (default: a tiny random one) with a tokenizer as a checkpoint dir."""
    directory = Path(directory)
    save_checkpoint(model if model is not None else random_model(), directory, dtype=dtype)
    copy_tokenizer(tokenizer_dir, directory)
    return directory
