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
  and values at ``context`` positions;
- ``int8_gemv_native``, ``int8_head_native``, ``int4_gemv_native``: the same matrices through
  the engine's native kernels (:mod:`codegen_lsp.engine.kernels`), when they are built;
  ``kernels`` says which kernels the engine runs and on how many threads;
  ``int8_gemv_native_1thread``: the blocks' matrices on the caller's thread alone;
- ``attention_native`` (``_1thread``): the native attention over bf16 keys and values (the
  default KV cache), on the engine's threads (on one).

ATen's ops are timed only on shapes the kernel table says they compute right (its int8 op
reads out of bounds when the inputs are not a multiple of 16). The floors add the ATen
entries, else the native ones; ``floor_int8_native_ms`` / ``floor_int4_native_ms`` add the
native ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import LayerKV
from codegen_lsp.engine import kernels, quantize


def _best_ms(run: Callable[[], None], repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _one_thread(run: Callable[[], None], repeats: int) -> float:
    """``run``'s best time with the native kernels on the caller's thread alone."""
    threads = kernels.threads()
    kernels.set_threads(1)
    try:
        return _best_ms(run, repeats)
    finally:
        kernels.set_threads(threads)


def _native_attention(
    kv: list[tuple[torch.Tensor, torch.Tensor]], query: torch.Tensor
) -> Callable[[], None]:
    """The native attention of ``query`` ``[1, 1, H, D]`` over bf16 copies of ``kv``."""
    caches = [LayerKV(k.to(torch.bfloat16), v.to(torch.bfloat16)) for k, v in kv]
    position = torch.tensor([kv[0][0].shape[2] - 1])

    def run() -> None:
        for cache in caches:
            kernels.attend(query, position, cache)

    return run


def _entry(ms: float, nbytes: int) -> dict[str, float]:
    return {"ms": round(ms, 3), "bytes": nbytes, "gbs": round(nbytes / ms / 1e6, 4)}


def _int4_entry(
    shapes: list[tuple[int, int]],
    rows: dict[int, torch.Tensor],
    gen: torch.Generator,
    repeats: int,
    native: bool,
) -> dict[str, float]:
    """int4 GEMV over ``shapes`` (groups of 32, bf16 scale and zero): ATen's
    ``_weight_int4pack_mm_for_cpu`` on its layout, or the native kernel on its own."""
    packed = []
    for n, k in shapes:
        q = torch.randint(0, 16, (n, k), dtype=torch.int32, generator=gen)
        if native:
            sz = torch.rand(n, k // 32, 2, generator=gen).to(torch.bfloat16)
            packed.append((quantize.pack_q4(q), sz, k))
        else:
            scale_zero = torch.rand(k // 32, n, 2, generator=gen).to(torch.bfloat16)
            packed.append((torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 8), scale_zero, k))

    def run() -> None:
        for w, sz, k in packed:
            if native:
                kernels.gemv_q4(rows[k], w, sz, None)
            else:
                torch.ops.aten._weight_int4pack_mm_for_cpu(rows[k], w, 32, sz)

    nbytes = sum(n * k // 2 + (k // 32) * n * 4 for n, k in shapes)
    return _entry(_best_ms(run, repeats), nbytes)


def _int8_run(
    weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    rows: dict[int, torch.Tensor],
    native: bool,
) -> Callable[[], None]:
    """One row through every (int8 weights, bf16 scales, float32 scales) of ``weights``."""

    def run() -> None:
        for w, scales, scale32 in weights:
            if native:
                kernels.gemv_q8(rows[w.shape[1]], w, scale32, None)
            else:
                torch.ops.aten._weight_int8pack_mm(rows[w.shape[1]], w, scales)

    return run


def kernel_rates(config: CodeGenConfig, context: int, repeats: int = 5) -> dict[str, object]:
    """Best-of-``repeats`` time and read rate of each decode kernel, and the kernel floors."""
    gen = torch.Generator().manual_seed(0)
    d, inner, vocab = config.n_embd, config.inner_dim, config.vocab_size
    blocks = [(3 * d, d), (d, d), (inner, d), (d, inner)] * config.n_layer
    rows = {k: torch.randn(1, k, generator=gen).to(torch.bfloat16) for k in (d, inner)}
    native = kernels.table().lib is not None
    aten_q8 = kernels.CONTRACTS[("gemv_q8", "aten")]
    aten_ok = all(aten_q8.accepts(k, n, torch.bfloat16) for n, k in [*blocks, (vocab, d)])

    def int8(shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w = torch.randint(-127, 128, shape, dtype=torch.int8, generator=gen)
        scales = torch.rand(shape[0], generator=gen).to(torch.bfloat16)
        return w, scales, scales.float()

    out: dict[str, object] = {"kernels": kernels.describe()}
    layer_weights = [int8(s) for s in blocks]
    head_weights = [int8((vocab, d))]
    nbytes = sum(n * k for n, k in blocks)
    for suffix, use_native in (("", False), ("_native", True)):
        if (use_native and not native) or (not use_native and not aten_ok):
            continue
        run = _int8_run(layer_weights, rows, use_native)
        out[f"int8_gemv{suffix}"] = _entry(_best_ms(run, repeats), nbytes)
        if use_native and kernels.threads() > 1:
            out["int8_gemv_native_1thread"] = _entry(_one_thread(run, repeats), nbytes)
        run = _int8_run(head_weights, rows, use_native)
        out[f"int8_head{suffix}"] = _entry(_best_ms(run, repeats), vocab * d)
    del layer_weights, head_weights

    if all(k % 32 == 0 for _, k in blocks):  # int4 groups of 32 inputs (else int8 is used)
        shapes = [*blocks, (vocab, d)]
        if all(n % 16 == 0 for n, _ in shapes):  # ATen's int4 op raises otherwise
            out["int4_gemv"] = _int4_entry(shapes, rows, gen, repeats, native=False)
        if native:
            out["int4_gemv_native"] = _int4_entry(shapes, rows, gen, repeats, native=True)

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
    if native:
        run = _native_attention(kv, query.transpose(1, 2).contiguous())
        out["attention_native"] = _entry(_best_ms(run, repeats), kv_bytes // 2)
        if kernels.threads() > 1:
            out["attention_native_1thread"] = _entry(_one_thread(run, repeats), kv_bytes // 2)
    ms = {name: entry["ms"] for name, entry in out.items() if isinstance(entry, dict)}
    q8 = "" if "int8_gemv" in ms else "_native"
    out["floor_int8_ms"] = round(
        ms.get(f"int8_gemv{q8}", 0.0) + ms.get(f"int8_head{q8}", 0.0) + ms["attention"], 2
    )
    q4 = "int4_gemv" if "int4_gemv" in ms else "int4_gemv_native"
    if q4 in ms:
        out["floor_int4_ms"] = round(ms[q4] + ms["attention"], 2)
    if native:
        int8_native = ms["int8_gemv_native"] + ms["int8_head_native"] + ms["attention"]
        out["floor_int8_native_ms"] = round(int8_native, 2)
        if "int4_gemv_native" in ms:
            out["floor_int4_native_ms"] = round(ms["int4_gemv_native"] + ms["attention"], 2)
    out["context"] = context
    return out
