"""``codegen-lsp generate --candidates 1 --temperature 0`` prints exactly what transformers'
``model.generate(**tokenizer(text))`` gives on the same published-style checkpoint, for
several shapes, including one whose ``n_head`` is not a multiple of 4 (transformers splits
the fused qkv into 4 shards of ``n_embd / 4`` rows, not of whole heads); and the shipped
model, which says it was trained with ``<|endoftext|>`` before each file, gets that token.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from support import CLI_COMMAND, TOKENIZER_DIR

from codegen_lsp.commands.bench.synthetic import random_model, write_checkpoint
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.loader import load_engine

transformers = pytest.importorskip("transformers")

SHAPES = {
    "h3-e96": dict(n_positions=256, n_embd=96, n_layer=2, n_head=3, rotary_dim=16),
    "h4-e64": dict(n_positions=256, n_embd=64, n_layer=2, n_head=4, rotary_dim=8),
    "h6-e120": dict(n_positions=256, n_embd=120, n_layer=3, n_head=6, rotary_dim=20),
}
PROMPT = "def fibonacci(n):\n    "


@pytest.mark.parametrize("shape", SHAPES)
def test_greedy_text_equals_transformers(tmp_path: Path, shape: str) -> None:
    model = random_model(SHAPES[shape], vocab_size=50295, seed=5, std=0.2)
    directory = write_checkpoint(tmp_path / shape, TOKENIZER_DIR, model)
    run = subprocess.run(
        [*CLI_COMMAND, "generate", PROMPT, "--model", str(directory), "--candidates", "1",
         "--temperature", "0", "--max-new-tokens", "24", "--no-truncate",
         "--dtype", "float32", "--quantize", "none", "--device", "cpu"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    hf = transformers.CodeGenForCausalLM.from_pretrained(directory).eval()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=50256)
    want = tokenizer.decode(out[0], skip_special_tokens=True)
    assert run.stdout.rstrip("\n") == want.rstrip("\n")
    assert len(out[0]) > len(inputs["input_ids"][0])  # it did generate


def test_the_checkpoint_decides_the_file_start_token(tmp_path: Path, default_model) -> None:
    published = write_checkpoint(tmp_path / "pub", TOKENIZER_DIR, random_model("tiny", 50295))
    assert load_engine(EngineSpec(model=str(published), **CPU)).bos_id is None
    assert load_engine(EngineSpec(model=str(published), file_start_bos=True, **CPU)).bos_id == 50256
    assert json.loads((default_model / "generation_config.json").read_text())["file_start_bos"]
    shipped = load_engine(EngineSpec(**CPU))
    assert shipped.bos_id is not None and shipped.bos_id == shipped.tokenizer.bos_id
    assert load_engine(EngineSpec(file_start_bos=False, **CPU)).bos_id is None


CPU = dict(device="cpu", dtype="float32", quantize="none")
