"""Bad checkpoints give one clear error naming the file and the problem."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from codegen_lsp.codegen.checkpoint import (
    CheckpointError,
    load_model,
    resolve,
    save_checkpoint,
)
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
from codegen_lsp.codegen.locate import is_hub_id
from codegen_lsp.codegen.modeling import CodeGenForCausalLM

TINY = CodeGenConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4, rotary_dim=4)


@pytest.fixture()
def good(tmp_path: Path) -> Path:
    model = CodeGenForCausalLM(TINY)
    model.init_weights(seed=3)
    return save_checkpoint(model, tmp_path / "good")


def _copy(good: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(good, bad)
    return bad


def test_good_checkpoint_loads(good):
    model = load_model(good)
    assert model.config.n_layer == 2


def test_missing_directory(tmp_path):
    with pytest.raises(CheckpointError, match="model directory not found"):
        resolve(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="model directory not found"):
        load_model(tmp_path / "nope")


def test_hub_id_not_cached_and_downloads_off(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_hub_id("Salesforce/codegen-350M-mono")
    with pytest.raises(CheckpointError, match="downloads are off"):
        resolve("Salesforce/codegen-350M-mono", allow_download=False)


def test_missing_config(good, tmp_path):
    bad = _copy(good, tmp_path)
    os.remove(bad / "config.json")
    with pytest.raises(CheckpointError, match=r"config\.json not found"):
        load_model(bad)


def test_invalid_config_json(good, tmp_path):
    bad = _copy(good, tmp_path)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read config"):
        load_model(bad)


def test_unknown_model_type(good, tmp_path):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["model_type"] = "llama"
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="model_type 'llama' is not supported"):
        load_model(bad)


def test_config_aliases_and_validation():
    cfg = CodeGenConfig.from_dict(
        {
            "model_type": "codegen",
            "hidden_size": 64,
            "num_hidden_layers": 3,
            "n_head": 4,
            "rotary_dim": 8,
        }
    )
    assert (cfg.n_embd, cfg.n_layer) == (64, 3)
    with pytest.raises(ConfigError, match="divisible"):
        CodeGenConfig.from_dict({"n_embd": 64, "n_head": 6})


def test_missing_weights_file(good, tmp_path):
    bad = _copy(good, tmp_path)
    os.remove(bad / "model.safetensors")
    with pytest.raises(CheckpointError, match="no weights found"):
        load_model(bad)


def test_truncated_safetensors(good, tmp_path):
    bad = _copy(good, tmp_path)
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        load_model(bad)


def test_garbage_safetensors(good, tmp_path):
    bad = _copy(good, tmp_path)
    (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(bad)


def test_wrong_shapes(good, tmp_path):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["n_inner"] = 100  # the weights were written with 4 * n_embd
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"fc_in\.weight has shape \(128, 32\)"):
        load_model(bad)


def test_missing_keys(good, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = _copy(good, tmp_path)
    state = load_file(str(bad / "model.safetensors"))
    del state["transformer.h.1.mlp.fc_out.bias"]
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing weights: transformer\.h\.1\.mlp\.fc_out"):
        load_model(bad)


def test_unexpected_keys_and_ignored_buffers(good, tmp_path):
    from safetensors.torch import load_file, save_file

    bad = _copy(good, tmp_path)
    state = load_file(str(bad / "model.safetensors"))
    state["transformer.h.0.attn.causal_mask"] = torch.ones(1, 1, 32, 32)
    state["transformer.h.0.attn.masked_bias"] = torch.tensor(-1e9)
    save_file(state, str(bad / "model.safetensors"))
    load_model(bad)  # published buffers are ignored
    state["transformer.h.0.attn.extra"] = torch.ones(3)
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected weights"):
        load_model(bad)


def test_bad_shard_index(good, tmp_path):
    bad = tmp_path / "sharded"
    model = load_model(good)
    save_checkpoint(model, bad, shards=2)
    (bad / "model.safetensors.index.json").write_text('{"weight_map": 3}')
    with pytest.raises(CheckpointError, match="invalid shard index"):
        load_model(bad)
    save_checkpoint(model, bad, shards=2)
    os.remove(bad / "model-00002-of-00002.safetensors")
    with pytest.raises(CheckpointError, match="00002.safetensors: file not found"):
        load_model(bad)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_bin_is_weights_only(good, tmp_path):
    bad = tmp_path / "evil"
    bad.mkdir()
    shutil.copy(good / "config.json", bad / "config.json")
    with open(bad / "pytorch_model.bin", "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(bad)


def test_path_that_is_a_file(good):
    with pytest.raises(CheckpointError, match="found a file"):
        resolve(good / "config.json")


# --- what config.json says, read as transformers reads it ------------------------------------


def test_n_positions_is_the_context_not_n_ctx(tmp_path):
    """transformers writes n_ctx (default 2048) before n_positions and never reads it: a
    checkpoint with n_positions 64 has a 64-token context, in the config and the engine."""
    transformers = pytest.importorskip("transformers")
    from support import TOKENIZER_DIR

    from codegen_lsp.engine.api import EngineSpec
    from codegen_lsp.engine.loader import load_engine

    cfg = transformers.CodeGenConfig(
        vocab_size=50304, n_positions=64, n_embd=32, n_layer=1, n_head=4, rotary_dim=4
    )
    transformers.CodeGenForCausalLM(cfg).save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert text.index('"n_ctx": 2048') < text.index('"n_positions": 64')
    assert load_model(tmp_path).config.n_positions == 64
    shutil.copyfile(TOKENIZER_DIR / "tokenizer.json", tmp_path / "tokenizer.json")
    spec = EngineSpec(model=str(tmp_path), dtype="float32", quantize="none", threads=1)
    engine = load_engine(spec)
    try:
        assert engine.n_ctx == 64
    finally:
        engine.close()


def test_field_name_wins_over_alias_wherever_it_stands():
    base = {"n_head": 4, "rotary_dim": 4}
    for data in ({"hidden_size": 64, "n_embd": 32}, {"n_embd": 32, "hidden_size": 64}):
        assert CodeGenConfig.from_dict({**base, **data}).n_embd == 32


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("n_embd", "32", 'n_embd must be an integer, got "32" (str)'),
        ("n_head", 4.0, "n_head must be an integer, got 4.0 (float)"),
        ("hidden_size", True, "hidden_size (n_embd) must be an integer, got true (bool)"),
        ("layer_norm_epsilon", "1e-5", 'layer_norm_epsilon must be a number, got "1e-5"'),
        ("rotary_dim", [4], "rotary_dim must be an integer or null, got [4] (list)"),
        ("activation_function", 3, "activation_function must be a string, got 3 (int)"),
        ("tie_word_embeddings", "no", 'tie_word_embeddings must be true or false, got "no"'),
        ("n_positions", None, "n_positions must be an integer, got null"),
    ],
)
def test_wrong_typed_config_value_names_the_key(good, tmp_path, key, value, message):
    bad = _copy(good, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg.pop({"hidden_size": "n_embd"}.get(key, ""), None)  # an alias counts when alone
    cfg[key] = value
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as info:
        load_model(bad)
    text = str(info.value)
    assert text.startswith(str(bad / "config.json") + ": ") and message in text, text


def test_non_finite_layer_norm_epsilon_is_refused():
    for eps in (0, -1e-5, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="layer_norm_epsilon must be a positive number"):
            CodeGenConfig(n_embd=32, n_head=4, rotary_dim=4, layer_norm_epsilon=eps)


CODEGEN25_CONFIG = {  # Salesforce/codegen25-7b-multi's config.json, abridged
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "vocab_size": 51200,
}


def test_codegen25_llama_layout_is_refused_saying_what_it_is(good, tmp_path):
    bad = _copy(good, tmp_path)
    (bad / "config.json").write_text(json.dumps(CODEGEN25_CONFIG))
    with pytest.raises(CheckpointError) as info:
        load_model(bad)
    text = str(info.value)
    assert "model_type 'llama' is not supported" in text
    assert "LLaMA" in text and "CodeGen2.5" in text  # what it is
    assert "CodeGen checkpoints only" in text and "codegen2-1B" in text  # what is supported
    assert "\n" not in text


# --- broken weights -------------------------------------------------------------------------


def _poison(directory: Path, name: str, value: float, fmt: str = "safetensors") -> None:
    from safetensors.torch import load_file, save_file

    if fmt == "bin":
        state = torch.load(directory / "pytorch_model.bin", weights_only=True)
    else:
        state = load_file(str(directory / "model.safetensors"))
    state[name] = state[name].clone()
    state[name].view(-1)[7] = value
    if fmt == "bin":
        torch.save(state, directory / "pytorch_model.bin")
    else:
        save_file(state, str(directory / "model.safetensors"))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weight_is_named_at_load(tmp_path, fmt, dtype, value):
    model = CodeGenForCausalLM(TINY)
    model.init_weights(seed=3)
    directory = save_checkpoint(model, tmp_path / "ckpt", fmt=fmt)
    for name in ("transformer.h.1.mlp.fc_in.weight", "transformer.h.0.attn.qkv_proj.weight"):
        _poison(directory, name, value, fmt)
        with pytest.raises(CheckpointError, match=rf"{name} holds NaN or infinite values: "):
            load_model(directory, dtype=dtype)
        _poison(directory, name, 0.0, fmt)
    load_model(directory, dtype=dtype)  # mended: loads again


def test_weight_beyond_float16_is_not_called_broken(good, tmp_path):
    bad = _copy(good, tmp_path)
    _poison(bad, "transformer.wte.weight", 1e6)
    load_model(bad, dtype=torch.float32)
    with pytest.raises(CheckpointError, match="wte.weight has values beyond the range of float16"):
        load_model(bad, dtype=torch.float16)


def test_export_refuses_non_finite_weight(good, tmp_path):
    from codegen_lsp.codegen.export import export_gptj

    bad = _copy(good, tmp_path)
    shutil.copyfile(
        Path(__file__).parent / "fixtures/codegen-tokenizer/tokenizer.json", bad / "tokenizer.json"
    )
    _poison(bad, "lm_head.weight", float("nan"))
    with pytest.raises(CheckpointError, match=r"lm_head\.weight holds NaN"):
        export_gptj(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the same, as a user of `codegen-lsp generate` sees it -------------------------------------


def _generate(directory: Path) -> subprocess.CompletedProcess[str]:
    from support import CLI_COMMAND

    return subprocess.run(
        [*CLI_COMMAND, "generate", "--model", str(directory), "--max-new-tokens", "4", "x ="],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_names_the_broken_key_tensor_and_model_type(tiny_checkpoint, tmp_path):
    cases = []
    bad = tmp_path / "typed"
    shutil.copytree(tiny_checkpoint, bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "layer_norm_epsilon": "1e-5"}))
    cases.append((bad, "layer_norm_epsilon must be a number"))
    bad = tmp_path / "nan"
    shutil.copytree(tiny_checkpoint, bad)
    _poison(bad, "transformer.h.0.mlp.fc_out.weight", float("nan"))
    cases.append((bad, "transformer.h.0.mlp.fc_out.weight holds NaN or infinite values"))
    bad = tmp_path / "llama"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "config.json").write_text(json.dumps(CODEGEN25_CONFIG))
    cases.append((bad, "model_type 'llama' is not supported"))
    for directory, message in cases:
        proc = _generate(directory)
        assert proc.returncode != 0 and proc.stdout == "", proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], proc.stderr
