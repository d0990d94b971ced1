"""``codegen-lsp export --format gptj``: the export computes the source's logits exactly.

transformers' ``GPTJForCausalLM`` on the export against its ``CodeGenForCausalLM`` on the
source, for a single-file, a sharded and a ``.bin`` source, and a sharded export; errors
for what cannot be exported name the problem and leave nothing behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from support import CLI_COMMAND, TOKENIZER_DIR

from codegen_lsp.codegen.checkpoint import CheckpointError, save_checkpoint
from codegen_lsp.codegen.export import export_gptj
from codegen_lsp.commands.bench.synthetic import copy_tokenizer, random_model

transformers = pytest.importorskip("transformers")

SHAPE = dict(n_positions=128, n_embd=96, n_layer=2, n_head=8, rotary_dim=8)


def source_checkpoint(directory: Path, fmt: str = "safetensors", shards: int = 1) -> Path:
    model = random_model(SHAPE, vocab_size=50304, seed=3, std=0.1)
    save_checkpoint(model, directory, fmt=fmt, shards=shards)
    copy_tokenizer(TOKENIZER_DIR, directory)
    return directory


@pytest.mark.parametrize(
    "fmt,shards,shard_mb", [("safetensors", 1, 4096), ("safetensors", 3, 1), ("bin", 1, 4096)]
)
def test_gptj_logits_equal_codegen(tmp_path: Path, fmt: str, shards: int, shard_mb: int) -> None:
    source = source_checkpoint(tmp_path / "src", fmt, shards)
    target = tmp_path / "gptj"
    run = subprocess.run(
        [*CLI_COMMAND, "export", "--format", "gptj", "--shard-mb", str(shard_mb),
         str(source), str(target)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    config = json.loads((target / "config.json").read_text())
    assert config["architectures"] == ["GPTJForCausalLM"] and config["model_type"] == "gptj"
    assert (target / "tokenizer.json").is_file() and (target / "generation_config.json").is_file()
    if shard_mb == 1:
        assert (target / "model.safetensors.index.json").is_file()
    codegen = transformers.CodeGenForCausalLM.from_pretrained(source).eval()
    gptj = transformers.GPTJForCausalLM.from_pretrained(target).eval()
    ids = torch.randint(0, 50000, (2, 100), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = codegen(ids).logits, gptj(ids).logits
    assert (want - got).abs().max().item() <= 1e-5
    with torch.no_grad():  # a control: q, k, v matter (swapping k and v breaks it)
        attn = gptj.transformer.h[0].attn
        attn.k_proj.weight, attn.v_proj.weight = attn.v_proj.weight, attn.k_proj.weight
        assert (want - gptj(ids).logits).abs().max().item() > 1e-3


def test_export_errors_name_the_problem(tmp_path: Path) -> None:
    source = source_checkpoint(tmp_path / "src")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep me")
    with pytest.raises(CheckpointError, match="not empty"):
        export_gptj(source, busy)
    assert (busy / "x").read_text() == "keep me"

    from safetensors.torch import load_file, save_file

    state = load_file(str(source / "model.safetensors"))
    del state["transformer.h.1.mlp.fc_in.weight"]
    save_file(state, str(source / "model.safetensors"))
    with pytest.raises(CheckpointError, match="missing weights: transformer.h.1.mlp.fc_in"):
        export_gptj(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    run = subprocess.run(
        [*CLI_COMMAND, "export", "nobody/not-cached-model", str(tmp_path / "o2")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1 and "downloads are off" in run.stderr, run.stderr
