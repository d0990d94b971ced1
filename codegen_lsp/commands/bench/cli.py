"""``codegen-lsp bench``: keystroke replay, throughput and bandwidth, side by side.

For each model (the shipped default and a codegen-350M-shaped random checkpoint) the same
run measures this engine with prefix reuse, without it, transformers' ``generate`` (full
recompute, same dtype) and CTranslate2 int8 and float32 (optional ``bench`` extra), then
writes every figure to JSON, a latency-per-keystroke PNG, and prints a table. It is a
benchmark, not a test: on a shared machine the numbers move with the load (the JSON records
the load average before and after).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from codegen_lsp.codegen.checkpoint import CheckpointError
from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.commands.bench import context, gate, profile, remote, report, soak, speed
from codegen_lsp.commands.bench.backends import (
    CTranslate2Backend,
    OursBackend,
    TransformersBackend,
    convert_ctranslate2,
    load_local,
    token_strings,
)
from codegen_lsp.commands.bench.kernels import kernel_rates
from codegen_lsp.commands.bench.kvcache import kv_compare
from codegen_lsp.commands.bench.neighbour import busy_neighbour
from codegen_lsp.commands.bench.probes import (
    WEIGHT_BYTES,
    decode_bound_ms,
    machine_info,
    read_bandwidth_gbs,
)
from codegen_lsp.commands.bench.replay import (
    Entry,
    module_text,
    place_cursor,
    plot,
    replay_all,
    spread,
    throughput_all,
)
from codegen_lsp.commands.bench.synthetic import random_model, write_checkpoint
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.loader import shipped_model_dir
from codegen_lsp.engine.local import CodeGenEngine
from codegen_lsp.engine.machine import dtype_name

HELP = (
    "benchmark: keystroke replay, prefill/decode throughput, vs transformers and CTranslate2 "
    "(`codegen-lsp bench soak -h`: the long-typing soak; `bench remote -h`: against vLLM; "
    "`bench profile -h`: one decode step under torch.profiler; `bench context -h`: definitions "
    "and recent edits in the prompt; `bench gate -h`: the suggestion gate on held-out code)"
)
REPO_TOKENIZER = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "codegen-tokenizer"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench`` (the replay and throughput run) and its ``soak`` subcommand."""
    suites = p.add_subparsers(dest="suite", metavar="SUITE")
    soak_parser = suites.add_parser("soak", help=soak.HELP, description=soak.HELP)
    soak.add_arguments(soak_parser)
    remote_parser = suites.add_parser("remote", help=remote.HELP, description=remote.HELP)
    remote.add_arguments(remote_parser)
    profile_parser = suites.add_parser("profile", help=profile.HELP, description=profile.HELP)
    profile.add_arguments(profile_parser)
    context_parser = suites.add_parser("context", help=context.HELP, description=context.HELP)
    context.add_arguments(context_parser)
    gate_parser = suites.add_parser("gate", help=gate.HELP, description=gate.HELP)
    gate.add_arguments(gate_parser)
    p.add_argument(
        "--models",
        default="default,350M",
        help="comma list: 'default' (shipped model), '350M' (random, codegen-350M shape), or dirs",
    )
    p.add_argument("--out", default="bench/results", help="folder for bench.json, keystrokes.png")
    p.add_argument("--work-dir", default=str(Path.home() / ".cache" / "codegen-lsp" / "bench"))
    p.add_argument("--tokenizer", help="tokenizer dir for random checkpoints")
    p.add_argument("--quick", action="store_true", help="few keystrokes and repeats (minutes)")
    p.add_argument("--keystrokes", type=int, default=200, help="keystrokes replayed with reuse")
    p.add_argument("--baseline-keystrokes", type=int, default=12, help="... for full recompute")
    p.add_argument("--new-tokens", type=int, default=8, help="suggestion length in tokens")
    p.add_argument("--context", type=int, default=1000, help="tokens before the cursor")
    p.add_argument("--module", default="argparse", help="stdlib module typed in the replay")
    p.add_argument("--repeats", type=int, default=2, help="throughput repeats (best is kept)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantize", default="auto")
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--no-ctranslate2", action="store_true")
    p.add_argument("--no-int4", action="store_true", help="skip the engine with int4 weights")
    p.add_argument("--report", metavar="JSON", help="only re-check targets and print a saved run")
    p.add_argument("--spec-module", default="heapq", help="module of the speculation replay")
    p.add_argument("--spec-positions", type=int, default=40, help="cursors in that replay")
    p.add_argument("--spec-tokens", type=int, default=32, help="greedy tokens per cursor")
    p.add_argument("--waits", type=int, default=6, help="cold suggestions / function bodies")
    p.add_argument("--context-keystrokes", type=int, default=120, help="other-files replay")
    p.add_argument("--kv-module", default="pygls.server", help="held-out text of the KV table")
    p.add_argument("--kv-steps", type=int, default=200, help="teacher-forced steps per KV dtype")


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def model_dir(name: str, args: argparse.Namespace) -> Path | None:
    """Checkpoint directory for a ``--models`` entry (written once for random shapes)."""
    if name == "default":
        try:
            return shipped_model_dir()
        except CheckpointError as exc:
            log(f"default model: {exc}; skipped")
            return None
    if name in ("350M", "2B"):
        out = Path(args.work_dir) / f"random-{name}"
        if not (out / "config.json").is_file():
            tokenizer = Path(args.tokenizer) if args.tokenizer else REPO_TOKENIZER
            log(f"writing a random {name}-shaped checkpoint to {out}")
            write_checkpoint(out, tokenizer, random_model(name), dtype=torch.bfloat16)
        return out
    return Path(name)


def bench_model(name: str, directory: Path, args: argparse.Namespace, bw: float) -> dict:
    """All measurements for one checkpoint."""
    spec = EngineSpec(
        model=str(directory),
        dtype=args.dtype,
        quantize=args.quantize,
        threads=args.threads,
        cache_memory_mb=1024,
    )
    engine = load_local(spec, lambda m, p: log(f"  load {p:3d}% {m}"))
    cold_ms, engine.cold.budget_ms = engine.cold.budget_ms, 0  # on for user_waits only
    scratch = CodeGenEngine(
        engine.model,
        engine.tokenizer,
        cache_memory_mb=1024,
        prefix_reuse=False,
        quantize=engine.quantize,
        kv_dtype=engine.kv_dtype,
    )
    log(f"{name}: {engine.description}")
    config = engine.model.config
    encode = engine.encode
    text, source = module_text(args.module)
    n_ctx = engine.n_ctx
    context = min(args.context, n_ctx - args.new_tokens - args.keystrokes - 8)
    ks = place_cursor(text, encode, context, args.keystrokes, source)
    ids = encode(text)
    lengths = [n for n in (256, 1024, 1900) if n <= min(len(ids), n_ctx - 1)]
    decode_ctx = min(1024, n_ctx - 40)
    ours = OursBackend(engine, "ours (reuse)")
    ours_off = OursBackend(scratch, "ours (no reuse)")
    act = dtype_name(engine.act_dtype)
    weights = "int8" if engine.quantize == "int8" else act
    result: dict[str, Any] = {
        "checkpoint": str(directory),
        "engine": engine.description,
        "config": config.to_dict(),
        "replay": {"module": source, "window_tokens": len(encode(text[ks.window : ks.cursor]))},
        "backends": {},
        "bounds_ms": {
            dt: decode_bound_ms(config, dt, decode_ctx, engine.kv_dtype.itemsize, bw)
            for dt in ("float32", "bfloat16", "int8", "int4")
        },
        "kv_bytes": engine.kv_dtype.itemsize,
        "our_weight_dtype": weights,
    }
    all_keys = set(range(args.keystrokes))
    few = set(spread(args.keystrokes, args.baseline_keystrokes))
    entries = [Entry(ours_off, few, ours_off.reset), Entry(ours, all_keys, ours.reset, True)]
    if not args.no_int4 and engine.quantize == "int8":
        spec4 = EngineSpec(**{**vars(spec), "quantize": "int4"})
        int4 = OursBackend(load_local(spec4), "ours int4 (reuse)")
        entries.append(Entry(int4, all_keys, int4.reset, True))
    if not args.no_transformers:
        hf = TransformersBackend(directory, engine.act_dtype, f"transformers {act}")
        entries.append(Entry(hf, few))
    if not args.no_ctranslate2:
        try:
            strings = token_strings(directory)
            for quant in ("int8", "float32"):
                converted = Path(args.work_dir) / f"ct2-{directory.name}-{quant}"
                convert_ctranslate2(directory, converted, quant)
                ct2 = CTranslate2Backend(converted, quant, strings, f"ctranslate2 {quant}")
                entries.append(Entry(ct2, few))
        except ImportError as exc:
            log(f"ctranslate2 skipped: {exc} (pip install 'codegen-lsp[bench]')")
    log(f"{name}: throughput ({', '.join(e.backend.name for e in entries)})")
    tps = throughput_all(entries, ids, lengths, decode_ctx, 33, args.repeats, log)
    log(f"{name}: keystroke replay ({args.keystrokes} keystrokes)")
    replays = replay_all(entries, ks, encode, args.keystrokes, args.new_tokens, log)
    for entry, tp, rep in zip(entries, tps, replays, strict=True):
        result["backends"][entry.backend.name] = {**tp, "replay": rep.to_dict()}
    del entries
    gc.collect()
    speed_parts(name, engine, text, ids, decode_ctx, cold_ms, args, result)
    kv_text, kv_source = module_text(args.kv_module)
    log(f"{name}: KV cache dtypes on {kv_source}")
    kv_ids = encode(kv_text)
    kv_ctx = min(decode_ctx, len(kv_ids) - args.kv_steps - 1)
    result["kv_cache"] = kv_compare(engine, kv_ids, kv_ctx, args.kv_steps, kv_source)
    log(f"{name}: decode with a busy neighbour")
    result["busy_neighbour"] = busy_neighbour(engine, ids, decode_ctx, args.kv_steps // 2)
    log(f"{name}: kernel rates at ctx {decode_ctx}")
    result["kernel_rates"] = kernel_rates(config, decode_ctx)
    result["targets"] = report.targets(result)
    result["_replays"] = replays
    return result


def speed_parts(
    name: str,
    engine: CodeGenEngine,
    text: str,
    ids: list[int],
    ctx: int,
    cold_ms: float,
    args: argparse.Namespace,
    out: dict,
) -> None:
    """Speculation on/off (real weights only: random ones repeat themselves), the verify
    cost, and the cold-suggestion and function-body waits through the suggestion service."""
    if engine.spec_width > 1:
        widths = tuple(w for w in (1, 2, 4, 8) if w <= engine.spec_width)
        out["verify_cost"] = speed.verify_cost(engine, ids, ctx, widths, args.repeats + 2)
    if name == "default":
        spec_text, _ = module_text(args.spec_module)
        spec_ctx = min(args.context, engine.n_ctx - args.spec_tokens - 8)
        out["speculation"] = speed.speculation_replay(
            engine, spec_text, args.spec_positions, args.spec_tokens, spec_ctx, log
        )
        others = {f"{m}.py": module_text(m)[0] for m in ("bisect", "queue")}
        out["context_replay"] = speed.context_replay(
            engine, spec_text, others, args.context_keystrokes, log
        )
    wait_ctx = min(900, engine.n_ctx - 80)
    out["user_waits"] = speed.user_waits(engine, text, args.waits, wait_ctx, cold_ms, log)


def reprint(path: Path) -> int:
    """Recompute bounds and targets of a saved run with this code, and print its table."""
    data = json.loads(path.read_text())
    bw = data["read_bandwidth_gbs"]
    for model in data["models"].values():
        if "skipped" in model:
            continue
        config = CodeGenConfig.from_dict(model["config"])
        ctx = next(b["decode_context"] for b in model["backends"].values())
        kv = model.get("kv_bytes", 4)
        model["bounds_ms"] = {dt: decode_bound_ms(config, dt, ctx, kv, bw) for dt in WEIGHT_BYTES}
        model["targets"] = report.targets(model)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(report.table(data))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the benchmark and write the report (or the soak)."""
    if args.suite == "soak":
        return soak.run(args)
    if args.suite == "remote":
        return remote.run(args)
    if args.suite == "profile":
        return profile.run(args)
    if args.suite == "context":
        return context.run(args)
    if args.suite == "gate":
        return gate.run(args)
    if args.report:
        return reprint(Path(args.report))
    if args.quick:
        args.keystrokes = min(args.keystrokes, 40)
        args.baseline_keystrokes = min(args.baseline_keystrokes, 4)
        args.repeats = 1
        args.spec_positions = min(args.spec_positions, 10)
        args.waits = min(args.waits, 3)
        args.context_keystrokes = min(args.context_keystrokes, 30)
        args.kv_steps = min(args.kv_steps, 40)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    log(f"machine: {info}")
    bw = read_bandwidth_gbs()
    log(f"read bandwidth: {bw:.1f} GB/s")
    started = time.time()
    report_data: dict[str, Any] = {"machine": info, "read_bandwidth_gbs": bw, "models": {}}
    panels = {}
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        directory = model_dir(name, args)
        if directory is None:
            report_data["models"][name] = {"skipped": "not installed"}
            continue
        data = bench_model(name, directory, args, bw)
        replays = data.pop("_replays")
        panels[f"{name}: {data['engine']}"] = replays
        report_data["models"][name] = data
        gc.collect()
    report_data["load_average_after"] = machine_info()["load_average"]
    report_data["wall_s"] = time.time() - started
    report_data["settings"] = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    (out / "bench.json").write_text(json.dumps(report_data, indent=1, default=str) + "\n")
    if panels:
        try:
            plot(panels, out / "keystrokes.png")
        except ImportError:
            log("matplotlib missing: no plot (pip install 'codegen-lsp[bench]')")
    print(report.table(report_data))
    log(f"wrote {out / 'bench.json'}")
    return 0
