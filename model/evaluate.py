"""The one evaluation of a default model, as suites; results merged into a JSON file by name.

Run from the repository root::

    python -m model.evaluate --suites v2 --name v2 --out model/runs/v2/eval.json
    python -m model.evaluate --model DIR --suites v3 --name v3 --out model/runs/v3/eval.json

Suites (``--suites`` takes names or groups, comma-separated; ``v2`` = ``loss,prompts``, the
shipped model's card; ``v3`` = ``loss,loss-packages,lines,prompts``, v3's comparison):

- ``loss`` -> ``loss_stdlib``: the stdlib held-out split (``heldout`` rows of
  ``model/manifest.tsv.gz``, 107 files). Each file is scored as ``<|endoftext|>`` followed by
  its tokens, in windows of the model's context that advance by ``--stride`` tokens, so every
  token after the first window sees at least ``n_positions - stride`` tokens of context. Loss
  is nats per token; bits per byte is the summed loss over the files' UTF-8 bytes; ``xz -9``
  and ``gzip -9 -n`` compress the same files one by one and concatenated.
- ``loss-packages`` -> ``loss_packages``: the same on the held-out packages
  (``heldout-package`` rows of ``model/manifest-v3.tsv.gz``) in sha256(path) order, up to
  ``--package-tokens`` tokens.
- ``prompts`` -> ``prompts``: 12 held-out function prompts, greedy and best of 8
  (``completions.py``); the markdown table is printed.
- ``lines`` -> ``line``, ``infill`` (+ ``*_rows``): held-out lines through the server's
  suggestion service, with and without the rest of the file (``completions.py``), 2 lines of
  each of the first 80 files of both held-out splits in sha256(path) order.

Every file is checked against its manifest's sha256 (another Python's stdlib is refused).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

from codegen_lsp.codegen.checkpoint import load_model
from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from model import completions
from model.corpus import EOS_ID, SHIP_DIR
from model.data import split_texts

SUITES = ("loss", "loss-packages", "prompts", "lines")
GROUPS = {"v2": ("loss", "prompts"), "v3": ("loss", "loss-packages", "lines", "prompts")}


def windows(n_tokens: int, ctx: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, end, first_scored)`` windows covering targets ``1..n_tokens-1`` once each."""
    out = [(0, min(ctx, n_tokens), 1)]
    scored_to = out[0][1]
    while scored_to < n_tokens:
        end = min(scored_to + stride, n_tokens)
        start = max(0, end - ctx)
        out.append((start, end, scored_to))
        scored_to = end
    return out


@torch.no_grad()
def score(model: CodeGenForCausalLM, ids: list[list[int]], stride: int, batch: int) -> float:
    """Summed negative log-likelihood (nats) of every token after the leading bos."""
    ctx = model.config.n_positions
    jobs: dict[int, list[tuple[torch.Tensor, int]]] = {}
    for seq in ids:
        t = torch.tensor(seq)
        for start, end, first in windows(len(seq), ctx, stride):
            jobs.setdefault(end - start, []).append((t[start:end], first - start))
    total = 0.0
    for length, items in jobs.items():
        positions = torch.arange(length - 1)
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            x = torch.stack([c[0] for c in chunk])
            logp = torch.log_softmax(model(x[:, :-1], positions), dim=-1)
            nll = -logp.gather(-1, x[:, 1:, None])[..., 0]  # nll[j] is for token j+1
            for row, (_, first) in enumerate(chunk):
                total += float(nll[row, first - 1 :].double().sum())
    return total


def compressed_bits(data: list[bytes], command: list[str]) -> tuple[int, int]:
    """Total compressed bits file by file, and of the concatenation, for a CLI compressor."""

    def run(blob: bytes) -> int:
        return 8 * len(subprocess.run(command, input=blob, capture_output=True, check=True).stdout)

    return sum(run(d) for d in data), run(b"".join(data))


def loss_suite(
    model: CodeGenForCausalLM, tokenizer: Tokenizer, texts: list[str], args: argparse.Namespace,
    max_tokens: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Held-out loss, bits per byte and the compressors' bits per byte on ``texts``."""
    t0 = time.time()
    ids, kept, total = [], [], 0
    for text, enc in zip(
        texts, tokenizer.encode_batch(texts, add_special_tokens=False), strict=True
    ):
        if max_tokens and total + len(enc.ids) > max_tokens:
            break
        ids.append([EOS_ID, *enc.ids])
        kept.append(text.encode("utf-8"))
        total += len(enc.ids)
    nats = score(model, ids, args.stride, args.batch)
    n_bytes = sum(map(len, kept))
    out = {"files": len(ids), "bytes": n_bytes, "tokens": total, "loss": nats / total}
    out |= {"bits_per_byte": nats / math.log(2) / n_bytes, "stride": args.stride}
    for name, command in (("xz", ["xz", "-9", "-c"]), ("gzip", ["gzip", "-9", "-n", "-c"])):
        per_file, joined = compressed_bits(kept, command)
        out[f"{name}_bpb_per_file"] = per_file / n_bytes
        out[f"{name}_bpb_concatenated"] = joined / n_bytes
    out["seconds"] = round(time.time() - t0, 1)
    return out


def by_path_hash(texts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """In sha256(path) order: a budget of files or tokens takes a spread of the split."""
    return sorted(texts, key=lambda item: hashlib.sha256(item[0].encode()).digest())


def held_out(split: str, limit: int) -> list[tuple[str, str]]:
    """``(path, text)`` of a held-out split: ``stdlib`` (manifest order) or ``packages``
    (sha256(path) order, paths as ``package/rel``)."""
    if split == "stdlib":
        texts = split_texts("stdlib", "heldout")
        return texts[:limit] if limit else texts
    from model.packages import read_corpus, read_manifest_v3

    rows = [f for f in read_manifest_v3() if f.split == "heldout-package"]
    texts = [(f"{f.package}/{f.rel}", t) for f, t in read_corpus(rows, ("heldout-package",))]
    texts = by_path_hash(texts)
    return texts[:limit] if limit else texts


def evaluate(args: argparse.Namespace, suites: list[str]) -> dict:
    """Run the suites on ``args.model``; the results by key."""
    torch.set_num_threads(args.threads)
    model = load_model(args.model, dtype=torch.float32)
    tokenizer = Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    stdlib = held_out("stdlib", args.limit_files)
    result: dict[str, object] = {"model": args.model}
    if "loss" in suites:
        result["loss_stdlib"] = loss_suite(model, tokenizer, [t for _, t in stdlib], args)
        print("loss_stdlib", json.dumps(result["loss_stdlib"]), flush=True)
    if "loss-packages" in suites or "lines" in suites:
        packages = held_out("packages", args.limit_files)
    if "loss-packages" in suites:
        texts = [t for _, t in packages]
        result["loss_packages"] = loss_suite(model, tokenizer, texts, args, args.package_tokens)
        print("loss_packages", json.dumps(result["loss_packages"]), flush=True)
    if "lines" in suites:
        samples = []
        for texts in (by_path_hash([(f"stdlib/{rel}", t) for rel, t in stdlib]), packages):
            samples += completions.sample_lines(texts, args.files, args.lines_per_file)
        for kind, infill in (("line", False), ("infill", True)):
            rows = completions.lines_suite(args.model, samples, infill)
            result[kind] = completions.summary(rows)
            result[f"{kind}_rows"] = rows
            print(kind, json.dumps(result[kind]), flush=True)
    if "prompts" in suites:
        rows = completions.prompts_suite(model, args.model, stdlib, args.n_prompts, args.max_new)
        result["prompts"] = rows
        print(completions.prompts_table(rows), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: evaluate one model, merge into ``--out`` under ``--name``."""
    parser = argparse.ArgumentParser(
        prog="python -m model.evaluate", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", default=str(SHIP_DIR))
    parser.add_argument("--suites", default="v2", help=f"of {SUITES} or groups {list(GROUPS)}")
    parser.add_argument("--name", default="", help="key in --out (default: the folder's name)")
    parser.add_argument("--out", default="", help="JSON file to merge into (none: print only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--package-tokens", type=int, default=400_000, help="loss-packages budget")
    parser.add_argument("--n-prompts", type=int, default=12)
    parser.add_argument("--max-new", type=int, default=48)
    parser.add_argument("--files", type=int, default=80, help="lines: files per split")
    parser.add_argument("--lines-per-file", type=int, default=2)
    parser.add_argument("--limit-files", type=int, default=0, help="quick check: first N files")
    args = parser.parse_args(argv)
    suites: list[str] = []
    for item in args.suites.split(","):
        for suite in GROUPS.get(item, (item,)):
            if suite not in SUITES:
                parser.error(f"unknown suite {suite!r}: one of {SUITES} or {list(GROUPS)}")
            suites += [suite] if suite not in suites else []
    result = evaluate(args, suites)
    if args.out:
        out = Path(args.out)
        merged = json.loads(out.read_text()) if out.exists() else {}
        name = args.name or Path(args.model).name
        merged[name] = {**merged.get(name, {}), **result}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
