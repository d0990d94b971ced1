"""The KV cache's dtype: what ``kvCache: auto`` picks, that a bf16 cache under a bf16 model
changes nothing (keys and values are computed in bf16, so the cache holds them exactly), and
that an int8 cache (lossy) keeps the rules: reuse = recompute, speculation on = off.

On the shipped model (real weights, bf16 activations, int8 weights as the server loads it):
greedy text over held-out code is token for token the same with a bf16 and a float32 cache,
with reuse across keystrokes and with speculation, on whichever attention path is installed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pygls.server
import pytest
import torch

from codegen_lsp.engine import kernels
from codegen_lsp.engine.api import GenerateRequest
from codegen_lsp.engine.kv_cache import default_kv_dtype
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.spec import EngineSpec

CPU = torch.device("cpu")


def test_auto_picks_the_activation_dtype_only_where_it_is_exact_and_fast() -> None:
    bf16, f32 = torch.bfloat16, torch.float32
    assert default_kv_dtype(CPU, bf16, native_kv=True) is bf16
    assert default_kv_dtype(CPU, bf16, native_kv=False) is f32  # ATen over bf16 is slow
    assert default_kv_dtype(CPU, f32, native_kv=True) is f32
    assert default_kv_dtype(torch.device("cuda"), torch.float16, native_kv=False) is torch.float16


def _engine(kv: str, reuse: bool = True) -> CodeGenEngine:
    spec = EngineSpec(quantize="int8", dtype="bfloat16", kv_dtype=kv, prefix_reuse=reuse)
    engine = load_engine(spec)
    assert isinstance(engine, CodeGenEngine)
    return engine


def _greedy(engine: CodeGenEngine, ids: list[int], cuts: list[int], speculation: str) -> list:
    out, reused = [], int(not engine.prefix_reuse)
    for cut in cuts:  # consecutive cursors of one file: later ones reuse the cache
        request = GenerateRequest("f.py", ids[:cut], max_new_tokens=24, speculation=speculation)
        result = engine.generate(request, threading.Event())
        out.append(result.candidates[0].token_ids)
        reused += result.stats.reused_tokens
    assert reused > 0
    return out


@pytest.mark.parametrize("speculation", ["off", "lookup"])
def test_bf16_cache_gives_the_float32_cache_text(speculation: str) -> None:
    text = Path(pygls.server.__file__).read_text(encoding="utf-8")  # not in the model's corpus
    wide, narrow = _engine("float32"), _engine("bfloat16")
    assert (wide.kv_dtype, narrow.kv_dtype) == (torch.float32, torch.bfloat16)
    assert narrow.act_dtype == torch.bfloat16
    ids = wide.encode(text)
    cuts = [150, 157, 300, 301, 420]
    assert _greedy(narrow, ids, cuts, speculation) == _greedy(wide, ids, cuts, speculation)


def test_auto_on_the_shipped_model_follows_the_attention_path() -> None:
    engine = _engine("auto")
    native = kernels.table().entries["attend"].impl == "native"
    assert engine.kv_dtype == (torch.bfloat16 if native else torch.float32)
    assert f"{'bfloat16' if native else 'float32'} KV cache" in engine.description


def test_int8_cache_keeps_reuse_and_speculation_exact() -> None:
    text = Path(pygls.server.__file__).read_text(encoding="utf-8")
    reusing, fresh = _engine("int8"), _engine("int8", reuse=False)
    assert reusing.kv_dtype == torch.int8 and "int8 KV cache" in reusing.description
    ids = reusing.encode(text)
    cuts = [150, 157, 300, 301]
    lookup = _greedy(reusing, ids, cuts, "lookup")
    assert lookup == _greedy(reusing, ids, cuts, "off") == _greedy(fresh, ids, cuts, "off")
