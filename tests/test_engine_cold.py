"""The cold start (engine/cold.py) on the shipped model, over held-out text.

A prompt whose uncached part is too slow to prefill is answered from its tail: the answer is
exactly the answer to the tail alone, the tail's start stays put over consecutive keystrokes
(so they reuse its cache), the whole prompt is then prefilled while the worker is idle (a new
job interrupts it between blocks), and the next request runs on the whole prompt with little
to prefill and exactly the answer a fresh engine computes from scratch.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pygls.server
import pytest

from codegen_lsp.engine.api import GenerateRequest, GenerateResult
from codegen_lsp.engine.cold import COLD_SUFFIX, MIN_COLD, MIN_TAIL
from codegen_lsp.engine.loader import load_engine
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.spec import EngineSpec
from codegen_lsp.engine.worker import Worker

NEW = 16


def engine(cold_ms: int, reuse: bool = True) -> CodeGenEngine:
    loaded = load_engine(EngineSpec(cold_start_ms=cold_ms, prefix_reuse=reuse))
    assert isinstance(loaded, CodeGenEngine)
    if cold_ms:  # a slow machine, as seen by the policy: 128 tokens fit the budget, and
        # prompts this short count as cold (the shipped model's context is 512 tokens)
        loaded.cold.rate = MIN_TAIL / (cold_ms / 1000)
        loaded.cold.observe = lambda stats: None  # type: ignore[method-assign]
        loaded.cold.min_cold = 2 * MIN_TAIL
    return loaded


@pytest.fixture(scope="module")
def ids() -> list[int]:
    text = Path(pygls.server.__file__).read_text(encoding="utf-8")  # not in the model's corpus
    return engine(0).encode(text)[:460]


def run(e: CodeGenEngine, prompt: list[int], key: str = "doc.py") -> GenerateResult:
    request = GenerateRequest(key, prompt, max_new_tokens=NEW)
    return e.generate(request, threading.Event())


def test_a_cold_prompt_is_answered_from_its_tail_exactly(ids: list[int]) -> None:
    cold, fresh = engine(1000), engine(0, reuse=False)
    first = run(cold, ids[:400])
    tail = first.stats.cold_tail
    assert MIN_TAIL <= tail <= MIN_TAIL + 48  # the cut moves to a line start, not further
    assert first.stats.prompt_tokens == tail and first.stats.prefilled_tokens <= tail
    alone = run(fresh, ids[400 - tail : 400])
    assert first.candidates[0].token_ids == alone.candidates[0].token_ids
    second = run(cold, ids[:401])  # the next keystroke, before any background work
    assert second.stats.cold_tail == tail + 1  # the same start
    assert second.stats.reused_tokens >= tail - 8  # its cache is reused


def test_background_prefill_then_the_whole_prompt_exactly(ids: list[int]) -> None:
    cold, fresh = engine(1000), engine(0, reuse=False)
    assert run(cold, ids[:400]).stats.cold_tail > 0
    stopped = threading.Event()
    stopped.set()  # a job is waiting: the background yields before its first block
    assert cold.idle(stopped) is True
    rounds = 0
    while cold.idle(threading.Event()):
        rounds += 1
        assert rounds < 10
    assert cold.cold.pending is None
    later = run(cold, ids[:403])  # three tokens typed meanwhile
    assert later.stats.cold_tail == 0
    assert later.stats.reused_tokens >= 384  # the last block boundaries move as usual
    whole = run(fresh, ids[:403])
    assert later.candidates[0].token_ids == whole.candidates[0].token_ids
    assert any(s.key == "doc.py" + COLD_SUFFIX for s in cold.cache.slots)  # the tail's own


def test_the_worker_prefills_while_idle(ids: list[int]) -> None:
    cold = engine(1000)
    worker = Worker(lambda spec, progress: cold)
    try:
        worker.load(EngineSpec(), lambda *_: None).result()
        first = worker.submit(GenerateRequest("w.py", ids[:400], max_new_tokens=NEW)).result(60)
        assert first.stats.cold_tail > 0
        deadline = time.monotonic() + 60
        while cold.cold.pending is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cold.cold.pending is None, "the idle worker never prefilled the whole prompt"
        later = worker.submit(GenerateRequest("w.py", ids[:402], max_new_tokens=NEW)).result(60)
        assert later.stats.cold_tail == 0 and later.stats.reused_tokens >= 384
    finally:
        worker.close()


def test_off_and_warm_prompts_run_whole(ids: list[int]) -> None:
    off = engine(0)
    assert run(off, ids[:400]).stats.cold_tail == 0
    cold = engine(1000)
    assert run(cold, ids[:120]).stats.cold_tail == 0  # fits the budget
    assert run(cold, ids[:250]).stats.cold_tail == 0  # too few tokens to count as cold
    cold.cold.min_cold = MIN_COLD  # the default: at most 460 tokens fit the shipped model, so
    assert run(cold, ids[:460]).stats.cold_tail == 0  # its prompts never go cold, however slow
