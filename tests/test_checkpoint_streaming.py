"""Loading tensor by tensor: the same model as a whole-checkpoint load, without its memory.

The loader reads one tensor at a time straight into the final dtype and quantizes each linear
layer as soon as it is in. These tests check that this gives, bit for bit, the model that
loading everything and then quantizing gave (every file format, float32 and float16 files,
tied heads, published buffers), and that loading a float32 checkpoint never holds a
whole-model float32 copy: the peak RSS of a clean subprocess stays well under the size of
that copy, which a loader that reads the whole state dict first exceeds by itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from codegen_lsp.codegen.checkpoint import CheckpointError, load_model, save_checkpoint
from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.loader import quantize_on_load
from codegen_lsp.engine.quantize import Int8Linear, quantize_linears, weight_nbytes

TINY = CodeGenConfig(vocab_size=96, n_positions=64, n_embd=64, n_layer=2, n_head=4, rotary_dim=8)


def _random(config: CodeGenConfig = TINY, seed: int = 0) -> CodeGenForCausalLM:
    model = CodeGenForCausalLM(config)
    model.init_weights(seed=seed, std=0.2)
    with torch.no_grad():  # non-zero biases and LayerNorms, so every tensor is checked
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)) * 0.01)
    return model.eval()


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb)
    for name, t in ta.items():
        assert t.dtype == tb[name].dtype and torch.equal(t, tb[name]), name


@pytest.mark.parametrize(
    "fmt,shards,file_dtype",
    [
        ("safetensors", 1, None),
        ("safetensors", 1, torch.float16),
        ("safetensors", 3, torch.bfloat16),
        ("bin", 1, None),
        ("bin", 1, torch.float16),
    ],
)
@pytest.mark.parametrize("bits", [8, 4])
def test_streamed_quantization_equals_whole_model(tmp_path, fmt, shards, file_dtype, bits):
    directory = save_checkpoint(_random(), tmp_path / "ckpt", file_dtype, fmt, shards)
    whole = load_model(directory, dtype=torch.bfloat16)
    exact = LogitsHead.for_model(whole)
    quantize_linears(whole, bits=bits)
    kept: dict[str, torch.nn.Module] = {}
    hook = quantize_on_load("int8" if bits == 8 else "int4", torch.bfloat16, False, kept)
    streamed = load_model(directory, dtype=torch.bfloat16, on_linear=hook)
    _assert_same(whole, streamed)
    assert torch.equal(kept["lm_head"].weight, exact.weight)
    tokens, positions = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]]), torch.arange(10)
    with torch.inference_mode():
        assert torch.equal(whole(tokens, positions), streamed(tokens, positions))


def test_dense_copy_changes_memory_not_results(tmp_path):
    directory = save_checkpoint(_random(), tmp_path / "ckpt")
    models = {}
    for dense in (False, True):
        hook = quantize_on_load("int8", torch.bfloat16, dense, {})
        models[dense] = load_model(directory, dtype=torch.bfloat16, on_linear=hook)
    blocks = [m for m in models[True].transformer.modules() if isinstance(m, Int8Linear)]
    assert blocks and all(m.dense is not None for m in blocks)
    assert models[True].lm_head.dense is None and models[False].lm_head.dense is None
    extra = sum(2 * m.in_features * m.out_features for m in blocks)  # bf16 copies
    assert weight_nbytes(models[True]) - weight_nbytes(models[False]) == extra
    tokens, positions = torch.randint(0, 96, (1, 40)), torch.arange(40)  # past small_rows
    with torch.inference_mode():
        assert torch.equal(models[False](tokens, positions), models[True](tokens, positions))


def test_tied_head_and_published_buffers(tmp_path):
    config = dataclasses.replace(TINY, tie_word_embeddings=True)
    model = _random(config)
    directory = save_checkpoint(model, tmp_path / "tied")
    file = directory / "model.safetensors"
    state = load_file(str(file))
    del state["lm_head.weight"], state["lm_head.bias"]
    state["transformer.h.0.attn.causal_mask"] = torch.ones(1, 1, 64, 64, dtype=torch.bool)
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e9)
    save_file(state, str(file))
    plain = load_model(directory)
    assert torch.equal(plain.lm_head.weight, plain.transformer.wte.weight)
    assert not plain.lm_head.bias.any()
    kept: dict[str, torch.nn.Module] = {}
    quantized = load_model(
        directory, torch.bfloat16, on_linear=quantize_on_load("int8", torch.bfloat16, False, kept)
    )
    assert isinstance(quantized.lm_head, Int8Linear)
    assert torch.equal(kept["lm_head"].weight, quantized.transformer.wte.weight)


def test_non_float_weight_is_refused_before_reading(tmp_path):
    directory = save_checkpoint(_random(), tmp_path / "ckpt")
    file = directory / "model.safetensors"
    state = load_file(str(file))
    state["transformer.ln_f.bias"] = torch.zeros(64, dtype=torch.int64)
    save_file(state, str(file))
    with pytest.raises(CheckpointError, match=r"ln_f\.bias has dtype torch\.int64"):
        load_model(directory)


# The load runs in a clean process; it prints its resident memory before and its peak after.
_MEASURE = """
import json, sys, torch
from codegen_lsp.codegen.checkpoint import load_model
from codegen_lsp.engine.loader import quantize_on_load
from codegen_lsp.engine.machine import process_memory
from codegen_lsp.engine.quantize import weight_nbytes
quantize, kept = sys.argv[2], {}
hook = None if quantize == "none" else quantize_on_load(quantize, torch.bfloat16, False, kept)
before = process_memory()["VmRSS"]
model = load_model(sys.argv[1], dtype=torch.bfloat16, on_linear=hook)
head = kept["lm_head"].weight if kept else None  # the unquantized head the engine keeps
print(json.dumps({"before": before, "peak": process_memory()["VmHWM"],
                  "weights": weight_nbytes(model, head)}))
"""


@pytest.fixture(scope="module")
def fp32_checkpoint(tmp_path_factory) -> tuple[Path, int]:
    """A float32 checkpoint of ~270 MB (68M weights), written once, and its size."""
    config = CodeGenConfig(
        vocab_size=16384, n_positions=256, n_embd=768, n_layer=6, n_head=12, rotary_dim=32
    )
    model = CodeGenForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    directory = save_checkpoint(model, tmp_path_factory.mktemp("fp32") / "ckpt")
    del model
    config_dtype = json.loads((directory / "config.json").read_text()).get("torch_dtype")
    assert config_dtype in (None, "float32")
    return directory, os.path.getsize(directory / "model.safetensors")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_load_holds_no_whole_model_fp32_copy(fp32_checkpoint, quantize):
    directory, fp32_bytes = fp32_checkpoint
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(directory), quantize],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    growth = figures["peak"] - figures["before"]
    # reading the whole float32 state dict first takes fp32_bytes by itself, beside the bf16
    # weights (the old loader grew by ~1.9x fp32_bytes here); tensor by tensor the growth is
    # the weights plus one tensor's temporaries (4 MiB chunks): measured ~1.05x the weights
    # unquantized, ~1.2x with int8
    assert figures["weights"] < 0.55 * fp32_bytes
    assert growth < figures["weights"] + 0.25 * fp32_bytes, (figures, fp32_bytes)
    assert growth < 0.75 * fp32_bytes, (figures, fp32_bytes)


def test_status_reports_memory(tiny_checkpoint):
    from codegen_lsp.engine.api import EngineSpec
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.machine import weight_bytes
    from codegen_lsp.server.server import memory_fields

    spec = EngineSpec(
        str(tiny_checkpoint), device="cpu", dtype="bfloat16", quantize="int8", threads=1
    )
    engine = load_engine(spec)
    held = engine.info.weight_bytes
    assert held == weight_nbytes(engine.model, engine.head.weight, engine.head.bias)
    estimate = weight_bytes(engine.model.config, torch.bfloat16, "int8")
    assert abs(held - estimate) < 0.05 * estimate  # the pre-load check's figure is right
    fields = memory_fields(held)
    assert fields["weightsMb"] == round(held / 2**20, 1)
    assert 0 < fields["rssMb"] <= fields["peakRssMb"]
