"""The bench's probes: the kernel rates (each decode kernel timed alone on a model's shapes,
its bytes counted from those shapes, the floors the sums of the parts, and the report prints
them) and ``bench profile`` (a real subprocess on a tiny checkpoint: the operator table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.commands.bench.kernels import kernel_rates
from codegen_lsp.commands.bench.report import _speed_lines
from tests.support import tiny_model


def test_kernel_rates_count_the_bytes_of_a_decode_step() -> None:
    config = tiny_model().config
    rates = kernel_rates(config, context=48, repeats=2)
    d, inner, layers = config.n_embd, config.inner_dim, config.n_layer
    assert rates["int8_gemv"]["bytes"] == layers * (3 * d * d + d * d + 2 * d * inner)
    assert rates["int8_head"]["bytes"] == config.vocab_size * d
    assert rates["attention"]["bytes"] == 2 * layers * config.n_head * 48 * config.head_dim * 4
    for name in ("int8_gemv", "int8_head", "int4_gemv", "attention"):
        entry = rates[name]
        assert entry["ms"] > 0 and entry["gbs"] > 0, (name, entry)
    parts = rates["int8_gemv"]["ms"] + rates["int8_head"]["ms"] + rates["attention"]["ms"]
    assert abs(rates["floor_int8_ms"] - parts) < 0.01
    assert abs(rates["floor_int4_ms"] - rates["int4_gemv"]["ms"] - rates["attention"]["ms"]) < 0.01
    lines = _speed_lines({"kernel_rates": rates})
    assert any(line.startswith("decode kernels alone at ctx 48: int8_gemv") for line in lines)
    assert any(f"int8 {rates['floor_int8_ms']:.1f} ms" in line for line in lines), lines


def test_bench_profile_prints_the_operators_of_a_decode_step(tiny_checkpoint: Path) -> None:
    for extra in ([], ["--prefill"]):
        out = subprocess.run(
            [sys.executable, "-m", "codegen_lsp", "bench", "profile", "--model",
             str(tiny_checkpoint), "--context", "100", "--steps", "4", "--threads", "1", *extra],
            capture_output=True, text=True, timeout=300, check=True,
        ).stdout  # fmt: skip
        assert "context 100, 1 threads" in out, out
        assert "Self CPU time total" in out and "aten::" in out, out
        if extra:
            assert "prefill:" in out and "aten::addmm" in out, out
        else:
            assert "decode step:" in out, out  # the int8 GEMV: native, else ATen's
            assert "codegen::gemv_q8" in out or "aten::_weight_int8pack_mm" in out, out


def test_kernel_rates_leave_out_int4_where_its_groups_do_not_fit() -> None:
    config = CodeGenConfig(vocab_size=512, n_embd=48, n_layer=1, n_head=3, rotary_dim=8)
    rates = kernel_rates(config, context=16, repeats=1)
    assert "int4_gemv" not in rates and "floor_int4_ms" not in rates
    assert rates["int8_gemv"]["bytes"] == 4 * 48 * 48 + 2 * 48 * 4 * 48
    lines = _speed_lines({"kernel_rates": rates})
    assert any(line.endswith(f"int8 {rates['floor_int8_ms']:.1f} ms") for line in lines), lines
