"""Recipe for the embedded default model: corpus, tokenizer, training, export.

Everything here is reproducible from this interpreter's standard library (PSF licence)::

    python model/train.py prepare --work /work/train_state      # corpus, manifest, tokenizer
    python model/train.py bench --work /work/train_state        # 30 s throughput probe
    python model/train.py train --work /work/train_state ...    # resumable training loop
    python model/train.py phase2 --work /work/train_state ...   # second phase from state.pt
    python model/train.py export --work /work/train_state       # -> codegen_lsp/default_model

``prepare`` walks ``sysconfig.get_paths()["stdlib"]`` (site-packages excluded), keeps the
UTF-8 ``.py`` files, drops exact duplicates (sha256 of the content; the first path in sorted
order is kept), and holds out every file whose relative path hashes into the lowest
``HELD_OUT_PERMILLE`` of 1000 buckets. The split and hashes go to ``model/manifest.tsv.gz``.
It then trains a byte-level BPE in CodeGen's style (``<|endoftext|>`` = id 0 as bos/eos,
runs of 2..31 spaces and 2..9 tabs as added non-special tokens split out before BPE) and
tokenizes the training files into one ``uint16`` stream, files separated by ``<|endoftext|>``.

``train`` samples random windows of ``--seq`` tokens from that stream and runs AdamW with a
linear warm-up and cosine decay that ends at ``--steps``. The full state (model, optimizer,
step, RNG) is written to ``WORK/state.pt`` every ``--save-every`` seconds; rerunning the same
command resumes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from corpus import (  # noqa: E402
    EOS_ID,
    SHIP_DIR,
    encode_stream,
    read_texts,
    scan_stdlib,
    train_tokenizer,
    write_manifest,
)

from codegen_lsp.codegen.checkpoint import save_checkpoint  # noqa: E402
from codegen_lsp.codegen.config import CodeGenConfig  # noqa: E402
from codegen_lsp.codegen.modeling import CodeGenForCausalLM  # noqa: E402


def cmd_prepare(args: argparse.Namespace) -> None:
    """Scan the corpus, write the manifest, train the tokenizer, encode the training stream."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = scan_stdlib()
    write_manifest(files)
    counts: dict[str, list[int]] = {}
    for f in files:
        counts.setdefault(f.split, [0, 0])
        counts[f.split][0] += 1
        counts[f.split][1] += f.size
    print("corpus:", json.dumps(counts))
    train_texts = read_texts(files, "train")
    t0 = time.time()
    tokenizer = train_tokenizer(train_texts, args.vocab_size)
    tokenizer.save(str(work / "tokenizer.json"))
    stream = encode_stream(tokenizer, train_texts)
    np.save(work / "train_tokens.npy", stream)
    heldout = read_texts(files, "heldout")
    held_bytes = sum(len(t.encode("utf-8")) for t in heldout)
    held_tokens = sum(len(e.ids) for e in tokenizer.encode_batch(heldout))
    train_bytes = sum(len(t.encode("utf-8")) for t in train_texts)
    print(
        f"tokenizer: {tokenizer.get_vocab_size()} ids in {time.time() - t0:.0f}s; train "
        f"{len(stream)} tokens ({train_bytes / len(stream):.2f} bytes/token); held-out "
        f"{held_tokens} tokens ({held_bytes / held_tokens:.2f} bytes/token)"
    )


def model_config(args: argparse.Namespace, tokenizer_size: int) -> CodeGenConfig:
    """The model shape from the command line; vocab padded to a multiple of 64."""
    return CodeGenConfig(
        vocab_size=(tokenizer_size + 63) // 64 * 64,
        n_positions=args.seq,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        rotary_dim=args.rotary_dim,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
    )


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_frac * lr`` at ``args.steps``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    floor = args.lr * args.min_lr_frac
    return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: CodeGenForCausalLM, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, LayerNorms)."""
    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    rest = [p for n, p in model.named_parameters() if p.ndim != 2]
    groups = [{"params": decay, "weight_decay": args.wd}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def batch_at(stream: torch.Tensor, gen: torch.Generator, batch: int, seq: int) -> torch.Tensor:
    """``batch`` random windows of ``seq + 1`` tokens (inputs and shifted targets)."""
    starts = torch.randint(0, len(stream) - seq - 1, (batch,), generator=gen)
    return torch.stack([stream[s : s + seq + 1] for s in starts.tolist()]).long()


def train_step(
    model: CodeGenForCausalLM,
    opt: torch.optim.Optimizer,
    window: torch.Tensor,
    bf16: bool,
    clip: float,
) -> float:
    """One forward/backward/update; returns the mean loss (nats/token)."""
    inputs, targets = window[:, :-1], window[:, 1:]
    positions = torch.arange(inputs.shape[1])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(inputs, positions)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return float(loss.detach())


def cmd_bench(args: argparse.Namespace) -> None:
    """Measure training throughput (tokens/s) for a model shape, fp32 and bf16 autocast."""
    tokenizer = Tokenizer.from_file(str(Path(args.work) / "tokenizer.json"))
    config = model_config(args, tokenizer.get_vocab_size())
    stream = torch.from_numpy(np.load(Path(args.work) / "train_tokens.npy").astype(np.int32))
    for bf16 in (False, True):
        torch.manual_seed(0)
        model = CodeGenForCausalLM(config)
        model.init_weights(0)
        opt = make_optimizer(model, args)
        gen = torch.Generator().manual_seed(0)
        train_step(model, opt, batch_at(stream, gen, args.batch, args.seq), bf16, 1.0)
        t0, steps = time.time(), 0
        while time.time() - t0 < args.seconds:
            loss = train_step(model, opt, batch_at(stream, gen, args.batch, args.seq), bf16, 1.0)
            steps += 1
        rate = steps * args.batch * args.seq / (time.time() - t0)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"L{config.n_layer} d{config.n_embd} V{config.vocab_size} params {n_params / 1e6:.1f}M "
            f"bf16={bf16}: {rate:.0f} tok/s ({steps} steps, loss {loss:.2f})",
            flush=True,
        )


def save_state(path: Path, model: CodeGenForCausalLM, opt: torch.optim.Optimizer, **extra) -> None:
    """Atomically write the resumable training state."""
    tmp = path.with_suffix(".tmp")
    state = {"model": model.state_dict(), "opt": opt.state_dict(), **extra}
    torch.save(state, tmp)
    os.replace(tmp, path)


class ThreadChooser:
    """Pick the faster of 1 and 2 intra-op threads, re-probing now and then.

    On a shared 2-core machine two OpenMP threads can be much slower than one when another
    process holds a core (every parallel region waits for the descheduled thread).
    """

    def __init__(self, setting: str, probe_every: int = 200, probe_len: int = 4) -> None:
        self.fixed = None if setting == "auto" else int(setting)
        self.probe_every, self.probe_len = probe_every, probe_len
        self.count = 0
        self.times: dict[int, list[float]] = {1: [], 2: []}
        self.recent: list[float] = []
        torch.set_num_threads(self.fixed or 2)

    def record(self, seconds: float) -> None:
        """Note one step's time and maybe switch the thread count for the next step."""
        self.count += 1
        self.recent = (self.recent + [seconds])[-100:]
        if self.fixed:
            return
        phase = self.count % self.probe_every
        if 1 <= phase <= 2 * self.probe_len:
            n = torch.get_num_threads()
            if phase > 1:  # the first step after a switch is a warm-up
                self.times[n].append(seconds)
            torch.set_num_threads(1 if phase <= self.probe_len else 2)
            if phase == 2 * self.probe_len:
                best = min((1, 2), key=lambda k: sorted(self.times[k])[len(self.times[k]) // 2])
                self.times = {1: [], 2: []}
                torch.set_num_threads(best)

    def step_time(self) -> float:
        """Mean of the recent step times."""
        return sum(self.recent) / len(self.recent)


def replan(args: argparse.Namespace, step: int, spent: float, step_time: float) -> None:
    """Fit the planned step count into ``args.time_budget`` seconds of training.

    The plan is made at step ``args.plan_at`` from the measured step time with a 10% margin,
    then revised every 25 steps from the mean step time of the last 100 steps (by at most 3%
    per revision, so the learning-rate curve stays smooth) as the shared machine's load changes.
    """
    remaining = args.time_budget - spent
    if step == args.plan_at:
        args.steps = step + int(0.9 * remaining / step_time)
        print(f"planned {args.steps} steps at {step_time:.2f} s/step", flush=True)
    elif step > args.plan_at and step % 25 == 0 and step < args.steps:
        target = step + int(remaining / step_time)
        lo, hi = int(args.steps * 0.97), int(args.steps * 1.03)
        new = max(step + 1, min(hi, max(lo, target)))
        if new != args.steps:
            args.steps = new
            print(f"re-planned to {args.steps} steps at {step_time:.2f} s/step", flush=True)


def phase2_lr(elapsed: float, args: argparse.Namespace) -> float:
    """Phase 2: warm-up-free cosine from ``lr`` to ``min_lr_frac * lr`` over the time budget.

    The curve is a function of training seconds, not steps, so on a shared machine whose speed
    varies it still reaches the floor exactly when ``--minutes`` run out.
    """
    progress = min(1.0, elapsed / args.time_budget)
    floor = args.lr * args.min_lr_frac
    return floor + (args.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def cmd_phase2(args: argparse.Namespace) -> None:
    """Second phase: resume phase 1's weights and AdamW moments from ``WORK/state.pt``, then
    train for ``--minutes`` on the same split with a fresh sampling seed and a warm-up-free,
    time-based cosine schedule. Its own state goes to ``WORK/phase2.pt`` (resumable); phase 1's
    state is left as it was. Export it with ``export --state phase2.pt``.
    """
    work = Path(args.work)
    args.time_budget = args.minutes * 60.0
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    config = model_config(args, tokenizer.get_vocab_size())
    stream = torch.from_numpy(np.load(work / "train_tokens.npy").astype(np.int32))
    model = CodeGenForCausalLM(config)
    opt = make_optimizer(model, args)
    gen = torch.Generator().manual_seed(args.seed)
    state_path = work / "phase2.pt"
    resume = state_path if state_path.exists() else work / "state.pt"
    state = torch.load(resume, map_location="cpu", weights_only=True)
    if state["config"] != config.to_dict():
        raise SystemExit(f"{resume}: saved config differs from the command line")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    step, elapsed, start_step = 0, 0.0, state["step"]
    if resume == state_path:
        gen.set_state(state["gen"])
        step, elapsed, start_step = state["step"], state["elapsed"], state["phase1_steps"]
    print(
        f"phase 2 from {resume.name} (phase 1: {start_step} steps) at step {step}, "
        f"{elapsed:.0f}s of {args.time_budget:.0f}s; lr {args.lr:.1e} -> "
        f"{args.lr * args.min_lr_frac:.1e} (cosine over time), seed {args.seed}",
        flush=True,
    )
    tokens_per_step = args.batch * args.seq
    model.train()
    last_save = time.time()
    t_start, losses = time.time() - elapsed, []
    threads = ThreadChooser(args.threads)
    while True:
        spent = time.time() - t_start
        if spent >= args.time_budget:
            break
        lr = phase2_lr(spent, args)
        for group in opt.param_groups:
            group["lr"] = lr
        window = batch_at(stream, gen, args.batch, args.seq)
        t_step = time.time()
        losses.append(train_step(model, opt, window, args.bf16, args.clip))
        threads.record(time.time() - t_step)
        step += 1
        spent = time.time() - t_start
        done = spent >= args.time_budget
        if step % args.log_every == 0 or done:
            print(
                f"p2 step {step} loss {sum(losses) / len(losses):.4f} lr {lr:.2e} "
                f"tokens {step * tokens_per_step} elapsed {spent:.0f}s "
                f"tok/s {step * tokens_per_step / max(spent, 1e-9):.0f} "
                f"threads {torch.get_num_threads()}",
                flush=True,
            )
            losses = []
        if time.time() - last_save > args.save_every or done:
            extra = {"gen": gen.get_state(), "step": step, "elapsed": spent}
            extra["phase1_steps"] = start_step
            save_state(state_path, model, opt, config=config.to_dict(), **extra)
            last_save = time.time()
    print(f"phase 2 done: {step} steps, {step * tokens_per_step} tokens, {spent:.0f}s")


def cmd_train(args: argparse.Namespace) -> None:
    """Train (or resume) the model; log progress and save state periodically."""
    work = Path(args.work)
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    config = model_config(args, tokenizer.get_vocab_size())
    stream = torch.from_numpy(np.load(work / "train_tokens.npy").astype(np.int32))
    model = CodeGenForCausalLM(config)
    model.init_weights(args.seed)
    opt = make_optimizer(model, args)
    gen = torch.Generator().manual_seed(args.seed)
    state_path = work / "state.pt"
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["config"] != config.to_dict():
            raise SystemExit(f"{state_path}: saved config differs from the command line")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, elapsed = state["step"], state["elapsed"]
        args.steps = state.get("planned_steps", args.steps)
        if args.time_budget and step > args.plan_at:  # re-plan from the average so far
            args.steps = step + int(0.95 * (args.time_budget - elapsed) * step / elapsed)
        print(f"resumed at step {step} ({elapsed:.0f}s trained)", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = args.batch * args.seq
    print(
        f"config {json.dumps(config.to_dict())}\nparams {n_params} steps {args.steps} "
        f"tokens/step {tokens_per_step} total {args.steps * tokens_per_step}",
        flush=True,
    )
    model.train()
    last_save = time.time()
    t_start, losses = time.time() - elapsed, []
    threads = ThreadChooser(args.threads)
    while step < args.steps:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        window = batch_at(stream, gen, args.batch, args.seq)
        t_step = time.time()
        losses.append(train_step(model, opt, window, args.bf16, args.clip))
        threads.record(time.time() - t_step)
        step += 1
        if args.time_budget:
            replan(args, step, time.time() - t_start, threads.step_time())
        if step % args.log_every == 0 or step == args.steps:
            spent = time.time() - t_start
            print(
                f"step {step}/{args.steps} loss {sum(losses) / len(losses):.4f} "
                f"lr {lr_at(step - 1, args):.2e} tokens {step * tokens_per_step} "
                f"elapsed {spent:.0f}s tok/s {step * tokens_per_step / max(spent, 1e-9):.0f} "
                f"threads {torch.get_num_threads()}",
                flush=True,
            )
            losses = []
        if time.time() - last_save > args.save_every or step == args.steps:
            extra = {"gen": gen.get_state(), "step": step, "elapsed": time.time() - t_start}
            extra["planned_steps"] = args.steps
            save_state(state_path, model, opt, config=config.to_dict(), **extra)
            last_save = time.time()
    print(f"done: {step} steps, {step * tokens_per_step} tokens, {time.time() - t_start:.0f}s")


def cmd_export(args: argparse.Namespace) -> None:
    """Write the trained weights (fp16) and the tokenizer into the package's default_model/."""
    work = Path(args.work)
    state = torch.load(work / args.state, map_location="cpu", weights_only=True)
    config = CodeGenConfig.from_dict(state["config"])
    model = CodeGenForCausalLM(config)
    model.load_state_dict(state["model"])
    out = Path(args.out)
    save_checkpoint(model, out, dtype=torch.float16)
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    tokenizer.save(str(out / "tokenizer.json"), pretty=False)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported step {state['step']} to {out} ({size / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cmds = {
        "prepare": cmd_prepare,
        "bench": cmd_bench,
        "train": cmd_train,
        "phase2": cmd_phase2,
        "export": cmd_export,
    }
    for name in cmds:
        p = sub.add_parser(name)
        p.add_argument("--work", default="/work/train_state", help="state directory (not in git)")
        p.add_argument("--vocab-size", type=int, default=8192)
        p.add_argument("--n-layer", type=int, default=4)
        p.add_argument("--n-embd", type=int, default=256)
        p.add_argument("--n-head", type=int, default=8)
        p.add_argument("--rotary-dim", type=int, default=16)
        p.add_argument("--seq", type=int, default=512, help="training context = n_positions")
        p.add_argument("--batch", type=int, default=16)
        p.add_argument("--steps", type=int, default=2000)
        p.add_argument("--warmup", type=int, default=100)
        p.add_argument("--lr", type=float, default=2e-3)
        p.add_argument("--min-lr-frac", type=float, default=0.1)
        p.add_argument("--wd", type=float, default=0.1)
        p.add_argument("--clip", type=float, default=1.0)
        p.add_argument("--bf16", action="store_true", help="bf16 autocast (fp32 master weights)")
        p.add_argument("--threads", default="auto", help="1, 2 or auto")
        p.add_argument("--time-budget", type=float, default=0.0, help="seconds; plans --steps")
        p.add_argument("--plan-at", type=int, default=30, help="step at which to plan")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--log-every", type=int, default=10)
        p.add_argument("--save-every", type=float, default=300.0, help="seconds")
        p.add_argument("--seconds", type=float, default=30.0, help="bench duration per dtype")
        p.add_argument("--out", default=str(SHIP_DIR), help="export directory")
        p.add_argument("--state", default="state.pt", help="state file in WORK to export")
        p.add_argument("--minutes", type=float, default=30.0, help="phase 2 training time")
    args = parser.parse_args(argv)
    cmds[args.cmd](args)


if __name__ == "__main__":
    main()
