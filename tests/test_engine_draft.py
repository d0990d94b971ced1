"""Draft-model speculation (``draftModel``) is exact: greedy ids, text, the slot's recorded
blocks and its keys and values are the same with a draft model as with speculation off,
whatever the draft proposes. Real tiny models: the target with int8 weights (row-exact verify
calls), drafted for by itself (every draft kept: fewer target calls than tokens) and by an
unrelated random model (drafts rejected, same result); a draft whose tokenizer differs is
refused with a message that names the first differing token."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import random_model
from test_engine_speculation import SOURCE, assert_same, generate

from codegen_lsp.engine.draft import same_vocabulary
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.quantize import quantize_linears

pytestmark = pytest.mark.usefixtures("one_thread")


def int8_engine(model: torch.nn.Module, tokenizer) -> CodeGenEngine:
    model = copy.deepcopy(model).to(torch.bfloat16)
    head = LogitsHead.for_model(model)
    quantize_linears(model, bits=8)
    return CodeGenEngine(model, tokenizer, cache_memory_mb=2, max_block=32, head=head)


@pytest.fixture(scope="module")
def weights() -> dict[str, torch.nn.Module]:
    return {
        "target": random_model("tiny", std=0.08, seed=3),
        "other": random_model("tiny", std=0.08, seed=11),
    }


def pair(weights, tokenizer, draft: str) -> tuple[CodeGenEngine, CodeGenEngine]:
    """(target with a draft model, the same target without one)."""
    on, off = int8_engine(weights["target"], tokenizer), int8_engine(weights["target"], tokenizer)
    on.draft = int8_engine(weights[draft], tokenizer)
    return on, off


@pytest.mark.parametrize("draft", ["target", "other"])
def test_draft_model_equals_off(draft, weights, tokenizer) -> None:
    drafted = accepted = forwards = tokens = 0
    for start in (0, 900, 2600):
        prompt = tokenizer.encode(SOURCE[start : start + 600])
        on, off = pair(weights, tokenizer, draft)
        got, want = generate(on, prompt, "draft"), generate(off, prompt, "off")
        assert_same(got, want, on, off)
        drafted += got.stats.drafted_tokens
        accepted += got.stats.accepted_tokens
        forwards += got.stats.decode_forwards
        tokens += got.stats.generated_tokens
        # the next keystroke: both the target's and the draft's slots are reused
        longer = prompt + got.candidates[0].token_ids[:7] + tokenizer.encode(" y")
        got2, want2 = generate(on, longer, "auto", 24), generate(off, longer, "off", 24)
        assert_same(got2, want2, on, off)
        assert got2.stats.reused_tokens == want2.stats.reused_tokens
    assert drafted > 0
    if draft == "target":  # its own greedy choices: kept, several tokens per target call
        assert accepted == drafted and forwards < tokens
    assert "draft model" in on.speculation_state()


@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(start=st.integers(0, len(SOURCE) - 2000), size=st.integers(1, 1500), new=st.integers(1, 40))
def test_draft_model_equals_off_anywhere(start, size, new, weights, tokenizer) -> None:
    prompt = tokenizer.encode(SOURCE[start : start + size])[-230:]
    on, off = pair(weights, tokenizer, "other")
    assert_same(generate(on, prompt, "draft", new), generate(off, prompt, "off", new), on, off)


def test_lookup_setting_keeps_lookup_drafts(weights, tokenizer) -> None:
    on, off = pair(weights, tokenizer, "target")
    prompt = tokenizer.encode(SOURCE[:500])
    got, want = generate(on, prompt, "lookup"), generate(off, prompt, "off")
    assert_same(got, want, on, off)
    assert not on.draft.cache.slots, "speculation=lookup must not run the draft model"


def test_a_different_tokenizer_is_refused(tokenizer) -> None:
    target = tokenizer.token_bytes()
    assert same_vocabulary(target, list(target)) == ""
    other = list(target)
    other[300] = b"something else"
    assert "token 300" in same_vocabulary(target, other)
    assert "ids" in same_vocabulary(target, target[:10])


def test_draft_model_setting_loads_and_refuses(tmp_path, tiny_checkpoint) -> None:
    """``draftModel`` through the loader: drafting for itself works; a draft whose tokenizer
    maps an id to other bytes is refused, naming the setting and the token; without a
    ``draftModel``, ``speculation: draft`` says so and runs lookup."""
    import json
    import shutil

    from codegen_lsp.engine.api import EngineSpec
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.machine import EngineConfigError
    from codegen_lsp.server.settings import DRAFT_NEEDS_MODEL, parse_settings

    spec = EngineSpec(model=str(tiny_checkpoint), dtype="bfloat16", quantize="int8")
    engine = load_engine(EngineSpec(**{**vars(spec), "draft_model": str(tiny_checkpoint)}))
    assert engine.draft is not None and "draft model" in engine.speculation_state()
    other = tmp_path / "other"
    shutil.copytree(tiny_checkpoint, other)
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["Ġthe"], vocab["Ġa"] = vocab["Ġa"], vocab["Ġthe"]  # two ids swap their bytes
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(EngineConfigError, match=r"draftModel .* cannot draft .*token \d+"):
        load_engine(EngineSpec(**{**vars(spec), "draft_model": str(other)}))
    parsed, problems, _ = parse_settings({"speculation": "draft"})
    assert parsed.completion.speculation == "lookup" and problems == [DRAFT_NEEDS_MODEL]
    parsed, problems, _ = parse_settings({"speculation": "draft", "draftModel": "x"})
    assert parsed.completion.speculation == "draft" and not problems
    assert parsed.engine_spec().draft_model == "x"
