"""Recipe of the default model v3: v2 continued on the v3 corpus with fill-in-the-middle.

    python model/packages.py                         # scan -> model/manifest-v3.tsv.gz
    python model/train_v3.py base --base V2_DIR      # v2's shipped files, from git history
    python model/train_v3.py prepare --work W        # tokenizer (+ FIM tokens), token stream
    python model/train_v3.py train --work W --base V2_DIR --minutes M   # resumable
    python model/train_v3.py export --work W         # -> codegen_lsp/default_model/

``prepare`` takes the base model's tokenizer (v2's 8,192 ids), adds CodeGen2's infill tokens
``<mask_1>``, ``<sep>``, ``<eom>`` as special tokens (ids 8192-8194; adding them again is a
no-op, so the shipped v3 tokenizer gives the same ids), checks every manifest file against its
sha256 and encodes the training split into one uint16 stream, files separated by
``<|endoftext|>``.

``train`` starts from the base weights (``--base``: a checkpoint directory; the vocabulary is
padded from 8,192 to 8,256 rows, the three new rows start at the mean embedding and at the lowest
output bias), draws random 512-token windows, and turns a share ``--fim`` of them into infill
examples in CodeGen2's layout, the one the server sends::

    prefix <mask_1> suffix <|endoftext|> <sep> <mask_1> middle <eom>

Infill examples are cut in text as the server cuts them (``Batches``): cursor after a line's
indentation or inside it, the middle the rest of 1-5 lines, prefix and suffix encoded on their
own, prefixes of every length (``<|endoftext|>`` first at a file start), suffix up to 128
tokens. AdamW, bf16 autocast, a warm-up of ``--warmup`` steps then a cosine over the
wall-clock budget (``--minutes``), so it ends on time on a shared machine. State goes to
``W/v3.pt`` every ``--save-every`` seconds; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from corpus import EOS_ID, SHIP_DIR  # noqa: E402
from packages import read_corpus, read_manifest_v3  # noqa: E402
from train import ThreadChooser, make_optimizer, save_state  # noqa: E402

from codegen_lsp.codegen.checkpoint import load_model, save_checkpoint  # noqa: E402
from codegen_lsp.codegen.config import CodeGenConfig  # noqa: E402
from codegen_lsp.codegen.modeling import CodeGenForCausalLM  # noqa: E402

FIM_TOKENS = ("<mask_1>", "<sep>", "<eom>")
V2_COMMIT = "947919dd291ebe475b57df65d606da24cb8dc076"  # a commit that ships v2
V2_FILES = ("config.json", "model.safetensors", "tokenizer.json")
SEQ = 512


def fim_tokenizer(base: Path) -> Tokenizer:
    """The base tokenizer with CodeGen2's three infill tokens (idempotent)."""
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in FIM_TOKENS]
    )
    return tokenizer


def cmd_base(args: argparse.Namespace) -> None:
    """Write v2's shipped files (the starting point) into ``--base`` from the git history."""
    import subprocess

    base = Path(args.base)
    base.mkdir(parents=True, exist_ok=True)
    for name in V2_FILES:
        blob = f"{V2_COMMIT}:codegen_lsp/default_model/{name}"
        data = subprocess.run(["git", "show", blob], cwd=HERE, capture_output=True, check=True)
        (base / name).write_bytes(data.stdout)
    print(f"v2 ({V2_COMMIT[:7]}) -> {base}")


def cmd_prepare(args: argparse.Namespace) -> None:
    """Tokenizer with the infill tokens, and the training split as one token stream."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = fim_tokenizer(Path(args.base))
    ids = [tokenizer.token_to_id(t) for t in FIM_TOKENS]
    print(f"tokenizer: {tokenizer.get_vocab_size()} ids, infill tokens {ids}", flush=True)
    tokenizer.save(str(work / "tokenizer.json"))
    texts = [text for _, text in read_corpus(read_manifest_v3(), ("train",))]
    t0 = time.time()
    parts = [np.array([EOS_ID], dtype=np.uint16)]
    for start in range(0, len(texts), 512):
        for enc in tokenizer.encode_batch(texts[start : start + 512], add_special_tokens=False):
            parts.append(np.array([*enc.ids, EOS_ID], dtype=np.uint16))
    stream = np.concatenate(parts)
    np.save(work / "train_v3.npy", stream)
    size = sum(len(t.encode("utf-8")) for t in texts)
    print(
        f"train: {len(texts)} files, {size} bytes, {len(stream)} tokens "
        f"({size / len(stream):.2f} bytes/token) in {time.time() - t0:.0f}s"
    )


class Batches:
    """Random windows of the stream, a share of them rearranged into infill examples.

    An infill example is cut where the server cuts it, in text, not in tokens: a window of one
    file is decoded, a cursor is put on one of its lines (after the indentation 70% of the
    time, else anywhere in the line), the middle is the rest of that line (60%) or of 2-5 lines
    (40%) without the last newline, and prefix, suffix and middle are encoded on their own, as
    the server encodes the text before and after the cursor. The prefix starts at a line start
    (with ``<|endoftext|>`` when that is the file's start, as the server sends it), so short
    files give short prefixes; the suffix is the first 0-128 tokens after the middle
    (``FIM_SUFFIX_TOKENS``, usually all 128); a row shorter than 513 tokens is filled with the
    start of another file.
    """

    def __init__(self, stream: np.ndarray, tokenizer: Tokenizer, fim: float, seed: int) -> None:
        self.stream = stream.astype(np.int64)
        self.tokenizer = tokenizer
        self.fim = fim
        self.rng = np.random.default_rng(seed)
        self.mask, self.sep, self.eom = (tokenizer.token_to_id(t) for t in FIM_TOKENS)
        self.eos = np.flatnonzero(self.stream == EOS_ID)  # file i is eos[i]+1 .. eos[i+1]

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _window(self) -> tuple[str, bool]:
        """Text of up to ~1,000 tokens of one file, and whether it starts at the file start."""
        while True:
            c = int(self.rng.integers(1, len(self.stream) - 1))
            f = int(np.searchsorted(self.eos, c, side="right")) - 1
            if f + 1 < len(self.eos) and self.eos[f + 1] - self.eos[f] > 8:
                break
        first, end = int(self.eos[f]) + 1, int(self.eos[f + 1])
        a, b = max(first, c - 700), min(end, c + 300)
        text = self.tokenizer.decode(self.stream[a:b].tolist(), skip_special_tokens=False)
        return text, a == first

    def _fit_prefix(self, lines: list[str], room: int, at_start: bool) -> list[int]:
        """The longest run of whole last lines of ``lines`` that fits in ``room`` tokens."""
        lo, hi = 0, len(lines)  # lines[hi:] always fits (empty)
        while lo < hi:  # the smallest i such that lines[i:] fits
            mid = (lo + hi) // 2
            ids = self._encode("".join(lines[mid:]))
            if len(ids) + (at_start and mid == 0) <= room:
                hi = mid
            else:
                lo = mid + 1
        ids = self._encode("".join(lines[lo:]))
        return [EOS_ID, *ids] if at_start and lo == 0 else ids

    def infill(self) -> np.ndarray:
        """One ``SEQ + 1``-token infill example."""
        total = SEQ + 1
        while True:
            text, at_start = self._window()
            lines = text.splitlines(keepends=True)
            lo = 0 if at_start else 1  # a window that starts mid-file starts mid-line
            if len(lines) - lo >= 3 and any(x.strip() for x in lines[lo:-1]):
                break
        k = int(self.rng.integers(lo, len(lines) - 1))
        while not lines[k].strip():  # a cursor on a blank line wants a suggestion: no empty middles
            k = int(self.rng.integers(lo, len(lines) - 1))
        line = lines[k]
        indent = len(line) - len(line.lstrip(" \t"))
        body_end = len(line.rstrip("\r\n"))
        if self.rng.random() < 0.7 or body_end <= indent:
            col = indent
        else:
            col = int(self.rng.integers(indent, body_end + 1))
        span = 1 if self.rng.random() < 0.6 else int(self.rng.integers(2, 6))
        chunk = "".join(lines[k : k + span])
        cut = len(chunk.rstrip("\r\n")) if k + span <= len(lines) else len(chunk)
        middle_text = chunk[col:cut]
        after = chunk[cut:] + "".join(lines[k + span :])
        room = 128 if self.rng.random() < 0.8 else int(self.rng.integers(0, 129))
        suffix = self._encode(after)[:room]
        middle = self._encode(middle_text)[: total // 3]
        fixed = len(suffix) + len(middle) + 5  # mask, eos, sep, mask, eom
        prefix = self._fit_prefix([*lines[lo:k], line[:col]], total - fixed, at_start)
        row = [*prefix, self.mask, *suffix, EOS_ID, self.sep, self.mask, *middle, self.eom]
        if len(row) < total:  # fill with the start of another file
            f = int(self.rng.integers(0, len(self.eos) - 1))
            start = int(self.eos[f])
            row += self.stream[start : start + total - len(row)].tolist()
        return np.asarray(row[:total], dtype=np.int64)

    def plain(self) -> np.ndarray:
        start = int(self.rng.integers(0, len(self.stream) - SEQ - 1))
        return self.stream[start : start + SEQ + 1]

    def next(self, batch: int) -> torch.Tensor:
        rows = [
            self.infill() if self.rng.random() < self.fim else self.plain() for _ in range(batch)
        ]
        return torch.from_numpy(np.stack(rows))


def grow_vocab(model: CodeGenForCausalLM, vocab: int) -> CodeGenForCausalLM:
    """A copy of ``model`` with ``vocab`` rows in the embedding and head (new rows: the mean
    embedding, the mean head row, the lowest head bias)."""
    config = CodeGenConfig.from_dict({**model.config.to_dict(), "vocab_size": vocab})
    grown = CodeGenForCausalLM(config)
    old = model.state_dict()
    new = grown.state_dict()
    for name, tensor in old.items():
        if tensor.shape == new[name].shape:
            new[name] = tensor.float()
            continue
        rows = tensor.shape[0]
        fill = tensor.float().min() if name == "lm_head.bias" else tensor.float().mean(0)
        new[name] = torch.cat([tensor.float(), fill.expand(vocab - rows, *tensor.shape[1:])])
    grown.load_state_dict(new)
    return grown


def lr_at(step: int, elapsed: float, args: argparse.Namespace) -> float:
    """Linear warm-up over steps, then a cosine over the wall-clock budget to 10%."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, elapsed / (args.minutes * 60))
    return args.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def cmd_train(args: argparse.Namespace) -> None:
    """Continue the base model on the v3 stream with the infill objective (resumable)."""
    work = Path(args.work)
    tokenizer = Tokenizer.from_file(str(work / "tokenizer.json"))
    vocab = (tokenizer.get_vocab_size() + 63) // 64 * 64
    model = grow_vocab(load_model(args.base), vocab)
    opt = make_optimizer(model, args)
    batches = Batches(np.load(work / "train_v3.npy"), tokenizer, args.fim, args.seed)
    state_path = work / "v3.pt"
    step, elapsed = 0, 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = state["step"], state["elapsed"]
        batches.rng = np.random.default_rng([args.seed, step])
        print(f"resumed at step {step} ({elapsed:.0f}s trained)", flush=True)
    print(f"config {json.dumps(model.config.to_dict())}", flush=True)
    model.train()
    threads = ThreadChooser(args.threads)
    t_start, last_save, losses = time.time() - elapsed, time.time(), []
    while (spent := time.time() - t_start) < args.minutes * 60:
        lr = lr_at(step, spent, args)
        for group in opt.param_groups:
            group["lr"] = lr
        window = batches.next(args.batch)
        t_step = time.time()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(window[:, :-1], torch.arange(SEQ))
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), window[:, 1:].flatten()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        threads.record(time.time() - t_step)
        losses.append(float(loss.detach()))
        step += 1
        if step % args.log_every == 0:
            spent = time.time() - t_start
            print(
                f"v3 step {step} loss {sum(losses) / len(losses):.4f} lr {lr:.2e} "
                f"tokens {step * args.batch * SEQ} elapsed {spent:.0f}s "
                f"tok/s {step * args.batch * SEQ / spent:.0f} threads {torch.get_num_threads()}",
                flush=True,
            )
            losses = []
        if time.time() - last_save > args.save_every:
            save_state(state_path, model, opt, step=step, elapsed=time.time() - t_start)
            last_save = time.time()
    save_state(state_path, model, opt, step=step, elapsed=time.time() - t_start)
    print(f"done: {step} steps, {step * args.batch * SEQ} tokens, {time.time() - t_start:.0f}s")


def cmd_export(args: argparse.Namespace) -> None:
    """Write the trained weights (fp16) and the infill tokenizer into default_model/."""
    work, out = Path(args.work), Path(args.out)
    state = torch.load(work / "v3.pt", map_location="cpu", weights_only=True)
    vocab = state["model"]["lm_head.weight"].shape[0]
    config = CodeGenConfig.from_dict(
        {**load_model(args.base).config.to_dict(), "vocab_size": vocab}
    )
    model = CodeGenForCausalLM(config)
    model.load_state_dict(state["model"])
    save_checkpoint(model, out, dtype=torch.float16)
    Tokenizer.from_file(str(work / "tokenizer.json")).save(
        str(out / "tokenizer.json"), pretty=False
    )
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"exported step {state['step']} to {out} ({size / 1e6:.1f} MB)")


def cmd_plot(args: argparse.Namespace) -> None:
    """Training loss against tokens seen, one line per log (``--logs``), into ``--out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    for log in args.logs:
        steps = [line.split() for line in Path(log).read_text().splitlines()]
        rows = [(int(w[8]), float(w[4])) for w in steps if w[:2] == ["v3", "step"]]
        ax.plot([t / 1e6 for t, _ in rows], [loss for _, loss in rows], label=Path(log).stem)
    ax.set_xlabel("tokens seen (millions)")
    ax.set_ylabel("training loss, 10-step mean (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    commands = {"base": cmd_base, "prepare": cmd_prepare, "train": cmd_train, "export": cmd_export}
    for name, func in commands.items():
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--work", default="/work/train_state/v3", help="state directory")
        p.add_argument("--base", default="/work/train_state/v2", help="v2 checkpoint directory")
        p.add_argument("--out", default=str(SHIP_DIR), help="export directory")
        p.add_argument("--minutes", type=float, default=60.0, help="training time budget")
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--lr", type=float, default=6e-4)
        p.add_argument("--wd", type=float, default=0.1)
        p.add_argument("--warmup", type=int, default=50)
        p.add_argument("--fim", type=float, default=0.5, help="share of infill examples")
        p.add_argument("--threads", default="auto")
        p.add_argument("--seed", type=int, default=3)
        p.add_argument("--log-every", type=int, default=10)
        p.add_argument("--save-every", type=float, default=300.0)
    plot = sub.add_parser("plot")
    plot.set_defaults(func=cmd_plot)
    plot.add_argument("--logs", nargs="+", required=True)
    plot.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
