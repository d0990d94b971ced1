"""Bad checkpoints give one clear error naming the file and the problem."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from codegen_lsp.codegen.checkpoint import (
    CheckpointError,
    is_hub_id,
    load_model,
    resolve,
    save_checkpoint,
)
from codegen_lsp.codegen.config import CodeGenConfig, ConfigError
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
