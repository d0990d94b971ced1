"""The native attention kernel (``cg_attend``) and its use by the model's decode calls.

Every instruction set this CPU runs (called by name, plus the scalar reference) at awkward
head dims and key counts, fp32, bf16 and int8 (with scales) caches: a k-query call equals k
one-query calls bit for bit, and every output is within a stated bound of a float64
reference. Then the model: one-token and row-exact calls take the kernel, prefill keeps SDPA,
and a verify call's rows equal one-token steps with the kernel on.
"""

from __future__ import annotations

import pytest
import torch

from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import CodeGenForCausalLM, KVCache, LayerKV
from codegen_lsp.engine import kernels
from codegen_lsp.engine.quantize import quantize_int8
from tests import kernel_oracles

U = 2.0**-24
U_BF16 = 2.0**-8
CG_EBADARG = 1

needs_native = pytest.mark.skipif(
    kernels.table().lib is None, reason=f"native kernels not built: {kernels.table().reason}"
)


def isas() -> list[int]:
    """-1 (the scalar reference) and every instruction set this CPU runs."""
    return [-1, *(kernels.ISAS.index(name) for name in kernels.cpu_isas())]


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def call(isa: int, q: torch.Tensor, positions: torch.Tensor, kv: LayerKV):
    """``cg_attend_isa`` of q [B, T, H, D] over a layer's cache; [B, T, H, D]."""
    b, t, h, d = q.shape
    lengths = positions + 1
    y = torch.empty_like(q)
    rc = kernels.native_isa_call(
        "attend", isa, q.data_ptr(), b, t, h, d, kv.k.data_ptr(), kv.v.data_ptr(),
        ptr(kv.k_scale), ptr(kv.v_scale), kv.k.shape[2], lengths.data_ptr(), d**-0.5,
        y.data_ptr(), kernels.NATIVE_DTYPES[q.dtype], kernels.NATIVE_DTYPES[kv.k.dtype],
    )  # fmt: skip
    assert rc == 0, f"attend isa {isa} returned {rc}"
    return y


def widened(kv: LayerKV) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values as the values they stand for (float64)."""
    k, v = kv.k.double(), kv.v.double()
    if kv.k_scale is not None and kv.v_scale is not None:
        return k * kv.k_scale.double()[..., None], v * kv.v_scale.double()[..., None]
    return k, v


def make_kv(b: int, h: int, s: int, d: int, dtype: torch.dtype, gen: torch.Generator) -> LayerKV:
    """Random keys and values in ``dtype``; int8 with random scales per head and position."""
    if dtype != torch.int8:
        k, v = (torch.randn(b, h, s, d, generator=gen).to(dtype) for _ in range(2))
        return LayerKV(k, v)
    k, v = (torch.randint(-127, 128, (b, h, s, d), generator=gen, dtype=torch.int8) for _ in "kv")
    ks, vs = (torch.rand(b, h, s, generator=gen) * 0.03 + 1e-3 for _ in "kv")
    return LayerKV(k, v, ks, vs)


def bound(q: torch.Tensor, positions: torch.Tensor, kv: LayerKV):
    """Per output: scores off by at most e_s = (D + 4) u scale sum_d |q_d k_d| (their
    exponentials by 2 e_s + 8 u, relatively), sums of L terms by (L + 8) u: the output is
    within 2 (2 e_s + (L + 16) u) sum_t p_t |v_t| / sum_t p_t of the float64 one (an int8
    cache's scale products add two roundings a term, inside those margins)."""
    d = q.shape[-1]
    k, v = widened(kv)
    out = []
    for i, p in enumerate(positions.tolist()):
        qi, kk, vv = q[:, i].double(), k[:, :, : p + 1], v[:, :, : p + 1]
        mag = torch.einsum("bhd,bhtd->bht", qi.abs(), kk.abs()) * d**-0.5
        e_s = (d + 4) * U * mag.amax(-1, keepdim=True)  # [B, H, 1]
        w = torch.softmax(torch.einsum("bhd,bhtd->bht", qi, kk) * d**-0.5, -1)
        spread = torch.einsum("bht,bhtd->bhd", w, vv.abs())
        out.append(2 * (2 * e_s + (p + 1 + 16) * U) * spread)
    return torch.stack(out, dim=1)


@needs_native
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_attend_every_isa_at_awkward_sizes(kv_dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(23)
    for dim in (8, 16, 64, 80):
        for dtype in (torch.float32, torch.bfloat16):
            max_len = 1030
            kv = make_kv(2, 3, max_len, dim, kv_dtype, gen)
            q = (torch.randn(2, 8, 3, dim, generator=gen) * 2).to(dtype)
            positions = torch.tensor([0, 2, 16, 1022, 1024, 5, 1029, 63])  # 1, 3, 17, 1023...
            ref = kernel_oracles.attend_reference(q, positions, kv)
            limit = bound(q, positions, kv)
            if dtype == torch.bfloat16:
                limit = limit + U_BF16 * (ref.abs() + limit)
            for isa in isas():
                y = call(isa, q, positions, kv)
                ones = [
                    call(isa, q[:, i : i + 1].clone(), positions[i : i + 1], kv) for i in range(8)
                ]
                assert torch.equal(y, torch.cat(ones, dim=1)), f"isa {isa} dim {dim}: rows differ"
                error = (y.double() - ref).abs()
                assert bool((error <= limit).all()), (
                    f"isa {isa} dim {dim}: {error.max()} over bound"
                )


@needs_native
def test_attend_rejects_calls_outside_its_contract() -> None:
    q, k = torch.randn(1, 1, 2, 8), torch.randn(1, 2, 4, 8)
    y = torch.empty_like(q)

    scales = torch.ones(1, 2, 4)

    def rc(isa: int, lengths: torch.Tensor, dim: int = 8, kv: int = 0, s: int | None = None) -> int:
        return kernels.native_isa_call(
            "attend", isa, q.data_ptr(), 1, 1, 2, dim, k.data_ptr(), k.data_ptr(), s, s, 4,
            lengths.data_ptr(), 1.0, y.data_ptr(), 0, kv,
        )  # fmt: skip

    for isa in isas():  # a key count past the cache, none at all, a head dim past 256
        assert rc(isa, torch.tensor([5])) == CG_EBADARG
        assert rc(isa, torch.tensor([0])) == CG_EBADARG
        assert rc(isa, torch.tensor([4]), dim=257) == CG_EBADARG
        assert rc(isa, torch.tensor([4]), kv=2) == CG_EBADARG  # int8 without its scales
        assert rc(isa, torch.tensor([4]), kv=3) == CG_EBADARG  # no such cache dtype
        assert rc(isa, torch.tensor([4])) == 0
        assert rc(isa, torch.tensor([4]), kv=2, s=scales.data_ptr()) == 0
    contract = kernels.ATTEND_CONTRACT
    assert contract.accepts(8, 80, torch.bfloat16, torch.float32)
    assert not contract.accepts(9, 80, torch.bfloat16, torch.float32)  # prefill-sized calls
    assert not contract.accepts(1, 80, torch.bfloat16, torch.float16)


def tiny_model() -> CodeGenForCausalLM:
    config = CodeGenConfig(
        vocab_size=64, n_positions=128, n_embd=64, n_layer=2, n_head=4, rotary_dim=8
    )
    model = CodeGenForCausalLM(config).eval()
    model.init_weights(seed=3, std=0.2)
    model.to(torch.bfloat16)
    quantize_int8(model)  # row-exact linear layers, as the engine's
    return model


@needs_native
@torch.no_grad()
@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16, torch.int8])
def test_model_decode_calls_take_the_kernel_and_rows_stay_exact(kv_dtype: torch.dtype) -> None:
    """With the kernel installed, one-token and rowwise calls go native (counted), prefill
    keeps SDPA; a 5-row verify call equals five one-token steps (hidden states and the K/V
    written, scales included), and the native steps stay near the SDPA ones."""
    model = tiny_model()
    calls: list[int] = []

    def cache_of() -> KVCache:
        return KVCache(model.config, 1, 64, kv_dtype)

    def counted(q, positions, cache):
        y = kernels.decode_attention(q, positions, cache)
        calls.append(q.shape[1] if y is not None else 0)
        return y

    tokens = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(1))
    sdpa = model.transformer(tokens, torch.arange(40), cache_of())[0]
    model.transformer.use_decode_attention(counted)
    one, verify = cache_of(), cache_of()
    for cache in (one, verify):
        model.transformer(tokens[:, :35], torch.arange(35), cache)
    assert calls == []  # prefill (35 rows, not rowwise) keeps SDPA
    steps = torch.cat(
        [model.transformer(tokens[:, p : p + 1], torch.tensor([p]), one)[0] for p in range(35, 40)]
    )
    assert calls == [1] * 10  # 5 steps x 2 layers
    rows = model.transformer(tokens[:, 35:40], torch.arange(35, 40), verify, rowwise=True)[0]
    assert calls[10:] == [5, 5]
    assert torch.equal(rows, steps)
    assert len(one.buffers) == (4 if kv_dtype == torch.int8 else 2) * model.config.n_layer
    for a, b in zip(one.buffers, verify.buffers, strict=True):
        assert torch.equal(a[:, :, :40], b[:, :, :40])
    assert torch.allclose(steps.float(), sdpa[35:40].float(), atol=0.05, rtol=0.02)
    model.transformer.use_decode_attention(None)
    model.transformer(tokens[:, 35:36], torch.tensor([35]), one)
    assert len(calls) == 12
