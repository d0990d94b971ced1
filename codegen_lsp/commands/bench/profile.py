"""``codegen-lsp bench profile``: where one decode step's (and one prefill's) time goes.

Loads a checkpoint as the server does (default settings unless told otherwise), prefills a
prompt of ``--context`` tokens, then runs ``--steps`` one-token decode steps (the model and
the logits head, as the engine's decode loop calls them) under ``torch.profiler`` and prints
the operators by their own CPU time, with the plain (unprofiled) time per step beside it: the
profiler adds a few microseconds to every small operator. ``--prefill`` profiles the prompt's
prefill instead, through the engine's block plan.
"""

from __future__ import annotations

import argparse
import threading
import time

import torch
from torch.profiler import ProfilerActivity, profile

from codegen_lsp.codegen.modeling import KVCache
from codegen_lsp.commands.bench.backends import load_local
from codegen_lsp.engine.api import EngineSpec, GenerateRequest

HELP = "profile one decode step (or a prefill) of a checkpoint with torch.profiler"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench profile``."""
    p.add_argument("--model", help="checkpoint directory or hub id (default: the shipped model)")
    p.add_argument("--context", type=int, default=1024, help="tokens before the decode steps")
    p.add_argument("--steps", type=int, default=16, help="decode steps profiled")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: the server's)")
    p.add_argument("--quantize", default="auto")
    p.add_argument("--rows", type=int, default=15, help="operators listed")
    p.add_argument("--prefill", action="store_true", help="profile the prefill instead")


def run(args: argparse.Namespace) -> int:
    """Profile and print the operator table."""
    spec = EngineSpec(model=args.model, quantize=args.quantize, threads=args.threads)
    engine = load_local(spec)
    config = engine.model.config
    context = min(args.context, engine.n_ctx - args.steps - 2)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, engine.tokenizer.vocab_size, (context,), generator=gen).tolist()
    print(f"{engine.description}; context {context}, {torch.get_num_threads()} threads")

    def prefill() -> None:
        engine.cache.clear()
        request = GenerateRequest("profile.py", ids, max_new_tokens=1, speculation="off")
        engine.generate(request, threading.Event())

    if args.prefill:
        prefill()
        start = time.perf_counter()
        prefill()
        print(f"prefill: {(time.perf_counter() - start) * 1000:.0f} ms without the profiler")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            prefill()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        return 0
    cache = KVCache(config, 1, context + args.steps + 1, engine.kv_dtype, engine.device)
    step = engine.step
    with torch.inference_mode():
        step.hidden([ids], 0, cache)

        def steps() -> None:
            for _ in range(args.steps):  # the same position: every step reads context keys
                step([[ids[-1]]], context, cache)

        steps()
        plain = float("inf")
        for _ in range(3):  # the best of three passes: the machine's other load moves it
            start = time.perf_counter()
            steps()
            plain = min(plain, (time.perf_counter() - start) * 1000 / args.steps)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps()
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1000 / args.steps
    print(f"decode step: {plain:.1f} ms without the profiler (best of 3), {total:.1f} ms with it")
    print(f"(layers {config.n_layer}, d {config.n_embd}; the table sums {args.steps} steps)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0
