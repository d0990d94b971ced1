"""This machine: which device, dtype and weight format to run on, and will the model fit.

The choices of ``auto`` settings live here (bf16 and int8 only on CPUs that multiply bf16
natively), and the one memory check made before any weight is read: the model's size
follows from its ``config.json`` alone, so a model that cannot fit is refused in
milliseconds instead of failing half-way through a load (or being killed by the kernel).
Two limits apply: ``memoryLimitMB`` (weights plus the KV cache budget; 0: none) and the
memory free on the device (``MemAvailable`` on CPU, free device memory on CUDA). Also here:
this process's resident memory (for ``codegen/status``) and handing freed memory back.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

from codegen_lsp.codegen.checkpoint import CheckpointError
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError

MIB = 2**20


class EngineConfigError(ValueError):
    """Settings that cannot work on this machine (unknown dtype, CUDA missing, too big...)."""


def cpu_has_bf16() -> bool:
    """True when the CPU multiplies bf16 natively (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="ignore")
    except OSError:
        flags = ""
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        return True
    capability = torch.backends.cpu.get_cpu_capability().upper()
    return "BF16" in capability or "AMX" in capability


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
        return torch.bfloat16 if cpu_has_bf16() else torch.float32
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


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``bfloat16``."""
    return str(dtype).removeprefix("torch.")


def available_memory(device: torch.device) -> int | None:
    """Bytes free for weights on ``device`` (None when it cannot be told)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError, ValueError):
            return None
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def weight_bytes(
    config: CodeGenConfig, dtype: torch.dtype, quantize: str = "none", dense_prefill: bool = False
) -> int:
    """Bytes the weights take once loaded in ``dtype`` (and packed as ``quantize``).

    Unquantized, every weight takes ``dtype``'s size. Quantized, the block matrices take 1
    byte (int8) or half a byte plus a bf16 prefill copy (int4; int8 keeps one with
    ``dense_prefill``); the head takes its packed bytes plus its ``dtype`` copy (the float32
    refinement of the top logits reads it); embeddings, LayerNorms and biases stay ``dtype``.
    """
    d, inner, vocab = config.n_embd, config.inner_dim, config.vocab_size
    itemsize = torch.empty((), dtype=dtype).element_size()
    matrices = config.n_layer * (4 * d * d + 2 * d * inner)  # qkv, out, fc_in, fc_out
    head = vocab * d
    rest = vocab * d + vocab + 2 * d + config.n_layer * (inner + 5 * d)  # wte, biases, LNs
    if quantize == "none":
        return (matrices + head + rest) * itemsize
    packed = 1.0 if quantize == "int8" else 0.5
    dense = itemsize if quantize == "int4" or dense_prefill else 0
    return int(matrices * (packed + dense) + head * (packed + itemsize) + rest * itemsize)


def check_fits(
    directory: Path,
    name: str,
    dtype: torch.dtype,
    quantize: str,
    device: torch.device,
    cache_memory_mb: int,
    limit_mb: int = 0,
    dense_prefill: bool = False,
) -> None:
    """Raise :class:`EngineConfigError` when the model in ``directory`` cannot fit."""
    try:
        config = CodeGenConfig.from_file(directory / "config.json")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    weights = weight_bytes(config, dtype, quantize, dense_prefill)
    packed = f", {quantize}" if quantize != "none" else ""
    need = f"its weights take {weights / MIB:.0f} MiB in {dtype_name(dtype)}{packed}"
    if limit_mb > 0:
        total = weights + cache_memory_mb * MIB
        if total > limit_mb * MIB:
            raise EngineConfigError(
                f"{name} does not fit in memoryLimitMB={limit_mb}: {need} and the KV cache "
                f"budget (cacheMemoryMB) is {cache_memory_mb} MiB, {total / MIB:.0f} MiB "
                "in all (raise memoryLimitMB, lower cacheMemoryMB, or pick a smaller model "
                "or dtype)"
            )
    free = available_memory(device)
    if free is not None and weights > free:
        raise EngineConfigError(
            f"{name} needs about {weights / 2**30:.1f} GiB of memory on {device} ({need}) but "
            f"only {free / 2**30:.1f} GiB is available: choose a smaller model or dtype"
        )


def release_freed_memory() -> None:
    """Hand memory that was freed (a load's temporaries) back to the OS, where the C library
    can (glibc's ``malloc_trim``); otherwise a no-op."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def process_memory() -> dict[str, int]:
    """This process's resident memory now and at its peak, in bytes (``VmRSS``, ``VmHWM``
    from ``/proc/self/status``; empty where that file does not exist)."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return {}
    return out
