"""How fast the kernels a decode step is made of read memory on this machine.

The bandwidth bound (:func:`probes.decode_bound_ms`) assumes every byte streams at the rate of
``torch.sum``. The kernels one decode step calls stream slower than that, and no Python around
them can make them faster: this probe runs each of them alone over distinct tensors of a
model's shapes, as many as a decode step touches (so nothing stays in the caches), and reports
its time and read rate. Their sum is the **kernel floor**: the fastest a decode step built from
these ATen kernels can be on this CPU, whatever the code around them does.

- ``int8_gemv``: ``_weight_int8pack_mm`` with one row over every block's four weight matrices;
- ``int8_head``: the same over the ``lm_head`` (vocabulary x embedding);
- ``int4_gemv``: ``_weight_int4pack_mm_for_cpu`` (groups of 32) over the blocks and the head;
- ``attention``: ``scaled_dot_product_attention`` of one query over every layer's float32 keys
  and values at ``context`` positions.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from codegen_lsp.codegen.config import CodeGenConfig


def _best_ms(run: Callable[[], None], repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _entry(ms: float, nbytes: int) -> dict[str, float]:
    return {"ms": round(ms, 3), "bytes": nbytes, "gbs": round(nbytes / ms / 1e6, 2)}


def _int4_entry(
    shapes: list[tuple[int, int]],
    rows: dict[int, torch.Tensor],
    gen: torch.Generator,
    repeats: int,
) -> dict[str, float]:
    """``_weight_int4pack_mm_for_cpu`` over ``shapes`` (packed weights, bf16 scale and zero)."""
    packed = []
    for n, k in shapes:
        q = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
        scale_zero = torch.rand(k // 32, n, 2, generator=gen).to(torch.bfloat16)
        packed.append((torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8), scale_zero, k))

    def run() -> None:
        for w, sz, k in packed:
            torch.ops.aten._weight_int4pack_mm_for_cpu(rows[k], w, 32, sz)

    nbytes = sum(n * k // 2 + (k // 32) * n * 4 for n, k in shapes)
    return _entry(_best_ms(run, repeats), nbytes)


def kernel_rates(config: CodeGenConfig, context: int, repeats: int = 5) -> dict[str, object]:
    """Best-of-``repeats`` time and read rate of each decode kernel, and the kernel floors."""
    gen = torch.Generator().manual_seed(0)
    d, inner, vocab = config.n_embd, config.inner_dim, config.vocab_size
    blocks = [(3 * d, d), (d, d), (inner, d), (d, inner)] * config.n_layer
    rows = {k: torch.randn(1, k, generator=gen).to(torch.bfloat16) for k in (d, inner)}

    def int8(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        w = torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)
        return w, torch.rand(shape[0], generator=gen).to(torch.bfloat16)

    def run_int8(weights: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
        def run() -> None:
            for w, s in weights:
                torch.ops.aten._weight_int8pack_mm(rows[w.shape[1]], w, s)

        return run

    out: dict[str, object] = {}
    layer_weights = [int8(s) for s in blocks]
    nbytes = sum(n * k for n, k in blocks)
    out["int8_gemv"] = _entry(_best_ms(run_int8(layer_weights), repeats), nbytes)
    del layer_weights
    out["int8_head"] = _entry(_best_ms(run_int8([int8((vocab, d))]), repeats), vocab * d)

    if all(k % 32 == 0 for _, k in blocks):  # int4 groups of 32 inputs (else int8 is used)
        out["int4_gemv"] = _int4_entry([*blocks, (vocab, d)], rows, gen, repeats)

    heads, head_dim = config.n_head, config.head_dim
    kv_shape = (1, heads, context, head_dim)
    kv = [
        (torch.randn(kv_shape, generator=gen), torch.randn(kv_shape, generator=gen))
        for _ in range(config.n_layer)
    ]
    query = torch.randn(1, heads, 1, head_dim, generator=gen)

    def run_attention() -> None:
        for k, v in kv:
            F.scaled_dot_product_attention(query, k, v)

    kv_bytes = 2 * config.n_layer * heads * context * head_dim * 4
    out["attention"] = _entry(_best_ms(run_attention, repeats), kv_bytes)
    ms = {name: entry["ms"] for name, entry in out.items() if isinstance(entry, dict)}
    out["floor_int8_ms"] = round(ms["int8_gemv"] + ms["int8_head"] + ms["attention"], 2)
    if "int4_gemv" in ms:
        out["floor_int4_ms"] = round(ms["int4_gemv"] + ms["attention"], 2)
    out["context"] = context
    return out
