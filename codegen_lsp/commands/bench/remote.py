"""``codegen-lsp bench remote``: the keystroke replay against an endpoint and locally.

One run types the same module into the same checkpoint twice per keystroke (taking turns):
once through the remote engine (an OpenAI-compatible server such as vLLM, serving the
GPT-J export of the checkpoint) and once through the local engine in this process. It
reports p50/p95 milliseconds per keystroke, time to the first token, decode tokens per
second, and the server's prefix-cache hit rate over the replay (from its ``/metrics``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from codegen_lsp.commands.bench.backends import OursBackend, load_local
from codegen_lsp.commands.bench.probes import machine_info
from codegen_lsp.commands.bench.replay import Entry, module_text, place_cursor, replay_all
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.loader import load_remote
from codegen_lsp.engine.remote_http import RemoteError

HELP = "keystroke replay against a remote endpoint (vLLM) and the local engine, one run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench remote``."""
    p.add_argument("--endpoint", required=True, help="base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", default="", help="the checkpoint both run (default: shipped)")
    p.add_argument("--remote-model", default="", help="served model name (default: first)")
    p.add_argument("--api-key-env", default="", help="environment variable with the API key")
    p.add_argument("--keystrokes", type=int, default=60, help="characters typed")
    p.add_argument("--new-tokens", type=int, default=8, help="suggestion length in tokens")
    p.add_argument("--context", type=int, default=900, help="tokens before the cursor")
    p.add_argument("--module", default="argparse", help="stdlib module typed in the replay")
    p.add_argument("--local-dtype", default="auto", help="local engine dtype (default auto)")
    p.add_argument("--threads", type=int, default=0, help="local torch threads (0: default)")
    p.add_argument("--out", default="bench/results-remote", help="folder for remote.json")


def _prefix_counters(text: str) -> tuple[float, float]:
    def total(name: str) -> float:
        pattern = rf"^{re.escape(name)}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$"
        return sum(float(v) for v in re.findall(pattern, text, re.M))

    return total("vllm:prefix_cache_hits_total"), total("vllm:prefix_cache_queries_total")


def _tokens_per_s(result: Any, new_tokens: int) -> float:
    rates = [
        (new_tokens - 1) * 1000 / (ms - first)
        for ms, first in zip(result.ms, result.first_ms, strict=True)
        if ms > first
    ]
    return statistics.median(rates) if rates else 0.0


def run(args: argparse.Namespace) -> int:
    """Replay, print the table, write ``remote.json``."""
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    model = args.model or None
    spec = EngineSpec(
        model=model,
        endpoint=args.endpoint,
        remote_model=args.remote_model,
        api_key_env=args.api_key_env,
    )
    remote = load_remote(spec)
    if not remote.health().ok:
        log(f"bench remote: {remote.health().message}")
        return 1
    local = load_local(
        EngineSpec(model=model, dtype=args.local_dtype, threads=args.threads, device="cpu")
    )
    text, source = module_text(args.module)
    context = min(args.context, min(local.n_ctx, remote.n_ctx) - args.new_tokens - 8)
    ks = place_cursor(text, local.encode, context, args.keystrokes, source)
    keys = set(range(args.keystrokes))
    entries = [
        Entry(OursBackend(remote, f"remote {remote.served}"), keys),
        Entry(OursBackend(local, "local engine (reuse)"), keys),
    ]
    try:
        before = _prefix_counters(remote.client.metrics())
    except RemoteError as exc:
        log(f"bench remote: no /metrics ({exc}); the hit rate is not measured")
        before = None
    log(f"replaying {args.keystrokes} keystrokes of {args.module} ({context} tokens of context)")
    results = replay_all(entries, ks, local.encode, args.keystrokes, args.new_tokens, log)
    hit_rate = None
    if before is not None:
        hits, queries = (
            a - b for a, b in zip(_prefix_counters(remote.client.metrics()), before, strict=True)
        )
        hit_rate = hits / queries if queries else None
    machine = machine_info()
    summary = {
        r.name: {**r.summary(), "decode_tokens_per_s": _tokens_per_s(r, args.new_tokens)}
        for r in results
    }
    remote_p50 = summary[results[0].name]["p50_ms"]
    local_p50 = summary[results[1].name]["p50_ms"]
    report = {
        "machine": machine,
        "endpoint": remote.client.url,
        "served_model": remote.served,
        "local": local.description,
        "context_tokens": context,
        "new_tokens": args.new_tokens,
        "prefix_cache_hit_rate": hit_rate,
        "remote_over_local_p50": remote_p50 / local_p50 if local_p50 else None,
        "summary": summary,
        "results": [r.to_dict() for r in results],
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "remote.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"bench remote on {machine['cpu']} ({machine['cores']} cores), {context} tokens of "
          f"context, {args.new_tokens} new tokens, {args.keystrokes} keystrokes")  # fmt: skip
    print(f"{'backend':32} {'p50 ms':>8} {'p95 ms':>8} {'first p50':>10} {'tok/s':>7}")
    for name, s in summary.items():
        print(f"{name:32} {s['p50_ms']:8.1f} {s['p95_ms']:8.1f} "
              f"{s['first_token_p50_ms']:10.1f} {s['decode_tokens_per_s']:7.1f}")  # fmt: skip
    rate = "n/a" if hit_rate is None else f"{hit_rate:.1%}"
    print(f"remote/local p50: {report['remote_over_local_p50']:.2f}x; "
          f"server prefix-cache hit rate over the replay: {rate}")  # fmt: skip
    remote.close()
    return 0
