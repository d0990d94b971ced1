"""The native kernels and the kernel table (``codegen_lsp/native``, ``engine/kernels.py``).

Every instruction set this CPU runs (called by name, plus the scalar reference) at awkward
sizes: 1..8 rows bit-identical to one-row calls, and within a stated bound of a float64
reference. The environment switches in a subprocess (the library reads ``CODEGEN_CPU_ISA``
once, when it loads), the torch fallback when the library is missing, and shapes on which
ATen's int8/int4 ops are wrong (they must never reach them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from codegen_lsp.engine import kernels, quantize
from codegen_lsp.engine.quantize import Int4Linear, Int8Linear
from tests import kernel_oracles

U = 2.0**-24  # float32 unit roundoff
U_BF16 = 2.0**-8
AWKWARD = (1, 3, 15, 16, 17, 31, 33, 1023, 1025)
ROWS = 8
CG_EBADARG = 1

needs_native = pytest.mark.skipif(
    kernels.table().lib is None, reason=f"native kernels not built: {kernels.table().reason}"
)


def isas() -> list[int]:
    """-1 (the scalar reference) and every instruction set this CPU runs."""
    return [-1, *(kernels.ISAS.index(name) for name in kernels.cpu_isas())]


def call(kernel: str, isa: int, x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, b, n: int):
    """``cg_<kernel>_isa`` on x's rows; the output in x's dtype."""
    y = torch.empty(x.shape[0], n, dtype=x.dtype)
    rc = kernels.native_isa_call(
        kernel, isa, x.data_ptr(), x.shape[0], x.shape[1], w.data_ptr(), s.data_ptr(),
        None if b is None else b.data_ptr(), n, y.data_ptr(), kernels.NATIVE_DTYPES[x.dtype],
    )  # fmt: skip
    assert rc == 0, f"{kernel} isa {isa} returned {rc}"
    return y


def check_rows_and_bound(kernel, isa, x, w, s, b, n, ref, magnitude) -> None:
    """The k-row call equals k one-row calls bit for bit and is within the bound of ``ref``:
    (k + 4) float32 roundings of the sum of magnitudes, plus bf16 rounding of the output."""
    y = call(kernel, isa, x, w, s, b, n)
    rows = torch.cat([call(kernel, isa, x[r : r + 1].clone(), w, s, b, n) for r in range(len(x))])
    assert torch.equal(y, rows), f"{kernel} isa {isa}: rows differ from one-row calls"
    bound = (x.shape[1] + 4) * U * magnitude
    if x.dtype == torch.bfloat16:
        bound = bound + U_BF16 * (ref.abs() + bound)
    error = (y.double() - ref).abs()
    assert bool((error <= bound).all()), f"{kernel} isa {isa}: error {error.max()} over bound"


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemv_q8_every_isa_at_awkward_sizes(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(8)
    for k in AWKWARD:
        for n in (1, 3, 16, 17, 33):
            x = torch.randn(ROWS, k, generator=gen).to(dtype)
            w = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
            s = torch.rand(n, generator=gen) / 64
            b = torch.randn(n, generator=gen) if n % 2 else None
            ref = kernel_oracles.gemv_q8_reference(x, w, s, b)
            magnitude = (x.double().abs() @ w.double().abs().T) * s.double()
            if b is not None:
                magnitude = magnitude + b.double().abs()
            for isa in isas():
                check_rows_and_bound("gemv_q8", isa, x, w, s, b, n, ref, magnitude)


@needs_native
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemv_q4_every_isa_at_awkward_sizes(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    for k in (32, 64, 96, 992, 1056):
        for n in (1, 3, 15, 16, 17, 33):
            x = torch.randn(ROWS, k, generator=gen).to(dtype)
            packed = quantize.pack_q4(torch.randint(0, 16, (n, k), generator=gen))
            sz = torch.randn(n, k // 32, 2, generator=gen).div(8).to(torch.bfloat16)
            b = torch.randn(n, generator=gen) if n % 2 else None
            ref = kernel_oracles.gemv_q4_reference(x, packed, sz, b)
            q = quantize.unpack_q4(packed).double() - 8
            scale, zero = sz.double().unbind(-1)
            w_abs = q.view(n, -1, 32).abs() * scale.abs()[..., None] + zero.abs()[..., None]
            magnitude = x.double().abs() @ w_abs.view(n, k).T
            if b is not None:
                magnitude = magnitude + b.double().abs()
            for isa in isas():
                check_rows_and_bound("gemv_q4", isa, x, packed, sz, b, n, ref, magnitude)


@needs_native
def test_every_row_count_equals_one_row_calls() -> None:
    """Every row count (each picks its own block of weight rows; past 8 rows, passes of 8)
    gives one-row calls' bits, on every instruction set, int8 and int4."""
    gen = torch.Generator().manual_seed(9)
    k, n = 96, 13  # 13 outputs: whole blocks of 4, 3 and 2 weight rows, and a tail
    x = torch.randn(11, k, generator=gen).to(torch.bfloat16)
    w8 = torch.randint(-127, 128, (n, k), dtype=torch.int8, generator=gen)
    s8 = torch.rand(n, generator=gen) / 64
    w4 = quantize.pack_q4(torch.randint(0, 16, (n, k), generator=gen))
    sz = torch.randn(n, k // 32, 2, generator=gen).div(8).to(torch.bfloat16)
    for isa in isas():
        for kernel, w, s in (("gemv_q8", w8, s8), ("gemv_q4", w4, sz)):
            ones = torch.cat(
                [call(kernel, isa, x[r : r + 1].clone(), w, s, None, n) for r in range(11)]
            )
            for m in range(2, 12):
                y = call(kernel, isa, x[:m].clone(), w, s, None, n)
                assert torch.equal(y, ones[:m]), f"{kernel} isa {isa}: {m} rows"


def test_q4_pack_round_trip() -> None:
    gen = torch.Generator().manual_seed(2)
    q = torch.randint(0, 16, (5, 96), generator=gen)
    packed = quantize.pack_q4(q)
    assert packed.shape == (5, 48) and packed.dtype == torch.uint8
    assert torch.equal(quantize.unpack_q4(packed), q.to(torch.uint8))
    # byte t of a group: input t in the low nibble, input 16 + t in the high one
    assert int(packed[0, 3]) == int(q[0, 3]) | int(q[0, 19]) << 4
    sz = torch.rand(5, 3, 2, generator=gen).to(torch.bfloat16)
    dense = quantize.dequantize_q4(packed, sz)
    expect = (q[0, 40] - 8) * sz[0, 1, 0].float() + sz[0, 1, 1].float()
    assert torch.isclose(dense[0, 40], expect)


@needs_native
def test_kernels_reject_shapes_outside_their_contract() -> None:
    x, w, s = torch.randn(1, 33), torch.zeros(4, 33, dtype=torch.int8), torch.ones(4)
    y = torch.empty(1, 4)
    args = (x.data_ptr(), 1, 33, w.data_ptr(), s.data_ptr(), None, 4, y.data_ptr(), 0)
    for isa in isas():  # int4 takes groups of 32 inputs only; nothing is read or written
        assert kernels.native_isa_call("gemv_q4", isa, *args) == CG_EBADARG
        bad_k = (x.data_ptr(), 1, 0, *args[3:])
        assert kernels.native_isa_call("gemv_q8", isa, *bad_k) == CG_EBADARG
    with pytest.raises(kernels.NativeKernelError, match="gemv_q4 rejected"):
        kernels.gemv_q4(x, torch.zeros(4, 16, dtype=torch.uint8), torch.ones(4, 1, 2), None)


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with ``env`` added to the environment."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


ISA_PROBE = """
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
lib.cg_isa_name.restype = lib.cg_init_error.restype = ctypes.c_char_p
print(lib.cg_isa_name(lib.cg_isa()).decode(), lib.cg_init_error().decode(), sep="|")
"""


@needs_native
def test_forced_instruction_sets_are_used_and_reported() -> None:
    library = kernels.table().lib._name  # the path the table loaded
    for name in kernels.cpu_isas():  # the library alone (no torch): fast
        done = subprocess.run(
            [sys.executable, "-c", ISA_PROBE, library],
            env={**os.environ, "CODEGEN_CPU_ISA": name},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert done.stdout.strip() == f"{name}|"
    code = "from codegen_lsp.engine import kernels; print(kernels.describe())"
    done = run_python(code, CODEGEN_CPU_ISA=kernels.cpu_isas()[-1], CODEGEN_NATIVE_THREADS="3")
    assert done.returncode == 0, done.stderr
    expected = f"native {kernels.cpu_isas()[-1]} on 3 threads: gemv_q8, gemv_q4, attend"
    assert done.stdout.strip() == expected
    done = run_python(code, CODEGEN_CPU_ISA="avx9000")
    assert done.returncode != 0
    assert "CODEGEN_CPU_ISA=avx9000 is not one of generic, avx2, avx512" in done.stderr


def test_missing_library_or_switch_off_falls_back_to_torch(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "libcodegen_native.so"
    table = kernels.load_table({"CODEGEN_NATIVE_LIB": str(missing)})
    assert table.lib is None
    assert {e.impl for e in table.entries.values()} == {"torch"}
    assert table.describe() == f"torch kernels (no native library at {missing})"
    off = kernels.load_table({"CODEGEN_NATIVE": "0"})
    assert off.lib is None and "CODEGEN_NATIVE=0" in off.describe()


FALLBACK_LAYERS = """
import json, torch
from torch import nn
from codegen_lsp.engine import kernels
from codegen_lsp.engine.quantize import Int4Linear, Int8Linear
torch.manual_seed(0)
out = {"describe": kernels.describe(), "layers": []}
for cls, k, n in [(Int8Linear, 64, 48), (Int8Linear, 120, 40), (Int8Linear, 17, 3),
                  (Int4Linear, 64, 48), (Int4Linear, 96, 40)]:
    layer = cls(nn.Linear(k, n))
    x = torch.randn(5, k).to(torch.bfloat16)
    y = layer(x)
    rows = torch.cat([layer(x[r : r + 1]) for r in range(5)])
    w = layer.dense if layer.dense is not None else layer.dequantized()
    ref = x.double() @ w.double().T + layer.bias.double()
    out["layers"].append([cls.__name__, k, n, layer.route, torch.equal(y, rows),
                          float((y.double() - ref).abs().max() / ref.abs().max())])
print(json.dumps(out))
"""


def test_fallback_never_calls_aten_on_shapes_it_gets_wrong(tmp_path) -> None:
    """Without the library, layers use ATen only where its op is right (int8: inputs a
    multiple of 16; int4: outputs a multiple of 16), else dequantized weights a row at a
    time (ATen's int8 op reads out of bounds at 120 or 17 inputs)."""
    done = run_python(FALLBACK_LAYERS, CODEGEN_NATIVE_LIB=str(tmp_path / "missing.so"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["describe"].startswith("torch kernels (no native library at")
    routes = {(name, k, n): route for name, k, n, route, _, _ in result["layers"]}
    assert routes == {
        ("Int8Linear", 64, 48): "aten",
        ("Int8Linear", 120, 40): "dense",
        ("Int8Linear", 17, 3): "dense",
        ("Int4Linear", 64, 48): "aten",
        ("Int4Linear", 96, 40): "dense",
    }
    assert "ATen's op is not right for 120 inputs x 40 outputs" in done.stderr
    for name, k, n, _, rows_equal, relative in result["layers"]:
        assert rows_equal, (name, k, n)
        assert relative < 0.02, (name, k, n, relative)


def layer_reference(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float64 ``x @ W.T + b`` with the layer's own (quantized, then dequantized) weights."""
    if isinstance(layer, Int8Linear):
        weight = layer.dequantized()
    elif layer.route == "native":
        weight = quantize.dequantize_q4(layer.qweight, layer.scale_zero)
    else:
        weight = layer.dense
    return x.double() @ weight.double().T + layer.bias.double()


@needs_native
@torch.no_grad()
def test_layers_route_to_native_and_rows_match_one_row_calls() -> None:
    gen = torch.Generator().manual_seed(5)
    for cls, k, n in [(Int8Linear, 120, 40), (Int8Linear, 1024, 48), (Int4Linear, 96, 40)]:
        linear = nn.Linear(k, n)
        layer = cls(linear, keep_dense=False)
        assert layer.route == "native"
        x = torch.randn(8, k, generator=gen).to(torch.bfloat16)
        y = layer(x)
        assert y.dtype == torch.bfloat16 and y.shape == (8, n)
        assert torch.equal(y, torch.cat([layer(x[r : r + 1]) for r in range(8)]))
        ref = layer_reference(layer, x)
        assert float((y.double() - ref).abs().max() / ref.abs().max()) < 0.01


@needs_native
@torch.no_grad()
def test_fuzzed_shapes_never_crash() -> None:
    """Random shapes through the table: native where the contract allows, else the torch
    reference; every answer near the float64 one."""
    gen = torch.Generator().manual_seed(11)
    for _ in range(40):
        m, k, n = (int(v) for v in torch.randint(1, 80, (3,), generator=gen))
        bits = 4 if k % 2 else 8
        k = k if bits == 8 else 32 * (1 + k // 16)  # int4: groups of 32 inputs
        linear = nn.Linear(k, n)
        layer = (Int4Linear if bits == 4 else Int8Linear)(linear, keep_dense=False)
        x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
        y = layer(x)
        assert y.shape == (m, n) and bool(torch.isfinite(y).all())
        ref = layer_reference(layer, x)
        assert float((y.double() - ref).abs().max()) <= 0.01 * float(ref.abs().max()) + 1e-3
