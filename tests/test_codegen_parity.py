"""Parity of our CodeGen against transformers' CodeGenForCausalLM on random weights."""

from __future__ import annotations

import pytest
import torch
from engine_support import greedy_ids

from codegen_lsp.codegen.checkpoint import load_model, save_checkpoint

transformers = pytest.importorskip("transformers")

SHAPES = [
    # rotary_dim smaller than the head size, n_inner set
    dict(n_embd=64, n_layer=2, n_head=4, rotary_dim=8, n_inner=96),
    # rotary over the whole head, default n_inner
    dict(n_embd=64, n_layer=3, n_head=8, rotary_dim=8, n_inner=None),
    # 350M's head geometry (head_dim 64, rotary 32) at small width
    dict(n_embd=128, n_layer=2, n_head=2 * 4, rotary_dim=8, n_inner=200),
    dict(n_embd=256, n_layer=1, n_head=4, rotary_dim=32, n_inner=None),
]


def _hf_model(shape: dict, seed: int, vocab: int = 300):
    cfg = transformers.CodeGenConfig(
        vocab_size=vocab,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
        **shape,
    )
    torch.manual_seed(seed)
    model = transformers.CodeGenForCausalLM(cfg).eval()
    with torch.no_grad():  # make the random model less flat so greedy decoding is meaningful
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module", params=range(len(SHAPES)), ids=lambda i: f"shape{i}")
def pair(request, tmp_path_factory):
    hf = _hf_model(SHAPES[request.param], seed=request.param)
    path = tmp_path_factory.mktemp(f"hf{request.param}")
    hf.save_pretrained(path)
    ours = load_model(path, dtype=torch.float32)
    return hf, ours, path


def test_logits_match_full_sequence(pair):
    hf, ours, _ = pair
    torch.manual_seed(0)
    tokens = torch.randint(0, 300, (3, 97))
    with torch.no_grad():
        ref = hf(tokens).logits
        got = ours(tokens, torch.arange(97))
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4


def test_greedy_generation_identical(pair):
    hf, ours, _ = pair
    prompt = [5, 17, 42, 99, 3, 250, 7]
    ref = hf.generate(
        torch.tensor([prompt]),
        max_new_tokens=32,
        min_new_tokens=32,
        do_sample=False,
        pad_token_id=0,
    )[0, len(prompt) :].tolist()
    got = greedy_ids(ours, prompt, 32, vocab=300)
    assert len(got) == 32
    assert got == ref


def test_incremental_decoding_equals_recompute(pair):
    _, ours, _ = pair
    torch.manual_seed(1)
    tokens = torch.randint(0, 300, (2, 60))
    with torch.no_grad():
        full = ours(tokens, torch.arange(60))
        cache = ours.new_cache(batch=2, max_len=64)
        pieces = []
        for start, end in [(0, 20), (20, 21), (21, 45), (45, 46), (46, 60)]:
            pieces.append(ours(tokens[:, start:end], torch.arange(start, end), cache))
    step = torch.cat(pieces, dim=1)
    assert (step - full).abs().max().item() < 1e-4


def test_rollback_by_position(pair):
    """Writing at an earlier position replaces the suffix: same as a fresh computation."""
    _, ours, _ = pair
    torch.manual_seed(2)
    a = torch.randint(0, 300, (1, 40))
    b = a.clone()
    b[0, 25:] = torch.randint(0, 300, (15,))
    with torch.no_grad():
        cache = ours.new_cache(max_len=64)
        ours(a, torch.arange(40), cache)
        rolled = ours(b[:, 25:], torch.arange(25, 40), cache)
        fresh = ours(b, torch.arange(40))[:, 25:]
    assert (rolled - fresh).abs().max().item() < 1e-4


@pytest.mark.parametrize("fmt,shards", [("safetensors", 1), ("safetensors", 3), ("bin", 1)])
def test_formats_load_the_same_model(pair, tmp_path, fmt, shards):
    _, ours, _ = pair
    save_checkpoint(ours, tmp_path, fmt=fmt, shards=shards)
    again = load_model(tmp_path)
    for (name, p), (name2, q) in zip(
        ours.state_dict().items(), again.state_dict().items(), strict=True
    ):
        assert name == name2
        assert torch.equal(p, q), name


def test_saved_checkpoint_loads_in_transformers(pair, tmp_path):
    hf, ours, _ = pair
    save_checkpoint(ours, tmp_path, shards=2)
    reloaded = transformers.CodeGenForCausalLM.from_pretrained(tmp_path).eval()
    tokens = torch.randint(0, 300, (1, 30))
    with torch.no_grad():
        assert (reloaded(tokens).logits - hf(tokens).logits).abs().max().item() < 1e-5


def test_bf16_close_to_fp32(pair):
    _, _, path = pair
    fp32 = load_model(path, dtype=torch.float32)
    bf16 = load_model(path, dtype=torch.bfloat16)
    tokens = torch.randint(0, 300, (1, 50))
    with torch.no_grad():
        a = fp32(tokens, torch.arange(50))
        b = bf16(tokens, torch.arange(50))
    assert b.dtype == torch.float32
    assert (a - b).abs().max().item() < 0.1 * a.abs().max().item()


def test_eight_shard_layout_round_trips(pair, tmp_path):
    """A model saved with qkv_shards 8 says so in config.json and loads back the same; the
    file's qkv rows really are in another order than the 4-shard file's."""
    from dataclasses import replace

    from safetensors.torch import load_file

    _, ours, _ = pair
    save_checkpoint(ours, tmp_path / "four")
    eight = type(ours)(replace(ours.config, qkv_shards=8))
    eight.load_state_dict(ours.state_dict())
    save_checkpoint(eight, tmp_path / "eight")
    assert '"qkv_shards": 8' in (tmp_path / "eight" / "config.json").read_text()
    again = load_model(tmp_path / "eight")
    assert again.config.qkv_shards == 8
    for (name, p), q in zip(ours.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    key = "transformer.h.0.attn.qkv_proj.weight"
    four_file = load_file(str(tmp_path / "four" / "model.safetensors"))[key]
    eight_file = load_file(str(tmp_path / "eight" / "model.safetensors"))[key]
    assert not torch.equal(four_file, eight_file)
