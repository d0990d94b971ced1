"""Speculative decoding by prompt lookup is exact: greedy ids with it on equal ids with it off.

Real tiny models, no mocks: a random-weight CodeGen with int8 weights and the refined head the
loader builds, the same with int4 weights, and chain checkpoints (the next token follows a
table) loaded through the loader with int8 weights. With lookup on, every verify call's rows
must reproduce one-token steps bit for bit: the ids, the text, the last hidden state, the
slot's recorded blocks and the keys and values it holds are compared with lookup off. A chain
that repeats a cycle of the prompt gets its drafts accepted (fewer forward calls than
tokens); a chain that never follows the prompt rejects every draft and still matches.
"""

from __future__ import annotations

import copy
import inspect
import re
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from engine_support import request_kwargs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from raw_lsp import RawServer
from support import CPU, random_model, write_chain_checkpoint

from codegen_lsp.engine.api import EngineSpec, GenerateRequest, GenerateResult
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.quantize import quantize_linears
from codegen_lsp.engine.speculate import DraftLength, LookupDrafter, rows_agree, verify_width
from codegen_lsp.server.settings import DRAFT_NEEDS_MODEL, parse_settings

pytestmark = pytest.mark.usefixtures("one_thread")
SOURCE = inspect.getsource(textwrap)
X, Y, Z, ZERO = 2124, 331, 1976, 657  # " x", " y", " z", " 0"


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[torch.nn.Module, LogitsHead]]:
    fp32 = random_model("tiny", std=0.08, seed=3)
    out = {"float32": (fp32, LogitsHead.for_model(fp32))}
    for bits in (8, 4):
        model = copy.deepcopy(fp32).to(torch.bfloat16)
        head = LogitsHead.for_model(model)  # refined from the bf16 head, as the loader does
        quantize_linears(model, bits=bits)
        out[f"int{bits}"] = (model, head)
    return out


def engine(models, mode: str, tokenizer) -> CodeGenEngine:
    model, head = models[mode]
    return CodeGenEngine(model, tokenizer, cache_memory_mb=2, max_block=32, head=head)


def generate(eng, prompt: list[int], speculation: str, new: int = 48, **kw) -> GenerateResult:
    req = GenerateRequest("doc", prompt, new, speculation=speculation, **kw)
    return eng.generate(req, threading.Event())


def slot_state(eng: CodeGenEngine) -> tuple[list[int], list, list[torch.Tensor]]:
    slot = eng.cache.slots[-1]
    n = slot.length
    return slot.tokens, slot.blocks, [t[:, :, :n] for t in slot.cache.buffers]


def assert_same(got: GenerateResult, want: GenerateResult, on, off) -> None:
    assert [c.token_ids for c in got.candidates] == [c.token_ids for c in want.candidates]
    assert [c.text for c in got.candidates] == [c.text for c in want.candidates]
    tokens, blocks, kv = slot_state(on)
    tokens_off, blocks_off, kv_off = slot_state(off)
    assert tokens == tokens_off and blocks == blocks_off
    assert all(torch.equal(a, b) for a, b in zip(kv, kv_off, strict=True))
    assert torch.equal(on.cache.slots[-1].last_hidden(), off.cache.slots[-1].last_hidden())


def test_where_lookup_is_exact(models, tokenizer) -> None:
    fp32, _ = models["float32"]
    width, reason = verify_width(fp32, torch.device("cpu"), compiled=False)
    assert width == 1 and "dense matmuls" in reason
    for mode in ("int8", "int4"):
        model, head = models[mode]
        width, reason = verify_width(model, torch.device("cpu"), compiled=False)
        assert (width, reason) == (8, "")
        assert verify_width(model, torch.device("cpu"), compiled=True)[0] == 1
        assert rows_agree(model, head, model.config, torch.float32, torch.device("cpu"), width)
    # int8 layers that switch to dense bf16 weights above one row: the check must catch it
    model, head = models["int8"]
    one_row = copy.deepcopy(model)
    for layer in one_row.modules():
        if hasattr(layer, "small_rows"):
            layer.small_rows = 1
    assert verify_width(one_row, torch.device("cpu"), compiled=False)[0] == 1
    assert not rows_agree(one_row, head, model.config, torch.float32, torch.device("cpu"), 8)
    eng = engine(models, "int8", tokenizer)
    assert eng.health().details["speculation"].startswith("lookup")
    assert engine(models, "float32", tokenizer).health().details["speculation"].startswith("off")


@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_lookup_equals_off_on_code(mode, models, tokenizer) -> None:
    drafted = accepted = 0
    for start in (0, 700, 1500, 2600, 4000):
        prompt = tokenizer.encode(SOURCE[start : start + 700])
        on, off = engine(models, mode, tokenizer), engine(models, mode, tokenizer)
        got, want = generate(on, prompt, "lookup"), generate(off, prompt, "off")
        assert_same(got, want, on, off)
        assert want.stats.drafted_tokens == 0
        if want.candidates[0].finish_reason == "length":  # one token per call without lookup
            assert want.stats.decode_forwards == want.stats.generated_tokens - 1
        drafted += got.stats.drafted_tokens
        accepted += got.stats.accepted_tokens
        # the next keystroke reuses the speculated slot exactly as it reuses a plain one
        longer = prompt + got.candidates[0].token_ids[:9] + tokenizer.encode(" x")
        got2, want2 = generate(on, longer, "lookup", 24), generate(off, longer, "off", 24)
        assert_same(got2, want2, on, off)
        assert got2.stats.reused_tokens == want2.stats.reused_tokens
    assert drafted > 0 and 0 <= accepted <= drafted


@pytest.mark.parametrize("mode", ["int8", "int4"])
@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    start=st.integers(0, len(SOURCE) - 2000),
    size=st.integers(1, 1500),
    new=st.integers(1, 40),
    heal=st.booleans(),
)
def test_lookup_equals_off_anywhere(mode, start, size, new, heal, models, tokenizer) -> None:
    prompt = tokenizer.encode(SOURCE[start : start + size])[-230:]
    on, off = engine(models, mode, tokenizer), engine(models, mode, tokenizer)
    got = generate(on, prompt, "lookup", new, heal=heal)
    want = generate(off, prompt, "off", new, heal=heal)
    assert_same(got, want, on, off)


def test_sampled_rows_do_not_speculate_greedy_first_does(models, tokenizer) -> None:
    prompt = tokenizer.encode(SOURCE[900:1500])
    on, off = engine(models, "int8", tokenizer), engine(models, "int8", tokenizer)
    kw = request_kwargs(dict(n=3, greedy_first=True, temperature=0.8, seed=7))
    got, want = generate(on, prompt, "auto", 32, **kw), generate(off, prompt, "off", 32, **kw)
    assert [c.token_ids for c in got.candidates] == [c.token_ids for c in want.candidates]
    sampled = generate(on, prompt, "auto", 32, **request_kwargs(dict(temperature=0.8, seed=1)))
    assert sampled.stats.drafted_tokens == 0


@pytest.fixture(scope="module")
def cycle_checkpoint(tmp_path_factory) -> Path:
    """A chain checkpoint whose greedy text cycles x y z 0."""
    chain = [(X, Y), (Y, Z), (Z, ZERO), (ZERO, X), (None, X)]
    return write_chain_checkpoint(tmp_path_factory.mktemp("cycle"), chain)


@pytest.fixture(scope="module")
def cycle_engine(cycle_checkpoint: Path):
    """The cycle checkpoint with int8 weights, loaded as a server would load it."""
    spec = EngineSpec(
        model=str(cycle_checkpoint), dtype="bfloat16", quantize="int8", cache_memory_mb=8
    )
    return load_engine(spec)


def test_repeated_cycle_is_accepted(cycle_engine) -> None:
    eng = cycle_engine
    assert eng.spec_width == 8, eng.speculation_state()
    prompt = [X, Y, Z, ZERO] * 6 + [X, Y]
    off = generate(eng, prompt, "off", 40, heal=False, ignore_eos=True)
    eng.clear_cache()
    on = generate(eng, prompt, "lookup", 40, heal=False, ignore_eos=True)
    want = ([Z, ZERO, X, Y] * 10)[:40]
    assert off.candidates[0].token_ids == want == on.candidates[0].token_ids
    s = on.stats
    assert s.accepted_tokens > 20 and s.accepted_tokens <= s.drafted_tokens
    assert s.decode_forwards < s.generated_tokens / 3, s
    assert off.stats.decode_forwards == 39 and off.stats.tokens_per_forward < 1.1


def test_drafts_all_rejected_still_match(tmp_path) -> None:
    # the prompt says a b c d e f g h, the model goes a c e g b d f h a ...
    a, b, c, d, e, f, g, h = 300, 301, 302, 303, 304, 305, 306, 307
    order = [a, c, e, g, b, d, f, h]
    chain = [(t, order[(i + 1) % len(order)]) for i, t in enumerate(order)] + [(None, a)]
    directory = write_chain_checkpoint(tmp_path, chain)
    eng = load_engine(
        EngineSpec(model=str(directory), dtype="bfloat16", quantize="int8", cache_memory_mb=8)
    )
    prompt = [a, b, c, d, e, f, g, h, a]
    off = generate(eng, prompt, "off", 7, heal=False, ignore_eos=True)
    eng.clear_cache()
    on = generate(eng, prompt, "lookup", 7, heal=False, ignore_eos=True)
    assert on.candidates[0].token_ids == off.candidates[0].token_ids == order[1:]
    assert on.stats.drafted_tokens > 0 and on.stats.accepted_tokens == 0
    assert on.stats.decode_forwards == off.stats.decode_forwards == 6


def test_lookup_drafter_and_draft_length() -> None:
    drafter = LookupDrafter([5, 6, 7, 8, 5, 6])
    assert drafter.propose(3) == ([7, 8, 5], 2)  # "5 6" was followed by 7 8 5
    drafter.extend([9])
    assert drafter.propose(2) == ([], 0)  # "9" never occurred before
    cycle = LookupDrafter([1, 2, 1, 2])
    assert cycle.propose(5) == ([1, 2, 1, 2, 1], 2)  # runs on into the repeating cycle
    assert cycle.propose(2, min_n=3) == ([], 0)  # "2 1 2" has no earlier occurrence
    cycle.extend([1])
    assert cycle.propose(2, min_n=3) == ([2, 1], 3)
    length = DraftLength(7)
    assert length.next() == (2, 1)
    length.update(2, 2)
    length.update(4, 4)
    assert length.next() == (7, 1)  # doubles up to the verify width
    length.update(7, 3)
    assert length.next() == (4, 1)
    length.update(4, 0)
    length.update(2, 0)
    length.update(1, 0)
    assert length.next() == (1, 3)  # at 0: one draft, on a 3-token match only
    length.update(1, 0)  # missed again: rest 2 steps, then 4 after the next miss
    assert [length.next() for _ in range(3)] == [(0, 3), (0, 3), (1, 3)]
    length.update(1, 0)
    assert [length.next()[0] for _ in range(5)] == [0, 0, 0, 0, 1]
    length.update(1, 1)  # kept: back to drafting
    assert length.next() == (2, 1)


def test_speculation_setting() -> None:
    parsed, problems, _ = parse_settings({"speculation": "off"})
    assert parsed.completion_options().speculation == "off" and not problems
    parsed, problems, _ = parse_settings({"speculation": "draft"})
    assert parsed.completion.speculation == "lookup" and problems == [DRAFT_NEEDS_MODEL]
    parsed, problems, _ = parse_settings({"speculation": "sometimes"})
    assert parsed.completion.speculation == "auto" and "speculation" in problems[0]


def test_status_and_log_count_drafts(tmp_path: Path, cycle_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        options = {"model": str(cycle_checkpoint), **CPU, "dtype": "bfloat16", "quantize": "int8"}
        server.initialize({"codegen": {**options, "maxNewTokens": 24}})
        uri = "file:///work/cycle.py"
        text = "v = x y z 0 x y z 0 x y z 0 x y"
        server.open(uri, text)
        server.inline(uri, 0, len(text))
        status = server.status()
        assert status["speculation"].startswith("lookup"), status
        assert status["acceptedDrafts"] > 0 and status["draftedTokens"] >= status["acceptedDrafts"]
        assert status["tokensPerForward"] > 1.5 and status["decodeForwards"] > 0
        assert re.search(
            r"drafted=\d+ accepted=[1-9]\d* forwards=\d+ tokens/forward=", server.log()
        )
    finally:
        server.close()
