"""Decode with a busy neighbour: a second process spinning on one core.

Users' machines are never idle. The same decode steps are timed with the machine as it is,
then with a process the bench starts that spins (pure Python, no memory traffic to speak
of) for the whole measurement, then as it is again; the ratio of the medians says how much
a neighbour costs the decode step (the kernels are single-threaded per call, so no step
waits on a descheduled thread).
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from typing import Any

import torch

from codegen_lsp.codegen.modeling import KVCache
from codegen_lsp.engine import kernels
from codegen_lsp.engine.local import CodeGenEngine


def _spin(stop: Any) -> None:  # runs in the neighbour process
    while not stop.is_set():
        for _ in range(100_000):
            pass


@torch.inference_mode()
def _steps(engine: CodeGenEngine, cache: KVCache, token: int, context: int, n: int) -> list[float]:
    ms = []
    for _ in range(n):  # the same position each time: every step reads ``context`` keys
        start = time.perf_counter()
        engine.step([[token]], context, cache)
        ms.append((time.perf_counter() - start) * 1000)
    return ms


@torch.inference_mode()
def busy_neighbour(engine: CodeGenEngine, ids: list[int], context: int, steps: int) -> dict:
    """Median decode step (ms) idle, with a spinning neighbour, and idle again."""
    context = min(context, len(ids) - 1, engine.n_ctx - 2)
    cache = KVCache(engine.model.config, 1, context + 1, engine.kv_dtype, engine.device)
    engine.step.hidden([ids[:context]], 0, cache)
    token = ids[context]
    _steps(engine, cache, token, context, 3)  # warm
    idle = _steps(engine, cache, token, context, steps)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    neighbour = ctx.Process(target=_spin, args=(stop,), daemon=True)
    neighbour.start()
    try:
        time.sleep(1.0)  # the neighbour's interpreter is up and spinning
        team = kernels.team_stats()
        busy = _steps(engine, cache, token, context, steps)
        team = {key: value - team[key] for key, value in kernels.team_stats().items()}
    finally:
        stop.set()
        neighbour.join(5)
        if neighbour.is_alive():
            neighbour.kill()
    after = _steps(engine, cache, token, context, steps)
    idle_ms = statistics.median(idle + after)
    busy_ms = statistics.median(busy)
    return {
        "context": context,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "idle_ms": idle_ms,
        "busy_ms": busy_ms,
        "busy_max_ms": max(busy),
        "ratio": busy_ms / idle_ms,
        "kernel_threads": kernels.threads(),
        "busy_team": team,
    }
