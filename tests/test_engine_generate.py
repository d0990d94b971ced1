"""The engine's contract: loading, stop rules, sampling, healing, cancellation, limits.

Models are tiny random-weight CodeGens; where a test needs a particular continuation, the
``lm_head`` bias is set so that the wanted ids win.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from engine_support import request_kwargs
from support import random_model, write_checkpoint

from codegen_lsp.codegen.checkpoint import CheckpointError
from codegen_lsp.engine.api import EngineSpec, GenerateRequest, GenerateResult
from codegen_lsp.engine.healing import TokenPrefixIndex, heal
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.machine import EngineConfigError

FIXTURE = Path(__file__).parent / "fixtures" / "codegen-tokenizer"
pytestmark = pytest.mark.usefixtures("one_thread")
PRINT, PAREN = 4798, 7  # "print", "("


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tiny"), FIXTURE)


def engine_with_bias(tokenizer, bias: dict[int, float], **kwargs) -> CodeGenEngine:
    model = random_model("tiny", seed=3)
    with torch.no_grad():
        for token, value in bias.items():
            model.lm_head.bias[token] = value
    return CodeGenEngine(
        model, tokenizer, cache_memory_mb=kwargs.pop("cache_memory_mb", 4), **kwargs
    )


def generate(engine: CodeGenEngine, prompt, **kwargs) -> GenerateResult:
    cancel = kwargs.pop("cancel", threading.Event())
    ids = engine.encode(prompt) if isinstance(prompt, str) else prompt
    key = kwargs.pop("key", "doc")
    return engine.generate(GenerateRequest(key, ids, **request_kwargs(kwargs)), cancel)


def test_load_engine_reports_progress(checkpoint) -> None:
    seen: list[tuple[str, int]] = []
    spec = EngineSpec(model=str(checkpoint), dtype="float32", threads=1, cache_memory_mb=8)
    engine = load_engine(spec, lambda message, percent: seen.append((message, percent)))
    percents = [p for _, p in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    assert "float32" in engine.description and engine.n_ctx == 512
    result = generate(engine, "def f(x):\n    return", max_new_tokens=5)
    assert len(result.candidates) == 1 and len(result.candidates[0].token_ids) == 5
    assert engine.cache_stats().held_bytes > 0


def test_auto_settings_load(checkpoint) -> None:
    engine = load_engine(EngineSpec(model=str(checkpoint), threads=1, cache_memory_mb=8))
    assert engine.device.type in ("cpu", "cuda")
    assert engine.act_dtype in (torch.float32, torch.bfloat16, torch.float16)
    assert generate(engine, "import os\n", max_new_tokens=3).candidates[0].finish_reason


@pytest.mark.parametrize(
    "spec, error",
    [
        (EngineSpec(model="/nonexistent/model"), CheckpointError),
        (EngineSpec(dtype="float8"), EngineConfigError),
        (EngineSpec(device="tpu"), EngineConfigError),
        (EngineSpec(quantize="int3"), EngineConfigError),
        (EngineSpec(dtype="float32", quantize="int8"), EngineConfigError),
        (EngineSpec(cache_memory_mb=0), EngineConfigError),
    ],
)
def test_load_errors_are_clear(spec, error, checkpoint) -> None:
    if spec.model is None:
        spec.model = str(checkpoint)
    with pytest.raises(error):
        load_engine(spec)


def test_cuda_missing_is_an_error(checkpoint) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineConfigError, match="CUDA"):
        load_engine(EngineSpec(model=str(checkpoint), device="cuda"))


def test_eos_ends_with_empty_text(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {tokenizer.eos_id: 50.0})
    (cand,) = generate(engine, "x = 1\n", max_new_tokens=8, heal=False).candidates
    assert cand.finish_reason == "eos" and cand.text == "" and cand.token_ids == []


def test_never_samples_past_tokenizer_vocab(tokenizer) -> None:
    bias = {i: 30.0 for i in range(tokenizer.vocab_size, 51200)}
    engine = engine_with_bias(tokenizer, bias)
    for temperature in (0.0, 1.0):
        result = generate(engine, "y = ", max_new_tokens=6, n=3, temperature=temperature, seed=1)
        for cand in result.candidates:
            assert cand.token_ids and max(cand.token_ids) < tokenizer.vocab_size


def test_stop_callback_cuts_text(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {PAREN: 8.0, 198: 7.9})  # "(" then "\n" compete
    seen: list[str] = []

    def stop(text: str) -> int | None:
        seen.append(text)
        return 2 if len(text) >= 3 else None

    (cand,) = generate(engine, "z", max_new_tokens=20, stop=stop, heal=False).candidates
    assert cand.finish_reason == "stop" and cand.text == seen[-1][:2]
    assert len(cand.token_ids) == len(seen) < 20


def test_length_limit_and_seeded_sampling(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {})
    kwargs = dict(max_new_tokens=7, n=3, temperature=1.0, top_p=0.9, top_k=50, seed=42)
    first = generate(engine, "def add(a, b):", **kwargs)
    again = generate(engine, "def add(a, b):", **kwargs)
    other = generate(engine, "def add(a, b):", **{**kwargs, "seed": 7})
    ids = [c.token_ids for c in first.candidates]
    assert ids == [c.token_ids for c in again.candidates]
    assert ids != [c.token_ids for c in other.candidates]
    assert len({tuple(i) for i in ids}) > 1  # the rows sample independently
    assert all(
        len(i) == 7 and c.finish_reason == "length"
        for i, c in zip(ids, first.candidates, strict=True)
    )
    assert first.stats.generated_tokens == 21 and again.stats.reused_tokens > 0


def test_token_healing_continues_inside_a_word(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {PAREN: 10.0, PRINT: 5.0})
    prompt = "def main():\n    pri"
    assert tokenizer.token_bytes()[engine.encode(prompt)[-1]] == b"pri"
    healed = generate(engine, prompt, max_new_tokens=3)
    assert healed.candidates[0].text.startswith("nt(")
    assert healed.candidates[0].token_ids[0] == PRINT
    plain = generate(engine, prompt, max_new_tokens=3, heal=False)
    assert plain.candidates[0].text.startswith("(")


def test_healing_index() -> None:
    table = [b"", b"p", b"pr", b"pri", b"print", b"private", b"(", b"x"]
    index = TokenPrefixIndex(table)
    assert sorted(index.starting_with(b"pri").tolist()) == [3, 4, 5]
    assert index.prefixes_of(b"pri") == [1, 2]
    mask = index.allowed_mask(b"pri")
    assert mask.nonzero().flatten().tolist() == [1, 2, 3, 4, 5]
    assert heal([7, 3], table, index).removed == b"pri"
    assert heal([7, 4], table, index).removed == b""  # "print" cannot grow
    assert heal([3], table, index).ids == [3]  # nothing would be left to prefill


def test_cancel_stops_within_one_step(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {})
    cancel = threading.Event()
    steps: list[str] = []

    def stop(text: str) -> None:
        steps.append(text)
        if len(steps) == 3:
            cancel.set()
        return None

    result = generate(engine, "for i in", max_new_tokens=50, stop=stop, cancel=cancel, heal=False)
    assert result.cancelled and result.candidates[0].finish_reason == "cancelled"
    assert len(result.candidates[0].token_ids) == 3 == len(steps)


def test_cancel_from_another_thread(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {})
    cancel = threading.Event()
    times: list[float] = []

    def stop(text: str) -> None:
        times.append(time.perf_counter())
        time.sleep(0.002)
        return None

    set_at: list[float] = []

    def fire() -> None:
        set_at.append(time.perf_counter())
        cancel.set()

    timer = threading.Timer(0.05, fire)
    timer.start()
    result = generate(engine, "while", max_new_tokens=500, stop=stop, cancel=cancel)
    timer.join()
    assert result.cancelled and len(times) < 500
    # at most the step that was running when the flag was set ends after it
    assert sum(t > set_at[0] for t in times) <= 1


def test_time_limit(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {})
    result = generate(engine, "import", max_new_tokens=50, time_limit_s=1e-6)
    assert result.candidates[0].finish_reason == "time" and not result.cancelled


def test_long_prompt_is_windowed(tokenizer) -> None:
    engine = engine_with_bias(tokenizer, {})
    ids = engine.encode("x = 1\n" * 400)
    assert len(ids) > engine.n_ctx
    result = generate(engine, ids, max_new_tokens=4)
    assert len(result.candidates[0].token_ids) == 4


def test_candidates_fit_a_small_budget(tokenizer) -> None:
    # 256 positions of the tiny model in float32 take 256 KiB: no room for forked rows
    engine = engine_with_bias(tokenizer, {}, cache_memory_mb=0.25)
    ids = engine.encode("def f():\n    return 1\n" * 10)
    result = generate(engine, ids, max_new_tokens=4, n=3, temperature=1.0, seed=3)
    assert len(result.candidates) == 3 and engine.cache.nbytes <= engine.cache.budget_bytes


def test_model_too_big_is_refused_clearly(checkpoint, monkeypatch) -> None:
    from codegen_lsp.engine import machine

    monkeypatch.setattr(machine, "available_memory", lambda device: 1024)
    with pytest.raises(EngineConfigError, match="needs about .* GiB"):
        load_engine(EngineSpec(model=str(checkpoint), dtype="float32"))
