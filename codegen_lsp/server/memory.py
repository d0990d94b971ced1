"""Will the model fit? A check before the weights are read, with a message that says why not.

The model's size is known from its ``config.json`` alone (the parameters of a model built on
the ``meta`` device, times the bytes of the dtype it will be loaded in), so a model that
cannot fit is refused in milliseconds instead of failing half-way through a load (or
being killed by the kernel). Two limits apply:

- ``memoryLimitMB`` (0: none): the weights plus the KV cache budget (``cacheMemoryMB``)
  must fit in it;
- the memory the machine has free: ``MemAvailable`` of ``/proc/meminfo`` on CPU, free
  device memory on CUDA, must hold the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from codegen_lsp.codegen.checkpoint import CheckpointError
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.engine.engine import model_directory, pick_device, pick_dtype
from codegen_lsp.engine.worker import EngineSpec

MIB = 2**20


class ModelTooLarge(RuntimeError):
    """The model does not fit the memory limit or the memory the machine has free."""


def weight_bytes(directory: Path, dtype: torch.dtype) -> int:
    """Bytes of the model's weights in ``dtype``, from its config alone."""
    try:
        config = CodeGenConfig.from_file(directory / "config.json")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    with torch.device("meta"):
        model = CodeGenForCausalLM(config)
    element = torch.empty((), dtype=dtype, device="meta").element_size()
    return sum(p.numel() for p in model.parameters()) * element


def available_bytes(device: torch.device) -> int | None:
    """Memory free for a new model on ``device``; None when it cannot be told."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError, ValueError):
            return None
        return int(free)
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_fits(spec: EngineSpec, limit_mb: int) -> None:
    """Raise :class:`ModelTooLarge` if the model of ``spec`` cannot fit."""
    directory = model_directory(spec)
    device = pick_device(spec.device)
    dtype = pick_dtype(spec.dtype, device)
    weights = weight_bytes(directory, dtype)
    name = spec.model or "the default model"
    dtype_name = str(dtype).removeprefix("torch.")
    need = f"its weights take {weights / MIB:.0f} MiB in {dtype_name}"
    if limit_mb > 0:
        total = weights + spec.cache_memory_mb * MIB
        if total > limit_mb * MIB:
            raise ModelTooLarge(
                f"{name} does not fit in memoryLimitMB={limit_mb}: {need} and the KV cache "
                f"budget (cacheMemoryMB) is {spec.cache_memory_mb} MiB, {total / MIB:.0f} MiB "
                "in all (raise memoryLimitMB, lower cacheMemoryMB, or pick a smaller model "
                "or dtype)"
            )
    free = available_bytes(device)
    if free is not None and weights > free:
        raise ModelTooLarge(
            f"not enough memory for {name} on {device}: {need} but only "
            f"{free / MIB:.0f} MiB are free (pick a smaller model or dtype)"
        )
