"""Machine probes: memory read bandwidth and the lower bound it implies per decode step.

Decoding one token reads every weight of the transformer blocks and the head once, plus the
keys and values of the whole context; nothing can be faster than those bytes divided by the
read bandwidth. :func:`decode_bound_ms` computes that bound for a weight dtype.
"""

from __future__ import annotations

import os
import platform
import time

import torch

from codegen_lsp.codegen.config import CodeGenConfig

# bytes per weight read in a decode step (int4: 4 bits + a bf16 scale and zero per 32)
WEIGHT_BYTES = {"float32": 4.0, "bfloat16": 2.0, "int8": 1.0, "int4": 0.625}


def read_bandwidth_gbs(size_mib: int = 1024, repeats: int = 5) -> float:
    """Best read bandwidth in GB/s of ``torch.sum`` over a ``size_mib`` float32 tensor."""
    data = torch.ones(size_mib * 2**20 // 4, dtype=torch.float32)
    data.sum()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        best = min(best, time.perf_counter() - start)
    return data.numel() * 4 / best / 1e9


def decoder_weight_count(config: CodeGenConfig) -> int:
    """Weights read per decode step: the blocks, ``ln_f`` and ``lm_head`` (not ``wte``)."""
    d, inner = config.n_embd, config.inner_dim
    block = 3 * d * d + d * d + 2 * d * inner + inner + d + 2 * d
    return config.n_layer * block + 2 * d + config.vocab_size * (d + 1)


def decode_bound_ms(
    config: CodeGenConfig,
    weight_dtype: str,
    context: int,
    kv_bytes: float,
    bandwidth_gbs: float,
) -> float:
    """Lower bound for one decode step: weights plus KV at ``context``, read once."""
    weights = decoder_weight_count(config) * WEIGHT_BYTES[weight_dtype]
    kv = 2 * config.n_layer * config.n_embd * context * kv_bytes
    return (weights + kv) / (bandwidth_gbs * 1e9) * 1000


def machine_info() -> dict[str, object]:
    """CPU model, cores, torch threads and versions, load average."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
