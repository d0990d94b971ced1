"""No valid checkpoint crashes the process: odd layer shapes (what transformers'
``CodeGenConfig`` accepts, including input sizes that are not multiples of 16 and the
tokenizer's 50,295-id vocabulary), every dtype and quantization, speculation on and off,
through ``generate``, ``serve`` and a ``draftModel``; each answers or says why in one line.

Also the load's self-check (:mod:`codegen_lsp.engine.selfcheck`): a kind of quantized layer
that computes wrong numbers is found on its real shape and moved to the dequantized route.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
import torch
from raw_lsp import RawServer
from support import CLI_COMMAND, TOKENIZER_DIR, cpu_settings

from codegen_lsp.commands.bench.synthetic import random_model, write_checkpoint
from codegen_lsp.engine import kernels
from codegen_lsp.engine.quantize import Int8Linear, quantize_linears
from codegen_lsp.engine.selfcheck import check_quantized, layer_error

TOKENIZER_IDS = 50295  # the CodeGen tokenizer's size: not a multiple of 16


def odd_shapes(count: int, seed: int = 20261206) -> list[dict[str, int]]:
    """Shapes transformers' CodeGenConfig accepts, biased to the awkward sizes: widths and
    MLP sizes that are not multiples of 16 (or 32), few heads, small rotary dims."""
    rng = random.Random(seed)
    shapes = []
    for _ in range(count):
        n_head = rng.choice([1, 2, 3, 4, 5])
        head_dim = rng.choice([4, 6, 8, 12, 20])
        shapes.append(
            {
                "n_positions": 128,
                "n_layer": rng.choice([1, 2]),
                "n_head": n_head,
                "n_embd": n_head * head_dim,
                "rotary_dim": rng.choice([r for r in (2, 4, 8) if r <= head_dim]),
                "n_inner": rng.choice([8, 40, 72, 100, 200, 4 * n_head * head_dim]),
                "vocab": rng.choice([TOKENIZER_IDS, 50304, 50301]),
            }
        )
    return shapes


SHAPES = odd_shapes(8)
RUNS = ["bfloat16-int8", "bfloat16-int4", "float32-none", "bfloat16-none"]


def _write(directory: Path, shape: dict[str, int], seed: int = 0) -> Path:
    dims = {k: v for k, v in shape.items() if k != "vocab"}
    model = random_model(dims, vocab_size=shape["vocab"], seed=seed)
    return write_checkpoint(directory, TOKENIZER_DIR, model)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("odd-shapes")
    return [_write(root / f"shape{i}", shape, seed=i) for i, shape in enumerate(SHAPES)]


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_generate_lives_on_odd_shapes(checkpoints: list[Path], index: int) -> None:
    run = RUNS[index % len(RUNS)]
    dtype, quantize = run.split("-")
    for native in ("1", "0"):  # the native kernels, and the ATen/torch route
        proc = subprocess.run(
            [*CLI_COMMAND, "generate", "--model", str(checkpoints[index]), "--dtype", dtype]
            + ["--quantize", quantize, "--max-new-tokens", "6", "--candidates", "2"]
            + ["--device", "cpu", "--no-truncate", "def f(x):"],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "CODEGEN_NATIVE": native},
        )
        assert proc.returncode in (0, 2), f"{SHAPES[index]} {run}: died: {proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 0:
            assert proc.stdout.startswith("def f(x):"), proc.stdout
        else:  # refused: one line saying why
            assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("speculation", ["lookup", "off"])
def test_serve_answers_on_odd_shapes(checkpoints, tmp_path, speculation) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        settings = cpu_settings(
            checkpoints[1], dtype="bfloat16", quantize="int8", speculation=speculation
        )
        server.initialize({"codegen": settings})
        uri = "file:///work/odd.py"
        for i, checkpoint in enumerate(checkpoints[1:4]):
            if i:  # a mid-session model switch, to another odd shape
                server.configure({"codegen": {**settings, "model": str(checkpoint)}})
                server.wait_state("ready")
            server.open(uri, f"def f{i}(x):\n    return x", version=i + 1)
            answer = server.inline(uri, 1, 12)
            assert "error" not in answer, answer
            assert server.status()["state"] == "ready"
    finally:
        assert server.close() == 0
    assert "Traceback" not in server.log()


def test_draft_model_of_an_odd_shape(checkpoints, tiny_checkpoint, tmp_path) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        settings = cpu_settings(
            tiny_checkpoint,
            dtype="bfloat16",
            quantize="int8",
            draftModel=str(checkpoints[0]),
            speculation="draft",
        )
        server.initialize({"codegen": settings})
        uri = "file:///work/draft.py"
        server.open(uri, "def g(x):\n    return x")
        answer = server.inline(uri, 1, 12)
        assert "error" not in answer, answer
        assert server.status()["state"] == "ready"
    finally:
        assert server.close() == 0


def _int8_model(shape: dict[str, int]) -> torch.nn.Module:
    dims = {k: v for k, v in shape.items() if k != "vocab"}
    model = random_model(dims, vocab_size=512, seed=3).to(torch.bfloat16)
    quantize_linears(model, 8)
    return model


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_self_check_passes_right_layers(index: int) -> None:
    model = _int8_model(SHAPES[index])
    assert check_quantized(model) == []
    for layer in model.modules():
        if isinstance(layer, Int8Linear):
            assert layer_error(layer, seed=1) <= 1.0, layer


def test_self_check_moves_a_wrong_kernel_to_dense() -> None:
    model = _int8_model({"n_positions": 64, "n_layer": 1, "n_head": 2, "n_embd": 32,
                         "rotary_dim": 4, "n_inner": 64, "vocab": 512})  # fmt: skip
    layers = [m for m in model.modules() if isinstance(m, Int8Linear) and m.route == "native"]
    if not layers:
        pytest.skip(f"native kernels not in use here: {kernels.describe()}")
    fc_in = [m for m in layers if (m.in_features, m.out_features) == (32, 64)]
    assert fc_in and fc_in[0].scale32 is not None
    fc_in[0].scale32.mul_(2)  # what the native kernel reads, and the dense route does not
    x = torch.randn(1, 32).to(torch.bfloat16)
    notes = check_quantized(model)
    assert len(notes) == 1 and "32 -> 64" in notes[0] and "dequantized" in notes[0], notes
    assert fc_in[0].route == "dense"
    want = torch.nn.functional.linear(x.float(), fc_in[0].dequantized().float(), None)
    bias = fc_in[0].bias.float() if fc_in[0].bias is not None else 0
    got = fc_in[0](x).float()
    assert torch.allclose(got, want + bias, rtol=2e-2, atol=2e-2)
    assert layer_error(fc_in[0]) <= 1.0
