"""CodeGen2's qkv layout: 8 model-parallel shards where CodeGen1 has 4.

The reference is transformers' own ``CodeGenForCausalLM`` with its attention's ``mp_num`` set
to 8 (the one number CodeGen2-1B's published ``modeling_codegen.py`` changes), so the 8-shard
split is computed by code that is not ours; a first test checks that reference against a
hand-written regrouping of the weight into transformers' 4-shard layout. Our loader must
find the count in the checkpoint (a ``qkv_shards`` key, or the ``mp_num`` of a modeling file
read as text), and match the reference in logits, in the engine's greedy generation, and
through the GPT-J export run by transformers' ``GPTJForCausalLM``. A published CodeGen1
layout (no key, no modeling file) still loads with 4.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import torch
from engine_support import greedy_ids
from support import CLI_COMMAND, TOKENIZER_DIR

from codegen_lsp.codegen.checkpoint import CheckpointError, load_model
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.export import export_gptj

transformers = pytest.importorskip("transformers")

# CodeGen2-1B's geometry at small width: n_head a multiple of 8 (its code splits heads over
# the shards), rotary over part of each head, n_inner set
SHAPE = dict(n_embd=64, n_layer=2, n_head=8, rotary_dim=4, n_inner=96)
VOCAB = 300
# what CodeGen2-1B's modeling_codegen.py says, inside CodeGenAttention.forward
MODELING_8 = """class CodeGenAttention(nn.Module):
    def forward(self, hidden_states):
        qkv = self.qkv_proj(hidden_states)

        # TPU-v3
        mp_num = 8
        qkv_split = qkv.reshape(qkv.shape[:-1] + (mp_num, -1))
"""


def _reference(shards: int, seed: int = 0, vocab: int = VOCAB) -> torch.nn.Module:
    """transformers' CodeGen (random weights) reading its qkv weight in ``shards`` shards."""
    cfg = transformers.CodeGenConfig(
        vocab_size=vocab, n_positions=128, bos_token_id=1, eos_token_id=2, **SHAPE
    )
    torch.manual_seed(seed)
    model = transformers.CodeGenForCausalLM(cfg).eval()
    with torch.no_grad():  # less flat than the initialisation: greedy decoding means something
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    for block in model.transformer.h:
        assert block.attn.mp_num == 4  # transformers' constant, which the test replaces
        block.attn.mp_num = shards
    return model


def _logits(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def _eight_to_four(weight: torch.Tensor) -> torch.Tensor:
    """An 8-shard qkv weight regrouped into transformers' 4-shard layout, row by row: each of
    q, v, k is the concatenation of its shard blocks, so 4-shard block (t, part) is 8-shard
    blocks (2t, part) and (2t + 1, part)."""
    width = weight.shape[1]
    local8 = width // 8
    rows = []
    for t in range(4):
        for part in range(3):  # q, v, k
            for shard in (2 * t, 2 * t + 1):
                start = (shard * 3 + part) * local8
                rows.extend(range(start, start + local8))
    return weight[rows]


def _write(model: torch.nn.Module, directory: Path, declare: str) -> Path:
    """Save ``model``'s weights unchanged, declaring their qkv layout as ``declare`` says."""
    model.save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    assert "qkv_shards" not in config and config["n_ctx"] == 2048
    if declare == "key":
        config["qkv_shards"] = 8
    elif declare == "modeling file":
        (directory / "modeling_codegen.py").write_text(MODELING_8)
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_codegen.CodeGenForCausalLM"}
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_reference_reads_eight_shards():
    """The reference is right: mp_num = 8 equals the hand-regrouped 4-shard weight in plain
    transformers, and differs from reading the same weight as 4 shards."""
    eight = _reference(8)
    four = _reference(4)  # same seed: same weights
    tokens = torch.randint(0, VOCAB, (2, 40))
    ref = _logits(eight, tokens)
    assert (ref - _logits(four, tokens)).abs().max().item() > 1e-2
    with torch.no_grad():
        for block in four.transformer.h:
            block.attn.qkv_proj.weight.copy_(_eight_to_four(block.attn.qkv_proj.weight))
    assert (ref - _logits(four, tokens)).abs().max().item() < 1e-5


@pytest.mark.parametrize("declare", ["key", "modeling file", "override"])
def test_engine_model_matches_eight_shard_reference(tmp_path, declare):
    ref = _reference(8, seed=1)
    directory = _write(ref, tmp_path / "codegen2", declare)
    ours = load_model(directory, qkv_shards=8 if declare == "override" else None)
    assert ours.config.qkv_shards == 8
    tokens = torch.randint(0, VOCAB, (2, 50))
    with torch.no_grad():
        got = ours(tokens, torch.arange(50))
    assert (got - _logits(ref, tokens)).abs().max().item() < 1e-4
    prompt = [5, 17, 42, 99, 3, 250, 7]
    want = ref.generate(
        torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False
    )[0, len(prompt) :].tolist()
    assert greedy_ids(ours, prompt, 24, vocab=VOCAB) == want


@pytest.mark.parametrize("declare", ["modeling file", "setting"])
def test_local_engine_generates_as_the_reference(tmp_path, declare):
    """Through ``load_engine`` (the server's path: tokenizer, KV slots, decode loop), float32;
    the count from the shipped modeling file, or from the ``qkvShards`` setting alone."""
    from codegen_lsp.engine.api import EngineSpec, GenerateRequest
    from codegen_lsp.engine.loader import load_engine

    ref = _reference(8, seed=2, vocab=50304)
    directory = _write(ref, tmp_path / "codegen2", declare)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (TOKENIZER_DIR / name).is_file():
            shutil.copyfile(TOKENIZER_DIR / name, directory / name)
    spec = EngineSpec(
        model=str(directory),
        dtype="float32",
        quantize="none",
        threads=1,
        cache_memory_mb=8,
        qkv_shards=8 if declare == "setting" else 0,
    )
    engine = load_engine(spec)
    try:
        prompt = engine.encode("def fibonacci(n):\n    ")
        request = GenerateRequest("doc", prompt, max_new_tokens=16, heal=False, ignore_eos=True)
        got = engine.generate(request, threading.Event()).candidates[0].token_ids
    finally:
        engine.close()
    want = ref.generate(
        torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False
    )[0, len(prompt) :].tolist()
    assert got == want


def test_gptj_export_of_eight_shards_matches_reference(tmp_path):
    ref = _reference(8, seed=3)
    source = _write(ref, tmp_path / "codegen2", "modeling file")
    shutil.copyfile(TOKENIZER_DIR / "tokenizer.json", source / "tokenizer.json")
    summary = export_gptj(source, tmp_path / "gptj")
    assert summary["qkv_shards"] == 8
    gptj = transformers.GPTJForCausalLM.from_pretrained(tmp_path / "gptj").eval()
    tokens = torch.randint(0, VOCAB, (2, 50))
    assert (_logits(gptj, tokens) - _logits(ref, tokens)).abs().max().item() < 1e-4


def test_export_command_with_qkv_shards_matches_reference(tmp_path):
    """``codegen-lsp export --qkv-shards 8`` on a checkpoint that declares nothing."""
    ref = _reference(8, seed=5)
    source = _write(ref, tmp_path / "codegen2", "nothing")
    shutil.copyfile(TOKENIZER_DIR / "tokenizer.json", source / "tokenizer.json")
    proc = subprocess.run(
        [*CLI_COMMAND, "export", str(source), str(tmp_path / "gptj"), "--qkv-shards", "8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    gptj = transformers.GPTJForCausalLM.from_pretrained(tmp_path / "gptj").eval()
    tokens = torch.randint(0, VOCAB, (2, 50))
    assert (_logits(gptj, tokens) - _logits(ref, tokens)).abs().max().item() < 1e-4


def test_codegen1_layout_still_loads_with_four(tmp_path):
    """A published CodeGen1 checkpoint has neither key nor modeling file: 4 shards, as
    transformers reads it (and its export too)."""
    ref = _reference(4, seed=4)
    directory = _write(ref, tmp_path / "codegen1", "nothing")
    assert not list(directory.glob("*.py"))
    assert "qkv_shards" not in json.loads((directory / "config.json").read_text())
    ours = load_model(directory)
    assert ours.config.qkv_shards == 4
    tokens = torch.randint(0, VOCAB, (1, 40))
    with torch.no_grad():
        assert (ours(tokens, torch.arange(40)) - _logits(ref, tokens)).abs().max().item() < 1e-4
    shutil.copyfile(TOKENIZER_DIR / "tokenizer.json", directory / "tokenizer.json")
    assert export_gptj(directory, tmp_path / "gptj")["qkv_shards"] == 4


def test_where_the_count_comes_from(tmp_path):
    """Key over modeling file over 4; an override over both; a modeling file is only read."""
    directory = tmp_path / "ckpt"
    directory.mkdir()
    config = {"model_type": "codegen", "n_embd": 64, "n_head": 8, "rotary_dim": 4}
    (directory / "config.json").write_text(json.dumps(config))
    assert CodeGenConfig.from_file(directory).qkv_shards == 4
    # transformers' own CodeGen as a modeling file: self.mp_num = 4
    (directory / "modeling_codegen.py").write_text("        self.mp_num = 4  # TPU cores\n")
    assert CodeGenConfig.from_file(directory).qkv_shards == 4
    (directory / "modeling_codegen.py").write_text(MODELING_8 + "raise SystemExit('ran')\n")
    assert CodeGenConfig.from_file(directory).qkv_shards == 8
    assert CodeGenConfig.from_file(directory, qkv_shards=4).qkv_shards == 4
    (directory / "config.json").write_text(json.dumps({**config, "qkv_shards": 2}))
    assert CodeGenConfig.from_file(directory).qkv_shards == 2
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "modeling_codegen.py").write_text("mp_num = 8\nmp_num = 4\n")
    with pytest.raises(ConfigError, match=r"modeling_codegen\.py: sets mp_num to 4 and 8"):
        CodeGenConfig.from_file(directory)


def test_bad_shard_counts_are_named(tmp_path):
    base = {"model_type": "codegen", "n_embd": 64, "n_head": 8, "rotary_dim": 4}
    with pytest.raises(ConfigError, match=r"qkv_shards must be an integer, got \"8\""):
        CodeGenConfig.from_dict({**base, "qkv_shards": "8"})
    with pytest.raises(ConfigError, match="qkv_shards must be positive"):
        CodeGenConfig.from_dict({**base, "qkv_shards": 0})
    with pytest.raises(ConfigError, match="n_embd must be divisible by qkv_shards"):
        CodeGenConfig.from_dict({**base, "n_embd": 72, "qkv_shards": 16})
    ref = _reference(8, seed=5)
    directory = _write(ref, tmp_path / "ckpt", "key")
    with pytest.raises(CheckpointError, match="divisible by qkv_shards"):
        load_model(directory, qkv_shards=128)
