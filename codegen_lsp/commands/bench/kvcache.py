"""What the KV cache's dtype costs and gives: top-1 agreement with float32 and step time.

The same real text is fed one token at a time (teacher forcing, as decoding reads the cache)
after a prefill of ``context`` tokens, once per cache dtype, through the engine's one
:class:`~codegen_lsp.engine.step.Step`. Agreement is the share of steps whose greedy token
equals the float32 cache's; the step time is the median over the steps, measured in the same
run, interleaved dtype by dtype for each step so the machine's load moves them alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from codegen_lsp.codegen.modeling import KVCache
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.machine import dtype_name

KV_DTYPES = (torch.float32, torch.bfloat16, torch.int8)


@torch.inference_mode()
def kv_compare(
    engine: CodeGenEngine, ids: list[int], context: int, steps: int, source: str
) -> dict[str, Any]:
    """Agreement of each cache dtype's greedy tokens with float32's, and step times."""
    steps = max(1, min(steps, len(ids) - context - 1, engine.n_ctx - context - 1))
    config, step = engine.model.config, engine.step
    caches = {}
    for dtype in KV_DTYPES:
        cache = KVCache(config, 1, context + steps + 1, dtype, engine.device)
        step.hidden([ids[:context]], 0, cache)
        caches[dtype] = cache
    top: dict[torch.dtype, list[int]] = {d: [] for d in KV_DTYPES}
    ms: dict[torch.dtype, list[float]] = {d: [] for d in KV_DTYPES}
    for i in range(steps):
        position = context + i
        for dtype, cache in caches.items():
            start = time.perf_counter()
            _, logits = step([[ids[position]]], position, cache)
            ms[dtype].append((time.perf_counter() - start) * 1000)
            top[dtype].append(int(logits[0].argmax()))
    base = top[torch.float32]
    base_ms = statistics.median(ms[torch.float32])
    out: dict[str, Any] = {"text": source, "context": context, "steps": steps, "dtypes": {}}
    for dtype in KV_DTYPES:
        agree = sum(a == b for a, b in zip(top[dtype], base, strict=True)) / steps
        median = statistics.median(ms[dtype])
        out["dtypes"][dtype_name(dtype)] = {
            "top1_agreement": agree,
            "step_ms": median,
            "ratio_to_float32": median / base_ms,
            "kv_bytes_per_position": 2 * config.n_layer * config.n_embd * dtype.itemsize,
        }
    return out
