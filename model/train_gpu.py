"""GPU recipe for the default model: several shapes trained side by side in one short lease.

The CPU recipe (``train.py``) is limited by two cores; a GPU is limited instead by the data:
the training split is 8.7M tokens, so a few minutes of an H100/H200 already make many passes.
This script therefore trains a small sweep of shapes *in parallel* (one process each on the
same GPU), each for a fixed wall-clock budget *or* a number of passes, whichever ends first
(the cosine learning-rate schedule follows ``max(time fraction, token fraction)``), scores
every run on the held-out split every ``--eval-every`` seconds and keeps the weights with the
lowest held-out loss (early stopping: extra passes over a small corpus end in memorising it).

Steps::

    python model/train_gpu.py pack --work /work/train_state --dir .gpu     # data, here (CPU)
    python model/train_gpu.py run --dir .gpu --out OUT --minutes 7         # on the GPU machine
    python model/train_gpu.py unpack --parts OUT --run B                   # here: -> default_model/

``run`` writes ``OUT/summary.json`` (per run: shape, parameters, steps, tokens, passes,
best held-out loss and when), ``OUT/train_gpu.log`` (every run's log), and the best weights
of the runs that fit, as fp16 published-layout checkpoints in one tar split into
``models.tar.part-NN`` pieces of at most 15 MiB (the lease returns at most 8 files).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / "model"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from codegen_lsp.codegen.checkpoint import save_checkpoint  # noqa: E402
from codegen_lsp.codegen.config import CodeGenConfig  # noqa: E402
from codegen_lsp.codegen.modeling import CodeGenForCausalLM  # noqa: E402

EOS_ID = 0
SEQ = 512
PART_BYTES = 15 * 2**20
PACK_LIMIT = 58 * 2**20  # what the lease returns (64 MiB) less room for logs

# The sweep. A is the shipped CPU shape (for a like-for-like comparison); B is the largest
# shape under the 40 MB limit in fp16; C lies between them.
RUNS: dict[str, dict] = {
    "A": {"n_layer": 4, "n_embd": 256, "n_head": 8, "rotary_dim": 16, "lr": 2e-3, "passes": 30},
    "B": {"n_layer": 6, "n_embd": 384, "n_head": 8, "rotary_dim": 24, "lr": 1.5e-3, "passes": 20},
    "C": {"n_layer": 6, "n_embd": 320, "n_head": 8, "rotary_dim": 20, "lr": 1.5e-3, "passes": 24},
    "D": {"n_layer": 6, "n_embd": 384, "n_head": 8, "rotary_dim": 24, "lr": 1.5e-3, "passes": 4},
    # B's shape, with windows drawn from library (non-test) files ``lib_weight`` times as
    # often per token as from test files (62% of the training bytes are tests).
    "E": {
        "n_layer": 6,
        "n_embd": 384,
        "n_head": 8,
        "rotary_dim": 24,
        "lr": 1.5e-3,
        "passes": 6,
        "lib_weight": 2.0,
    },
    "F": {
        "n_layer": 6,
        "n_embd": 384,
        "n_head": 8,
        "rotary_dim": 24,
        "lr": 1.5e-3,
        "passes": 6,
        "lib_weight": 4.0,
    },
}


def is_test_path(rel: str) -> bool:
    """Test code: ``test/``, ``*/tests/``, ``idle_test/``, ``test_*.py`` and the like."""
    parts = rel.split("/")
    return any(p in ("test", "tests", "idle_test") for p in parts[:-1]) or parts[-1].startswith(
        "test_"
    )


def run_config(name: str, vocab_size: int) -> CodeGenConfig:
    """The CodeGen config of one sweep entry."""
    spec = RUNS[name]
    return CodeGenConfig(
        vocab_size=vocab_size,
        n_positions=SEQ,
        n_embd=spec["n_embd"],
        n_layer=spec["n_layer"],
        n_head=spec["n_head"],
        rotary_dim=spec["rotary_dim"],
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
    )


def cmd_pack(args: argparse.Namespace) -> None:
    """Gather what the GPU machine needs: both token streams and the tokenizer (no stdlib)."""
    from corpus import encode_stream, read_manifest, read_texts

    work, out = Path(args.work), Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "train_tokens.npy", out / "train_tokens.npy")
    shutil.copy(work / "tokenizer.json", out / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    files = read_manifest()
    held = encode_stream(tokenizer, read_texts(files, "heldout"))
    np.save(out / "heldout_tokens.npy", held)
    lib_held = [f for f in files if f.split == "heldout" and not is_test_path(f.rel)]
    np.save(
        out / "heldout_lib_tokens.npy", encode_stream(tokenizer, read_texts(lib_held, "heldout"))
    )
    # which training tokens belong to test files (the stream is the train files in order)
    train = [f for f in files if f.split == "train"]
    texts = read_texts(files, "train")
    lengths = [len(e.ids) + 1 for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    flags = np.repeat([is_test_path(f.rel) for f in train], lengths).astype(np.bool_)
    if len(flags) != len(np.load(work / "train_tokens.npy", mmap_mode="r")):
        raise SystemExit("train stream and manifest disagree")
    np.save(out / "train_is_test.npy", flags)
    print(f"packed {out}: held-out stream {len(held)} tokens, tests {flags.mean():.0%} of train")


def heldout_windows(held: np.ndarray) -> torch.Tensor:
    """The held-out stream cut into non-overlapping ``SEQ + 1``-token windows."""
    n = (len(held) - 1) // SEQ
    idx = np.arange(n)[:, None] * SEQ + np.arange(SEQ + 1)[None, :]
    return torch.from_numpy(held.astype(np.int64)[idx])


@torch.no_grad()
def heldout_loss(model: CodeGenForCausalLM, windows: torch.Tensor, amp: bool) -> float:
    """Mean loss (nats/token) over the held-out windows (a quick score, not the model card's)."""
    model.eval()
    positions = torch.arange(SEQ, device=windows.device)
    total, count = 0.0, 0
    for chunk in windows.split(64):
        with torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(chunk[:, :-1], positions)
        loss = F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum")
        total += float(loss)
        count += chunk[:, 1:].numel()
    model.train()
    return total / count


def lr_at(step: int, progress: float, peak: float, warmup: int, floor_frac: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to ``floor_frac * peak`` at progress 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * floor_frac
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def cmd_worker(args: argparse.Namespace) -> None:
    """Train one sweep entry; write its best weights and history to ``WORKDIR/NAME.pt``."""
    device = torch.device(args.device)
    amp = device.type == "cuda" or args.bf16
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    spec = dict(RUNS[args.run])
    for item in filter(None, args.passes.split(",")):
        name, _, value = item.partition("=")
        if name == args.run:
            spec["passes"] = float(value)
    data = Path(args.dir)
    train = torch.from_numpy(np.load(data / "train_tokens.npy").astype(np.int64)).to(device)
    windows = heldout_windows(np.load(data / "heldout_tokens.npy"))[: args.eval_windows]
    windows = windows.to(device)
    lib_windows = heldout_windows(np.load(data / "heldout_lib_tokens.npy"))[: args.eval_windows]
    lib_windows = lib_windows.to(device)
    is_test = torch.from_numpy(np.load(data / "train_is_test.npy")).to(device)
    valid = torch.ones_like(is_test)
    valid[len(train) - SEQ - 1 :] = False
    lib_starts = torch.nonzero(valid & ~is_test)[:, 0]
    test_starts = torch.nonzero(valid & is_test)[:, 0]
    lib_weight = spec.get("lib_weight", 1.0)
    lib_share = lib_weight * len(lib_starts) / (lib_weight * len(lib_starts) + len(test_starts))
    vocab = Tokenizer.from_file(str(data / "tokenizer.json")).get_vocab_size()
    vocab = (vocab + 63) // 64 * 64
    config = run_config(args.run, vocab)
    torch.manual_seed(args.seed)
    model = CodeGenForCausalLM(config)
    model.init_weights(args.seed)
    model.to(device)
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=spec["lr"],
        betas=(0.9, 0.95),
        fused=device.type == "cuda",
    )
    budget_s = args.minutes * 60.0
    tokens_per_step = args.batch * SEQ
    budget_tokens = spec["passes"] * len(train)
    n_params = sum(p.numel() for p in model.parameters())
    log = open(Path(args.workdir) / f"{args.run}.log", "w", buffering=1)  # noqa: SIM115
    print(f"{args.run}: {json.dumps(config.to_dict())} params {n_params}", file=log)
    offsets = torch.arange(SEQ + 1, device=device)
    positions = torch.arange(SEQ, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    best = {"loss": float("inf"), "step": 0, "tokens": 0, "state": None}
    history: list[dict] = []
    step, t0, last_eval = 0, time.time(), time.time()
    running = torch.zeros((), device=device)
    while True:
        elapsed = time.time() - t0
        progress = max(elapsed / budget_s, step * tokens_per_step / budget_tokens)
        done = progress >= 1.0
        if done or time.time() - last_eval >= args.eval_every:
            loss = heldout_loss(model, windows, amp)
            lib_loss = heldout_loss(model, lib_windows, amp)
            tokens = step * tokens_per_step
            row = {"step": step, "tokens": tokens, "passes": tokens / len(train)}
            row |= {"elapsed": round(elapsed, 1), "heldout": round(loss, 4)}
            row |= {"heldout_lib": round(lib_loss, 4)}
            history.append(row)
            if loss < best["loss"]:
                state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
                best = {"loss": loss, "step": step, "tokens": tokens, "state": state}
                best["lib_loss"] = lib_loss
            print(json.dumps(row), file=log)
            last_eval = time.time()
        if done:
            break
        lr = lr_at(step, progress, spec["lr"], args.warmup, 0.1)
        for group in opt.param_groups:
            group["lr"] = lr
        if lib_weight == 1.0:
            starts = torch.randint(
                0, len(train) - SEQ - 1, (args.batch,), device=device, generator=gen
            )
        else:
            n_lib = int(torch.binomial(torch.tensor(float(args.batch)), torch.tensor(lib_share)))
            pick_lib = torch.randint(0, len(lib_starts), (n_lib,), device=device, generator=gen)
            pick_test = torch.randint(
                0, len(test_starts), (args.batch - n_lib,), device=device, generator=gen
            )
            starts = torch.cat([lib_starts[pick_lib], test_starts[pick_test]])
        batch = train[starts[:, None] + offsets]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(batch[:, :-1], positions)
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running += loss.detach()
        step += 1
        if step % args.log_every == 0:
            rate = step * tokens_per_step / (time.time() - t0)
            print(
                f"{args.run} step {step} loss {float(running) / args.log_every:.4f} lr {lr:.2e} "
                f"passes {step * tokens_per_step / len(train):.2f} tok/s {rate:.0f}",
                file=log,
            )
            running.zero_()
    elapsed = time.time() - t0
    summary = {
        "run": args.run,
        "config": config.to_dict(),
        "params": n_params,
        "lr": spec["lr"],
        "planned_passes": spec["passes"],
        "batch": [args.batch, SEQ],
        "steps": step,
        "tokens": step * tokens_per_step,
        "passes": step * tokens_per_step / len(train),
        "seconds": round(elapsed, 1),
        "tokens_per_s": round(step * tokens_per_step / elapsed),
        "best_heldout": round(best["loss"], 4),
        "best_heldout_lib": round(best["lib_loss"], 4),
        "lib_weight": lib_weight,
        "best_step": best["step"],
        "best_tokens": best["tokens"],
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": str(torch.__version__),
        "history": history,
    }
    print(
        f"{args.run} done: {json.dumps({k: v for k, v in summary.items() if k != 'history'})}",
        file=log,
    )
    torch.save({"summary": summary, "state": best["state"]}, Path(args.workdir) / f"{args.run}.pt")


def export_run(workdir: Path, data: Path, name: str, dest: Path) -> dict:
    """Write one run's best weights as an fp16 checkpoint directory; return its summary."""
    saved = torch.load(workdir / f"{name}.pt", map_location="cpu", weights_only=True)
    summary = saved["summary"]
    model = CodeGenForCausalLM(CodeGenConfig.from_dict(summary["config"]))
    model.load_state_dict(saved["state"])
    save_checkpoint(model, dest / name, dtype=torch.float16)
    tokenizer = Tokenizer.from_file(str(data / "tokenizer.json"))
    tokenizer.save(str(dest / name / "tokenizer.json"), pretty=False)  # as train.py exports
    return summary


def cmd_run(args: argparse.Namespace) -> None:
    """Start one worker per sweep entry, wait, export the best weights, pack them for return."""
    out, workdir = Path(args.out), Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    names = args.runs.split(",")
    procs = {}
    for name in names:
        cmd = [sys.executable, __file__, "worker", "--run", name, "--dir", args.dir]
        cmd += ["--workdir", str(workdir), "--minutes", str(args.minutes), "--device", args.device]
        cmd += ["--batch", str(args.batch), "--eval-every", str(args.eval_every)]
        cmd += ["--eval-windows", str(args.eval_windows), "--warmup", str(args.warmup)]
        cmd += ["--log-every", str(args.log_every), "--passes", args.passes] + (
            ["--bf16"] if args.bf16 else []
        )
        err = open(workdir / f"{name}.err", "w")  # noqa: SIM115
        procs[name] = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT)
    deadline = time.time() + args.minutes * 60 + args.grace
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            print(f"{name}: killed at the deadline", flush=True)
    export = workdir / "export"
    summaries: dict[str, dict] = {}
    for name in names:
        if (workdir / f"{name}.pt").is_file():
            summaries[name] = export_run(workdir, Path(args.dir), name, export)
            s = summaries[name]
            print(
                f"{name}: best held-out {s['best_heldout']} at {s['best_tokens']} tokens, "
                f"{s['tokens_per_s']} tok/s, {s['passes']:.1f} passes",
                flush=True,
            )
    # Pack the first entry always (the like-for-like comparison), then the best others.
    if args.rank:
        order = sorted(names, key=lambda n: summaries.get(n, {}).get(args.rank, 9e9))
    else:
        key = lambda n: summaries.get(n, {}).get("best_heldout", 9e9)  # noqa: E731
        order = names[:1] + sorted(names[1:], key=key)
    buf, packed, size = io.BytesIO(), [], 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in order:
            if name not in summaries:
                continue
            run_bytes = sum(f.stat().st_size for f in (export / name).iterdir())
            if size + run_bytes > PACK_LIMIT:
                continue
            tar.add(export / name, arcname=name)
            packed.append(name)
            size += run_bytes
    blob = buf.getvalue()
    for i in range(0, len(blob), PART_BYTES):
        (out / f"models.tar.part-{i // PART_BYTES:02d}").write_bytes(blob[i : i + PART_BYTES])
    with open(out / "train_gpu.log", "w") as log:
        for name in names:
            for suffix in (".err", ".log"):
                path = workdir / f"{name}{suffix}"
                if path.is_file():
                    log.write(f"==> {path.name}\n{path.read_text()}\n")
    report = {"packed": packed, "runs": summaries, "minutes": args.minutes, "batch": args.batch}
    (out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"packed {packed} ({size / 2**20:.1f} MiB)", flush=True)


def cmd_unpack(args: argparse.Namespace) -> None:
    """Join the returned parts, extract every run under ``--into``, install ``--run`` if named."""
    parts = sorted(Path(args.parts).glob("models.tar.part-*"))
    blob = b"".join(p.read_bytes() for p in parts)
    into = Path(args.into)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    print(f"extracted {sorted(p.name for p in into.iterdir())} into {into}")
    if args.run:
        ship = REPO / "codegen_lsp" / "default_model"
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            shutil.copy(into / args.run / name, ship / name)
        print(f"installed run {args.run} into {ship}")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmds = {"pack": cmd_pack, "run": cmd_run, "worker": cmd_worker, "unpack": cmd_unpack}
    for name in cmds:
        p = sub.add_parser(name)
        p.add_argument("--work", default="/work/train_state", help="CPU recipe's state directory")
        p.add_argument("--dir", default=".gpu", help="packed data directory")
        p.add_argument("--out", default=os.environ.get("OUT", "gpu-out"))
        p.add_argument("--workdir", default="/tmp/train_gpu", help="scratch on the GPU machine")
        p.add_argument("--runs", default="A,B,C")
        p.add_argument("--run", default="")
        p.add_argument("--minutes", type=float, default=7.0)
        p.add_argument("--grace", type=float, default=90.0, help="seconds past the budget")
        p.add_argument("--device", default="cuda")
        p.add_argument("--bf16", action="store_true", help="bf16 autocast off CUDA too")
        p.add_argument("--batch", type=int, default=64)
        p.add_argument("--warmup", type=int, default=200)
        p.add_argument("--eval-every", type=float, default=20.0, help="seconds")
        p.add_argument("--eval-windows", type=int, default=100000)
        p.add_argument("--log-every", type=int, default=100)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--passes", default="", help="override passes: A=8,B=6")
        p.add_argument("--rank", default="", help="pack by this summary key (best_heldout_lib)")
        p.add_argument("--parts", default="gpu-out", help="unpack: folder of models.tar.part-*")
        p.add_argument("--into", default="/work/train_state/gpu", help="unpack: destination")
    args = parser.parse_args(argv)
    cmds[args.cmd](args)


if __name__ == "__main__":
    main()
