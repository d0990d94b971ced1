"""Candidates on the engine (greedy first, seeded, scored) and `generate`'s ranking."""

from __future__ import annotations

import threading

import pytest
import torch
from engine_support import NumberTokenizer, greedy_ids

from codegen_lsp.codegen.checkpoint import load_model
from codegen_lsp.commands.generate import end_of_block, rank_key, repetitive, whole_lines
from codegen_lsp.engine.api import GenerateRequest, SamplingParams
from codegen_lsp.engine.local import CodeGenEngine


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, dtype=torch.float32)


def candidates(model, prompt, n, max_new, temperature, seed=None, eos=2, greedy_first=True):
    engine = CodeGenEngine(model, NumberTokenizer(300, eos_id=eos), prefix_reuse=False)
    sampling = SamplingParams(temperature, seed=seed)
    request = GenerateRequest(
        "c", prompt, max_new, n=n, sampling=sampling, greedy_first=greedy_first, heal=False
    )
    return engine.generate(request, threading.Event()).candidates


def test_first_candidate_is_greedy(model) -> None:
    prompt = [5, 17, 99, 3]
    greedy = greedy_ids(model, prompt, 12, vocab=300)
    cands = candidates(model, prompt, 4, 12, 0.9, seed=3, eos=-1)
    assert len(cands) == 4
    assert cands[0].token_ids == greedy
    assert all(len(c.token_ids) == 12 for c in cands)
    assert len({tuple(c.token_ids) for c in cands}) > 1  # the others are sampled


def test_candidates_are_seeded_and_scored(model) -> None:
    prompt = [1, 2, 3]
    a = candidates(model, prompt, 3, 8, 1.0, seed=11, eos=-1, greedy_first=False)
    b = candidates(model, prompt, 3, 8, 1.0, seed=11, eos=-1, greedy_first=False)
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    # the score is the model's own log-probability of the tokens (over the ids the tokenizer
    # can decode), recomputed here
    ids = prompt + a[1].token_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids]), torch.arange(len(ids)))[0, :, :300]
    logp = logits.log_softmax(-1)
    expected = sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(a[1].token_ids))
    assert a[1].logprob == pytest.approx(expected, abs=1e-3)
    assert a[1].mean_logprob == pytest.approx(expected / 8, abs=1e-3)


def test_candidates_stop_at_eos(model) -> None:
    prompt = [1, 2, 3]
    greedy = greedy_ids(model, prompt, 6, vocab=300)
    eos = greedy[2]
    cands = candidates(model, prompt, 2, 6, 0.0, eos=eos)
    assert cands[0].token_ids == greedy[:2] and cands[0].finish_reason == "eos"


def test_end_of_block_cuts_where_the_function_ends() -> None:
    text = "\n    return 1\n\nprint(f())\n"
    assert end_of_block("def f():", text) == "\n    return 1\n"
    assert end_of_block("x = ", "1\ny = 2\n") == "1\ny = 2\n"  # no block opened: as is
    nested = "\n        pass\n    def g(self):\n"
    assert end_of_block("class A:\n    def f(self):", nested) == "\n        pass\n"


def test_ranking_prefers_parsing_non_looping_text() -> None:
    prompt = "def f(n):"
    good = rank_key(prompt, "\n    return n\n", -2.0)
    broken = rank_key(prompt, "\n    return (n\n", -0.5)
    looping = rank_key(prompt, "\n    x = 1\n    x = 1\n", -0.1)
    empty = rank_key(prompt, "", 0.0)
    assert good > broken and good > looping and broken > empty
    assert repetitive("\n    'a bunch of a bunch of a bunch of a bunch of a bunch of'")
    assert not repetitive("\n    total = sum(values)\n    return total / len(values)\n")
    assert whole_lines("\n    a = 1\n    b = (") == "\n    a = 1\n"
