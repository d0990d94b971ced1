"""Held-out evaluation of the default model: loss, bits per byte, compressors, completions.

Usage::

    python model/evaluate.py [--model codegen_lsp/default_model] [--out eval.json]

The held-out files are the ``heldout`` rows of ``model/manifest.tsv.gz`` (checked against
their sha256). Each file is scored as ``<|endoftext|>`` followed by its tokens, in windows of
the model's context that advance by ``--stride`` tokens, so every token after the first window
sees at least ``n_positions - stride`` tokens of context. Loss is nats per token; bits per
byte is the summed loss over the files' UTF-8 bytes. The same files are compressed with
``xz -9`` and ``gzip -9 -n``, one by one and concatenated, for comparison.

Completions: for the first suitable top-level function of each held-out file (at least two
statements in the body), the prompt is its header and docstring (or header alone); the model
(after ``<|endoftext|>``, i.e. at the start of a file, as ``codegen-lsp generate`` gives it)
continues greedily for up to ``--max-new`` tokens; the text is cut at the first blank line or
at the first line indented no deeper than the ``def`` (the end of the function), or, when the
token limit ends it first, after its last complete line. ``ast.parse`` of prompt + completion
says whether the result is valid Python. Nothing generated is executed.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parent.parent
for extra in (REPO, REPO / "model"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from corpus import EOS_ID, SHIP_DIR, read_manifest, read_texts  # noqa: E402

from codegen_lsp.codegen.checkpoint import load_model  # noqa: E402
from codegen_lsp.codegen.modeling import CodeGenForCausalLM  # noqa: E402
from codegen_lsp.codegen.tokenizer import CodeGenTokenizer  # noqa: E402
from codegen_lsp.commands.generate import SAMPLE_TEMPERATURE, parses, rank_key  # noqa: E402
from codegen_lsp.engine.api import GenerateRequest, SamplingParams  # noqa: E402
from codegen_lsp.engine.local import CodeGenEngine  # noqa: E402


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


def prompts(texts: dict[str, str], limit: int) -> list[tuple[str, str]]:
    """``(file, prompt)``: header (+ docstring) of the first suitable function per file."""
    out = []
    for rel, text in texts.items():
        try:
            tree = ast.parse(text)
        except SyntaxError:
            continue
        lines = text.splitlines(keepends=True)
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if len(node.body) < 2:
                continue
            first = node.body[0]
            has_doc = (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            )
            last_line = first.end_lineno if has_doc else first.lineno - 1
            assert last_line is not None
            out.append((rel, "".join(lines[node.lineno - 1 : last_line])))
            break
        if len(out) == limit:
            break
    return out


@torch.no_grad()
def greedy(engine: CodeGenEngine, ids: list[int], max_new: int) -> tuple[str, bool]:
    """Greedy continuation on the project's one decode loop; (text, hit the token limit)."""
    request = GenerateRequest("eval", ids, max_new_tokens=max_new, heal=False)
    cand = engine.generate(request, threading.Event()).candidates[0]
    return cand.text, cand.finish_reason == "length"


def cut(completion: str, hit_limit: bool) -> str:
    """End a completion at a blank line or a dedent to the ``def``'s level (column 0)."""
    text = completion.split("\n\n")[0] if "\n\n" in completion else completion
    lines = text.split("\n")
    kept = [lines[0]]
    ended = "\n\n" in completion
    for line in lines[1:]:
        if line.strip() and not line[0].isspace():
            ended = True
            break
        kept.append(line)
    text = "\n".join(kept)
    if hit_limit and not ended and "\n" in text:
        text = text[: text.rindex("\n") + 1]
    return text


def ranked(engine: CodeGenEngine, ids: list[int], prompt: str, max_new: int, n: int) -> str:
    """What ``codegen-lsp generate`` prints by default: the best of ``n`` ranked candidates."""
    sampling = SamplingParams(SAMPLE_TEMPERATURE, 0.95, seed=0)
    request = GenerateRequest(
        "eval", ids, max_new_tokens=max_new, n=n, sampling=sampling, greedy_first=True, heal=False
    )
    cands = engine.generate(request, threading.Event()).candidates
    texts = [cut(c.text, hit_limit=c.finish_reason == "length") for c in cands]
    best = max(range(n), key=lambda i: rank_key(prompt, texts[i], cands[i].mean_logprob))
    return texts[best]


def yes(flag: bool) -> str:
    """``yes`` / ``no`` for a table cell."""
    return "yes" if flag else "no"


def show(text: str) -> str:
    """One-line markdown-safe rendering of code: newlines as ``⏎``."""
    return "`" + text.replace("\n", "⏎").replace("|", "\\|").replace("`", "'") + "`"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(SHIP_DIR))
    parser.add_argument("--out", default="/work/train_state/eval.json", help="results (JSON)")
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-prompts", type=int, default=12)
    parser.add_argument("--max-new", type=int, default=48)
    parser.add_argument("--candidates", type=int, default=8, help="for the best-of-N column")
    parser.add_argument("--skip-loss", action="store_true", help="completions only")
    parser.add_argument("--limit-files", type=int, default=0, help="quick check on N files")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model, dtype=torch.float32)
    tokenizer = Tokenizer.from_file(str(Path(args.model) / "tokenizer.json"))
    files = [f for f in read_manifest() if f.split == "heldout"]
    if args.limit_files:
        files = files[: args.limit_files]
    texts = dict(zip([f.rel for f in files], read_texts(files, "heldout"), strict=True))
    raw = [t.encode("utf-8") for t in texts.values()]
    n_bytes = sum(len(b) for b in raw)
    result: dict[str, object] = {"files": len(texts), "bytes": n_bytes}

    if not args.skip_loss:
        t0 = time.time()
        encs = tokenizer.encode_batch(list(texts.values()), add_special_tokens=False)
        ids = [[EOS_ID, *e.ids] for e in encs]
        n_tokens = sum(len(s) - 1 for s in ids)
        nats = score(model, ids, args.stride, args.batch)
        result.update(
            tokens=n_tokens,
            loss=nats / n_tokens,
            bits_per_byte=nats / math.log(2) / n_bytes,
            stride=args.stride,
            seconds=round(time.time() - t0, 1),
        )
        for name, command in (("xz", ["xz", "-9", "-c"]), ("gzip", ["gzip", "-9", "-n", "-c"])):
            per_file, joined = compressed_bits(raw, command)
            result[f"{name}_bpb_per_file"] = per_file / n_bytes
            result[f"{name}_bpb_concatenated"] = joined / n_bytes
        print(json.dumps(result, indent=2), flush=True)

    engine = CodeGenEngine(model, CodeGenTokenizer.from_dir(args.model), prefix_reuse=False)
    rows = []
    for rel, prompt in prompts(texts, args.n_prompts):
        # the prompt stands at the start of a file, as `codegen-lsp generate` presents it
        ids = [EOS_ID, *tokenizer.encode(prompt).ids]
        text, hit_limit = greedy(engine, ids, args.max_new)
        completion = cut(text, hit_limit=hit_limit)
        ok = parses(prompt + completion)
        row = {"file": rel, "prompt": prompt, "completion": completion, "parses": ok}
        row["ranked"] = ranked(engine, ids, prompt, args.max_new, args.candidates)
        row["ranked_parses"] = parses(prompt + row["ranked"])
        rows.append(row)
    result["completions"] = rows
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print("| file | prompt (first line; +N more lines) | greedy | parses | best of N | parses |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        lines = row["prompt"].rstrip("\n").split("\n")
        head = show(lines[0]) + (f" +{len(lines) - 1}" if len(lines) > 1 else "")
        print(
            f"| {row['file']} | {head} | {show(row['completion'])} | {yes(row['parses'])} "
            f"| {show(row['ranked'])} | {yes(row['ranked_parses'])} |"
        )


if __name__ == "__main__":
    main()
