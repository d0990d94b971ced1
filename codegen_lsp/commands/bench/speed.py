"""Bench parts of the speed work: speculation on and off, verify cost, what a user waits for.

* :func:`speculation_replay`: an editing replay of real code (cursor at line starts spread
  over a file, ~1,000 tokens before it) with greedy suggestions of ``new_tokens`` tokens,
  decoded with prompt-lookup speculation and without, taking turns; the two texts must be
  identical (any difference is counted: it would be a bug). Acceptance, tokens per forward and
  the decode speed-up come from the engine's own counters.
* :func:`verify_cost`: one row-exact verify call of ``w`` rows (the current token and ``w - 1``
  drafts) against a one-token step at the same context, model and head, best of ``repeats``.
* :func:`user_waits`: through the server's suggestion service with default settings: a cold
  suggestion (a newly opened file, the cursor at the end of a line that opens a block, ~900
  tokens in: a multi-line suggestion), answered
  early (the default: the first line) and whole (``answerEarly`` off), and a hover-triggered
  function body (up to 64 tokens), with the tokens each showed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from codegen_lsp.codegen.modeling import KVCache
from codegen_lsp.engine.api import GenerateRequest
from codegen_lsp.engine.local import CodeGenEngine

Log = Callable[[str], None]


def line_starts(
    text: str, encode: Callable[[str], list[int]], context: int, count: int, opener: bool = False
) -> list:
    """``count`` cursors at non-blank line starts spread over ``text`` (with ``opener``: only
    lines after one that opens a block, ending in ``:``), each with a window start (a line
    start) that leaves about ``context`` tokens before the cursor."""
    lines = text.split("\n")
    offsets, at = [], 0
    for line in lines:
        offsets.append(at)
        at += len(line) + 1
    usable = [
        i
        for i, line in enumerate(lines)
        if line.strip()
        and offsets[i] > 4 * context
        and (not opener or lines[i - 1].rstrip().endswith(":"))
    ]
    picks = [usable[round(j * (len(usable) - 1) / max(1, count - 1))] for j in range(count)]
    out = []
    for i in sorted(set(picks)):
        start = i
        while start > 0 and len(encode(text[offsets[start - 1] : offsets[i]])) < context:
            start = max(0, start - 8)
        out.append((offsets[start], offsets[i]))
    return out


def _greedy(engine: CodeGenEngine, key: str, ids: list[int], new: int, spec: str) -> Any:
    req = GenerateRequest(key, ids, max_new_tokens=new, ignore_eos=True, speculation=spec)
    return engine.generate(req, threading.Event())


def speculation_replay(
    engine: CodeGenEngine, text: str, positions: int, new_tokens: int, context: int, log: Log
) -> dict[str, Any]:
    """Decode speed with speculation off and on at ``positions`` cursors of ``text``."""
    encode = engine.encode
    sums = {m: {"decode_ms": 0.0, "tokens": 0, "forwards": 0} for m in ("off", "lookup")}
    drafted = accepted = mismatches = 0
    cursors = line_starts(text, encode, context, positions)
    _greedy(engine, "spec-warm", encode(text[: cursors[0][1]])[-context:], 4, "lookup")
    for n, (window, cursor) in enumerate(cursors):
        ids = encode(text[window:cursor])
        order = ("off", "lookup") if n % 2 == 0 else ("lookup", "off")
        texts = {}
        for mode in order:
            engine.cache.clear()
            result = _greedy(engine, f"spec-{mode}", ids, new_tokens, mode)
            stats = result.stats
            texts[mode] = result.candidates[0].token_ids
            sums[mode]["decode_ms"] += stats.decode_ms
            sums[mode]["tokens"] += stats.generated_tokens
            sums[mode]["forwards"] += stats.decode_forwards
            if mode == "lookup":
                drafted += stats.drafted_tokens
                accepted += stats.accepted_tokens
        mismatches += texts["off"] != texts["lookup"]
        if n % 10 == 0:
            log(f"  speculation {n + 1}/{len(cursors)}")
    engine.cache.clear()
    tok_s = {m: s["tokens"] / s["decode_ms"] * 1000 for m, s in sums.items()}
    return {
        "positions": len(cursors),
        "new_tokens": new_tokens,
        "context_tokens": context,
        "decode_tok_s": tok_s,
        "speedup": tok_s["lookup"] / tok_s["off"],
        "drafted": drafted,
        "accepted": accepted,
        "acceptance": accepted / drafted if drafted else 0.0,
        "tokens_per_forward": sums["lookup"]["tokens"] / max(1, sums["lookup"]["forwards"]),
        "text_mismatches": mismatches,
        "speculation": engine.speculation_state(),
    }


@torch.inference_mode()
def verify_cost(
    engine: CodeGenEngine, ids: list[int], context: int, widths: tuple[int, ...], repeats: int
) -> dict[str, Any]:
    """Milliseconds of one forward + head with ``w`` rows at ``context``, and the ratio to one."""
    step = engine.step
    config = engine.model.config
    cache = KVCache(config, 1, context + max(widths) + 1, engine.kv_dtype, engine.device)
    step.hidden([ids[:context]], 0, cache)
    ms: dict[str, float] = {}
    for _ in range(repeats):
        for w in widths:
            start = time.perf_counter()
            step([ids[context : context + w]], context, cache, exact=w > 1)
            took = (time.perf_counter() - start) * 1000
            ms[str(w)] = min(took, ms.get(str(w), float("inf")))
    return {
        "context": context,
        "ms": ms,
        "ratio_to_one_row": {w: v / ms["1"] for w, v in ms.items()},
        "row_exact_width": engine.spec_width,
    }


def _service(engine: CodeGenEngine, settings: dict[str, Any]) -> tuple[Any, Any]:
    """A suggestion service over ``engine`` with the server's settings parsing."""
    from codegen_lsp.completion.service import SuggestionService
    from codegen_lsp.engine.worker import Worker
    from codegen_lsp.server.settings import parse_settings

    # filter off: these figures are the model path's, whatever the gate would show
    parsed, problems, _ = parse_settings({"filter": "off", **settings})
    if problems:
        raise ValueError(f"bench settings: {problems}")
    worker = Worker(lambda spec, progress: engine)
    worker.load(parsed.engine_spec(), lambda *_: None).result()
    service = SuggestionService(worker, lambda message: None)
    service.ready = lambda: ""
    service.configure(parsed.completion_options(engine.info))
    return worker, service


def user_waits(
    engine: CodeGenEngine, text: str, positions: int, context: int, cold_ms: float, log: Log
) -> dict[str, Any]:
    """Cold suggestions and hover function bodies through the suggestion service (default
    settings, ``coldStartMs`` = ``cold_ms``; the engine's cache emptied before each, as for a
    newly opened file); then the same cursor once the background prefill is done; and cold
    suggestions reading the whole prompt (``coldStartMs`` 0), answered early and whole."""
    from codegen_lsp.completion.context import Cursor
    from codegen_lsp.completion.core import CompletionSkipped
    from codegen_lsp.completion.languages import language_for
    from codegen_lsp.server.documents import split_lines

    language = language_for("python", "bench.py")
    lines = text.split("\n")
    worker, service = _service(engine, {})
    whole_worker, whole = _service(engine, {"answerEarly": False})
    cold: list[dict[str, Any]] = []
    cold_whole: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    full: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    try:
        cursors = line_starts(text, engine.encode, context, positions, opener=True)
        for n, (window, cursor) in enumerate(cursors):
            doc_lines = split_lines(text[window:cursor])[:-1]  # cursor at the end of a line
            end = len(doc_lines) - 1
            c = Cursor.at(doc_lines, end, len(doc_lines[end]), language, "bench.py")
            for rows, svc, key in ((cold_whole, whole, "whole"), (full, service, "full")):
                engine.cache.clear()
                svc.reset()
                out, took = asyncio.run(_timed(svc, f"{key}{n}", c))
                rows.append({"ms": took, "tokens": len(engine.encode((out.texts or [""])[0]))})
            engine.cache.clear()
            service.reset()
            engine.cold.budget_ms = cold_ms
            out, took = asyncio.run(_timed(service, f"cold{n}", c))
            finished = time.monotonic() + 60
            while engine.cold.pending is not None and time.monotonic() < finished:
                time.sleep(0.02)  # the worker prefills the whole prompt while idle
            again, again_ms = asyncio.run(_timed(service, f"again{n}", c))
            engine.cold.budget_ms = 0
            after.append({"ms": again_ms, "tokens": len(engine.encode((again.texts or [""])[0]))})
            shown = out.texts[0] if out.texts else ""
            stats = out.stats
            cold.append(
                {
                    "cold_tail": stats.cold_tail if stats else 0,
                    "ms": took,
                    "tokens": len(engine.encode(shown)),
                    "generated": stats.generated_tokens if stats else 0,
                    "prefilled": stats.prefilled_tokens if stats else 0,
                    "prefill_ms": stats.prefill_ms if stats else 0.0,
                    "decode_ms": stats.decode_ms if stats else 0.0,
                }
            )
        defs = [i for i, line in enumerate(lines) if line.startswith("def ") and i > 60]
        for n, i in enumerate(defs[:positions]):
            head = i
            while head > 0 and len(engine.encode("\n".join(lines[head:i]))) < context:
                head = max(0, head - 8)
            doc_lines = split_lines("\n".join([*lines[head : i + 1], ""]))
            c = Cursor.at(doc_lines, i - head, len(lines[i]), language, "bench.py")
            engine.cache.clear()
            service.reset()
            start = time.perf_counter()
            try:
                made = asyncio.run(service.function_body(f"body{n}", lambda: 1, lambda c=c: c)).text
            except CompletionSkipped:
                made = ""
            took = (time.perf_counter() - start) * 1000
            bodies.append({"ms": took, "tokens": len(engine.encode(made)), "ok": bool(made)})
        log(f"  user waits: {len(cold)} cold suggestions, {len(bodies)} function bodies")
    finally:
        worker.close()
        whole_worker.close()
    engine.cache.clear()
    return {
        "cold_start_ms": cold_ms,
        "cold_suggestion": _summary(cold),
        "cold_tails": [r["cold_tail"] for r in cold],
        "after_background": _summary(after),
        "cold_suggestion_full_prompt": _summary(full),
        "cold_suggestion_whole": _summary(cold_whole),
        "function_body": _summary(bodies),
    }


async def _timed(service: Any, key: str, cursor: Any) -> tuple[Any, float]:
    """A suggestion and its milliseconds; then waits out any background decoding (an early
    answer's rest), so the next measurement starts with the engine idle."""
    start = time.perf_counter()
    out = await service.suggest(key, lambda: cursor)
    took = (time.perf_counter() - start) * 1000
    while service.busy:
        await asyncio.sleep(0.005)
    return out, took


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"count": 0}
    ms = sorted(r["ms"] for r in rows)
    return {
        "count": len(rows),
        "p50_ms": ms[len(ms) // 2],
        "max_ms": ms[-1],
        "mean_tokens": sum(r["tokens"] for r in rows) / len(rows),
        "rows": rows,
    }


def context_replay(
    engine: CodeGenEngine, text: str, others: dict[str, str], keystrokes: int, log: Log
) -> dict[str, Any]:
    """Typing ``keystrokes`` characters at a line start ~40% into ``text`` through the
    suggestion service (one-line suggestions of 8 tokens), with the snippet block from the
    ``others`` documents (``contextFiles`` 2) and without it (0), and with the rest of the file
    after the cursor (an infill prompt where the model has CodeGen2's tokens): tokens
    prefilled per model run, prompt sizes, latency."""
    from codegen_lsp.completion.context import Cursor
    from codegen_lsp.completion.languages import language_for
    from codegen_lsp.completion.neighbors import Neighbor
    from codegen_lsp.server.documents import split_lines

    language = language_for("python", "typed.py")
    neighbors = [Neighbor(path, split_lines(body)) for path, body in others.items()]
    start = text.index("\n", int(len(text) * 0.4)) + 1
    out: dict[str, Any] = {"keystrokes": keystrokes, "others": list(others)}
    for name, files, after in (("contextFiles=0", 0, ""), ("contextFiles=2", 2, ""),
                               ("text after the cursor", 0, text[start:])):  # fmt: skip
        settings = {"contextFiles": files, "multiline": "never", "maxNewTokens": 8}
        worker, service = _service(engine, {**settings, "answerEarly": False})
        service.neighbors = lambda key: neighbors
        engine.cache.clear()
        prefilled, prompts, ms, served = [], [], [], 0
        try:
            for k in range(keystrokes + 1):
                typed = text[: start + k]
                lines = split_lines(typed + ("\n" + after if after else ""))
                row = typed.count("\n")
                col = len(typed) - (typed.rfind("\n") + 1)
                c = Cursor.at(lines, row, col, language, "typed.py")
                begin = time.perf_counter()
                got = asyncio.run(service.suggest("typed.py", lambda c=c: c))
                if k == 0:
                    continue  # the cold first request
                if got.stats is None:
                    served += 1
                    continue
                ms.append((time.perf_counter() - begin) * 1000)
                prefilled.append(got.stats.prefilled_tokens)
                prompts.append(got.stats.prompt_tokens)
        finally:
            worker.close()
        ms.sort()
        out[name] = {
            "model_runs": len(ms),
            "type_ahead": served,
            "prefilled_median": sorted(prefilled)[len(prefilled) // 2] if prefilled else None,
            "prefilled_mean": sum(prefilled) / len(prefilled) if prefilled else None,
            "prompt_tokens_median": sorted(prompts)[len(prompts) // 2] if prompts else None,
            "p50_ms": ms[len(ms) // 2] if ms else None,
        }
        log(f"  context replay {name}: {out[name]}")
    engine.cache.clear()
    return out
