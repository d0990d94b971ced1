"""The one training loop of the default model; a run is a configuration (``model/configs``).

Run from the repository root::

    python -m model.train prepare --data stdlib          # token streams -> WORK/stdlib (CPU)
    python -m model.train train --config v2-B            # -> WORK/runs/v2-B (resumable)
    python -m model.train train --config v2-B --smoke    # builds everything, 2 tiny steps
    python -m model.train export --config v2-B --out DIR # fp16 checkpoint (best weights)
    python -m model.train plot --logs A.log B.log --out loss.png

``train`` builds the model (from scratch, from another run's state with its AdamW moments, or
from a checkpoint shipped at a git commit, the vocabulary grown to the data's), then draws
rows (``data.Batches``), and runs AdamW with bf16 autocast and one learning-rate schedule: a
linear warm-up over ``warmup`` steps, then a cosine to ``min_lr_frac * lr`` that follows the
run's progress, the largest of its budget fractions (``steps``, ``passes`` over the stream,
``minutes`` of wall clock); the run ends when the progress reaches 1. With ``eval_every`` it
scores the held-out stream now and then and keeps the best weights (early stopping). The full
state is saved every ``save_every`` seconds to ``RUN/state.pt``; rerunning resumes from it.
Log lines go to stdout and ``RUN/train.log``, a summary to ``RUN/summary.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from codegen_lsp.codegen.checkpoint import load_model, save_checkpoint
from codegen_lsp.codegen.config import CodeGenConfig
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from model.config import TrainConfig, load_config
from model.corpus import EOS_ID, SHIP_DIR
from model.data import Batches, git_checkpoint, prepare
from model.threads import ThreadChooser

WORK = "/work/train_state"
GENERATION_CONFIG = {"bos_token_id": EOS_ID, "eos_token_id": EOS_ID, "file_start_bos": True}


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine to the floor at progress 1."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    floor = cfg.lr * cfg.min_lr_frac
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def progress_of(cfg: TrainConfig, step: int, elapsed: float, stream_tokens: int) -> float:
    """The largest fraction of the run's budgets used so far (1 = the end)."""
    parts = [0.0]
    if cfg.steps:
        parts.append(step / cfg.steps)
    if cfg.passes:
        parts.append(step * cfg.batch * cfg.seq / (cfg.passes * stream_tokens))
    if cfg.minutes:
        parts.append(elapsed / (cfg.minutes * 60))
    return max(parts)


def grow_vocab(model: CodeGenForCausalLM, vocab: int) -> CodeGenForCausalLM:
    """A copy of ``model`` with ``vocab`` rows in the embedding and head (new rows: the mean
    embedding, the mean head row, the lowest head bias)."""
    config = CodeGenConfig.from_dict({**model.config.to_dict(), "vocab_size": vocab})
    grown = CodeGenForCausalLM(config)
    new = grown.state_dict()
    for name, tensor in model.state_dict().items():
        if tensor.shape == new[name].shape:
            new[name] = tensor.float()
            continue
        rows = tensor.shape[0]
        fill = tensor.float().min() if name == "lm_head.bias" else tensor.float().mean(0)
        new[name] = torch.cat([tensor.float(), fill.expand(vocab - rows, *tensor.shape[1:])])
    grown.load_state_dict(new)
    return grown


def make_optimizer(model: CodeGenForCausalLM, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW (0.9, 0.95) with weight decay on matrices only (not biases, LayerNorms)."""
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim != 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)


def build_model(cfg: TrainConfig, work: Path, vocab: int) -> tuple[CodeGenForCausalLM, dict]:
    """The starting model and, for ``init: run:NAME``, that run's optimizer state."""
    if cfg.init == "scratch":
        torch.manual_seed(cfg.seed)
        model = CodeGenForCausalLM(
            CodeGenConfig(
                vocab_size=vocab,
                n_positions=cfg.seq,
                n_embd=cfg.n_embd,
                n_layer=cfg.n_layer,
                n_head=cfg.n_head,
                rotary_dim=cfg.rotary_dim,
                bos_token_id=EOS_ID,
                eos_token_id=EOS_ID,
            )
        )
        model.init_weights(cfg.seed)
        return model, {}
    kind, _, ref = cfg.init.partition(":")
    if kind == "git":
        return grow_vocab(load_model(git_checkpoint(work, ref), dtype=torch.float32), vocab), {}
    state = torch.load(work / "runs" / ref / "state.pt", map_location="cpu", weights_only=True)
    if state["config"]["data"] != cfg.data:
        raise SystemExit(f"init {cfg.init}: trained on {state['config']['data']}, not {cfg.data}")
    model = CodeGenForCausalLM(CodeGenConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model, state["opt"]


def smoke_config(cfg: TrainConfig) -> TrainConfig:
    """The same run shrunk to two steps of two short rows, every part exercised."""
    return dataclasses.replace(
        cfg,
        steps=2,
        passes=0.0,
        minutes=0.0,
        batch=2,
        seq=64,
        warmup=min(cfg.warmup, 1),
        eval_every=1e-9 if cfg.eval_every else 0.0,
        eval_windows=4,
        log_every=1,
    )


def heldout_windows(data: Path, seq: int, limit: int) -> dict[str, torch.Tensor]:
    """Each held-out stream of the data cut into non-overlapping ``seq + 1``-token windows."""
    out = {}
    for name in ("heldout", "heldout_lib"):
        path = data / f"{name}_tokens.npy"
        held = np.load(path).astype(np.int64) if path.is_file() else np.zeros(0, np.int64)
        n = min(limit, (len(held) - 1) // seq)
        if n > 0:
            idx = np.arange(n)[:, None] * seq + np.arange(seq + 1)[None, :]
            out[name] = torch.from_numpy(held[idx])
    return out


@torch.no_grad()
def heldout_loss(model: CodeGenForCausalLM, windows: torch.Tensor, bf16: bool) -> float:
    """Mean loss (nats/token) over the windows (a quick score, not the model card's)."""
    model.eval()
    positions = torch.arange(windows.shape[1] - 1, device=windows.device)
    total, count = 0.0, 0
    for chunk in windows.split(64):
        with torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(chunk[:, :-1], positions)
        total += float(
            F.cross_entropy(logits.flatten(0, 1).float(), chunk[:, 1:].flatten(), reduction="sum")
        )
        count += chunk[:, 1:].numel()
    model.train()
    return total / count


def save_state(path: Path, state: dict) -> None:
    """Atomically write the resumable state."""
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, work: Path, run_dir: Path, device: str) -> dict:
    """Train (or resume) one run; return its summary (also written to ``RUN/summary.json``)."""
    data = work / cfg.data
    run_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(run_dir / "train.log", "a", buffering=1)

    def log(line: str) -> None:
        print(line, flush=True)
        log_file.write(line + "\n")

    tokenizer = Tokenizer.from_file(str(data / "tokenizer.json"))
    vocab = (tokenizer.get_vocab_size() + 63) // 64 * 64
    stream = np.load(data / "train_tokens.npy")
    flags = data / "train_is_test.npy"
    is_test = np.load(flags) if cfg.lib_weight != 1.0 else None
    if cfg.lib_weight != 1.0 and not flags.is_file():
        raise SystemExit(f"lib_weight needs {flags} (data stdlib)")
    batches = Batches(stream, tokenizer, cfg.seq, cfg.seed, cfg.fim, is_test, cfg.lib_weight)
    model, opt_state = build_model(cfg, work, vocab)
    model.to(device)
    opt = make_optimizer(model, cfg)
    if opt_state:
        opt.load_state_dict(opt_state)
    windows = {k: v.to(device) for k, v in heldout_windows(data, cfg.seq, cfg.eval_windows).items()}
    state_path = run_dir / "state.pt"
    step, elapsed, history = 0, 0.0, []
    best: dict = {"loss": math.inf, "step": 0, "tokens": 0, "model": None}
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if {**state["config"], "note": ""} != {**cfg.to_dict(), "note": ""}:
            raise SystemExit(f"{state_path}: saved for another configuration")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        batches.set_state(state["rng"])
        step, elapsed, history, best = (
            state["step"],
            state["elapsed"],
            state["history"],
            state["best"],
        )
        log(f"resumed at step {step} ({elapsed:.0f}s trained)")
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = cfg.batch * cfg.seq
    log(f"run {cfg.name}: {json.dumps(cfg.to_dict())}")
    log(f"model {json.dumps(model.config.to_dict())} params {n_params} device {device}")
    threads = ThreadChooser(cfg.threads) if device == "cpu" else None
    model.train()
    t_start, last_save, last_eval, losses = time.time() - elapsed, time.time(), time.time(), []

    def snapshot() -> dict:
        return {
            "config": cfg.to_dict(),
            "model_config": model.config.to_dict(),
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "rng": batches.get_state(),
            "step": step,
            "elapsed": time.time() - t_start,
            "history": history,
            "best": best,
        }

    while True:
        elapsed = time.time() - t_start
        progress = progress_of(cfg, step, elapsed, len(stream))
        done = progress >= 1.0
        if windows and cfg.eval_every and (done or time.time() - last_eval >= cfg.eval_every):
            scores = {k: heldout_loss(model, w, cfg.bf16) for k, w in windows.items()}
            tokens = step * tokens_per_step
            row = {"step": step, "tokens": tokens, "passes": tokens / len(stream)}
            row |= {"elapsed": round(elapsed, 1), **{k: round(v, 4) for k, v in scores.items()}}
            history.append(row)
            if scores["heldout"] < best["loss"]:
                weights = {
                    k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                }
                best = {"loss": scores["heldout"], "step": step, "tokens": tokens, "model": weights}
                best["scores"] = scores
            log(json.dumps(row))
            last_eval = time.time()
        if done:
            break
        lr = lr_at(cfg, step, progress)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = batches.next(cfg.batch).to(device)
        t_step = time.time()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=cfg.bf16):
            logits = model(rows[:, :-1], torch.arange(cfg.seq, device=device))
        loss = F.cross_entropy(logits.flatten(0, 1).float(), rows[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        losses.append(loss.detach())
        if threads:
            threads.record(time.time() - t_step)
        step += 1
        if step % cfg.log_every == 0:
            spent, tokens = time.time() - t_start, step * tokens_per_step
            log(
                f"step {step} loss {float(torch.stack(losses).mean()):.4f} lr {lr:.2e} "
                f"tokens {tokens} passes {tokens / len(stream):.2f} "
                f"elapsed {spent:.0f}s tok/s {tokens / max(spent, 1e-9):.0f}"
                + (f" threads {torch.get_num_threads()}" if threads else "")
            )
            losses = []
        if time.time() - last_save > cfg.save_every:
            save_state(state_path, snapshot())
            last_save = time.time()
    save_state(state_path, snapshot())
    elapsed = time.time() - t_start
    summary = {
        "run": cfg.name,
        "config": cfg.to_dict(),
        "model_config": model.config.to_dict(),
        "params": n_params,
        "steps": step,
        "tokens": step * tokens_per_step,
        "passes": step * tokens_per_step / len(stream),
        "seconds": round(elapsed, 1),
        "tokens_per_s": round(step * tokens_per_step / max(elapsed, 1e-9)),
        "best_heldout": best.get("scores"),
        "best_step": best["step"],
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "torch": str(torch.__version__),
        "history": history,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    log(f"done: {step} steps, {step * tokens_per_step} tokens, {elapsed:.0f}s")
    log_file.close()
    return summary


def export(run_dir: Path, data: Path, out: Path) -> Path:
    """Write a run's best weights (its last when it kept none) as an fp16 checkpoint."""
    state = torch.load(run_dir / "state.pt", map_location="cpu", weights_only=True)
    model = CodeGenForCausalLM(CodeGenConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["best"]["model"] or state["model"])
    save_checkpoint(model, out, dtype=torch.float16)
    Tokenizer.from_file(str(data / "tokenizer.json")).save(
        str(out / "tokenizer.json"), pretty=False
    )
    (out / "generation_config.json").write_text(json.dumps(GENERATION_CONFIG, indent=2) + "\n")
    return out


_STEP = re.compile(r"step (\d+)(?:/\d+)? loss ([\d.]+) .*?tokens (\d+)")


def plot(logs: list[str], out: str) -> None:
    """Training loss against tokens seen, one line per log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for log in logs:
        rows = [m.groups() for m in map(_STEP.search, Path(log).read_text().splitlines()) if m]
        ax.plot(
            [int(t) / 1e6 for _, _, t in rows], [float(x) for _, x, _ in rows], label=Path(log).stem
        )
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("training loss, mean of each logged interval (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m model.train", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="token streams of a corpus into WORK/DATA")
    p.add_argument("--data", choices=("stdlib", "v3"), required=True)
    p.add_argument("--vocab-size", type=int, default=8192, help="stdlib BPE size")
    p.add_argument("--limit-files", type=int, default=0, help="smoke: the first N matching files")
    for name in ("train", "export"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="configs/NAME.json or a path")
        p.add_argument("--run-dir", default="", help="default WORK/runs/NAME")
        p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    for p in sub.choices.values():
        p.add_argument("--work", default=WORK, help="data and run states (not in git)")
    train_p, export_p = sub.choices["train"], sub.choices["export"]
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    train_p.add_argument("--device", default=default_device)
    train_p.add_argument("--smoke", action="store_true", help="2 tiny steps, then stop")
    export_p.add_argument("--out", default=str(SHIP_DIR), help="checkpoint directory")
    p = sub.add_parser("plot", help="loss curves of train logs")
    p.add_argument("--logs", nargs="+", required=True)
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "plot":
        plot(args.logs, args.out)
        return
    work = Path(args.work)
    if args.cmd == "prepare":
        prepare(args.data, work, args.vocab_size, args.limit_files)
        return
    cfg = load_config(args.config, args.overrides)
    if args.cmd == "train" and args.smoke:
        cfg = smoke_config(cfg)
    run_dir = Path(args.run_dir) if args.run_dir else work / "runs" / cfg.name
    if args.cmd == "train":
        train(cfg, work, run_dir, args.device)
    else:
        out = export(run_dir, work / cfg.data, Path(args.out))
        print(f"exported {run_dir} -> {out}")


if __name__ == "__main__":
    main()
