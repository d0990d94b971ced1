"""``codegen-lsp generate PROMPT``: print the prompt and the model's continuation.

By default several continuations are decoded together (the greedy one and seeded samples),
each is cut where it should end (CodeGen's usual truncation patterns, and the end of the
block that the prompt opens), and the best is printed: one that parses as Python and does
not repeat itself, of the highest mean log-probability. This is the ranking Codex-style
tools use to pick one of many samples; ``--candidates 1`` gives the plain greedy (or, with
``--temperature``, sampled) continuation instead, and ``--all`` prints every candidate.
The prompt is presented as the start of a file the way the checkpoint was trained:
``<|endoftext|>`` first when its ``generation_config.json`` says ``file_start_bos`` (the
shipped model), the text's ids alone otherwise (published CodeGen checkpoints, exactly what
transformers' ``model.generate(**tokenizer(text))`` does); ``--file-start`` overrides.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import threading
import time

from codegen_lsp.completion.stopping import end_of_block as block_end
from codegen_lsp.completion.stopping import indent_width

HELP = "print PROMPT followed by the model's continuation (no editor, no server)"

DEFAULT_TRUNCATE = [r"^#", re.escape("<|endoftext|>"), "^'''", '^"""', "\n\n\n"]
SAMPLE_TEMPERATURE = 0.8  # for the sampled candidates when --temperature is not given


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``generate``."""
    p.add_argument("prompt", help="text to continue; '-' reads it from standard input")
    p.add_argument("--model", help="checkpoint directory or hub id (default: the shipped model)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument(
        "--candidates",
        type=int,
        default=8,
        help="continuations to decode and rank (default 8; 1: no ranking)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help=f"0 means greedy; default: greedy for one candidate, {SAMPLE_TEMPERATURE} for the "
        "samples beside the greedy one",
    )
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (default 0 when ranking)")
    p.add_argument("--all", action="store_true", help="print every candidate, best first")
    p.add_argument("--dtype", default="auto", help="auto (as the server), float32, bfloat16")
    p.add_argument("--quantize", default="auto", help="auto (as the server), none, int8, int4")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--allow-download", action="store_true", help="fetch a hub id if not cached")
    p.add_argument(
        "--file-start",
        choices=("auto", "on", "off"),
        default="auto",
        help="begin the prompt with <|endoftext|> (auto: as the checkpoint was trained)",
    )
    p.add_argument(
        "--no-truncate",
        action="store_true",
        help="do not cut at CodeGen's usual patterns (comments, docstrings, 3 blank lines) "
        "or at the end of the prompt's block",
    )


def end_of_block(prompt: str, text: str) -> str:
    """Cut ``text`` at the first line indented no deeper than the block the prompt opens.

    Only when the prompt's last line opens a block (ends with ``:``); the continuation of a
    ``def`` header ends where the function does.
    """
    last = prompt.rstrip("\n").rsplit("\n", 1)[-1]
    if not last.rstrip().endswith(":"):
        return text
    cut = block_end(text, indent_width(last) + 1)
    return text if cut is None else text[:cut].rstrip() + "\n"


def parses(source: str) -> bool:
    """Whether ``source`` is valid Python (parsed only, never run)."""
    try:
        ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    return True


def whole_lines(text: str) -> str:
    """``text`` without its last line when that line is unfinished (the token limit hit)."""
    return text[: text.rindex("\n") + 1] if "\n" in text else ""


def repetitive(text: str) -> bool:
    """A line repeated, or a few words looping (``a bunch of a bunch of ...``)."""
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    words = re.findall(r"\w+", text)
    return len(set(lines)) < len(lines) or (len(words) >= 12 and len(set(words)) < len(words) / 3)


def rank_key(prompt: str, text: str, mean_logprob: float) -> tuple[bool, bool, bool, float]:
    """Sort key, best last: has a body, parses as Python, does not loop, mean log-prob."""
    body = bool(text.strip())
    return (body, parses(prompt + text), not repetitive(text), mean_logprob)


def run(args: argparse.Namespace) -> int:
    """Load the model, generate, print; clear one-line errors for bad input."""
    from codegen_lsp.codegen.checkpoint import CheckpointError
    from codegen_lsp.codegen.tokenizer import TokenizerError, truncate_before_pattern
    from codegen_lsp.engine.api import EngineSpec, GenerateRequest, SamplingParams
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.machine import EngineConfigError
    from codegen_lsp.engine.sampling import fit_prompt

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    ranking = args.candidates > 1
    try:
        if args.candidates < 1:
            raise ValueError(f"--candidates must be >= 1, got {args.candidates}")
        temperature = args.temperature
        if temperature is None:
            temperature = SAMPLE_TEMPERATURE if ranking else 0.0
        seed = args.seed if args.seed is not None or not ranking else 0
        sampling = SamplingParams(temperature, args.top_p, args.top_k, seed)
        spec = EngineSpec(
            model=args.model,
            device=args.device,
            dtype=args.dtype,
            quantize=args.quantize,
            allow_download=args.allow_download,
            prefix_reuse=False,
            file_start_bos={"auto": None, "on": True, "off": False}[args.file_start],
        )
        engine = load_engine(spec)
    except (CheckpointError, TokenizerError, EngineConfigError, ValueError) as exc:
        print(f"codegen-lsp: error: {exc}", file=sys.stderr)
        return 2
    # The prompt is the start of a file: a checkpoint trained with <|endoftext|> between files
    # is told so (without it a bare "def f():" reads as a window cut from mid-file).
    ids = ([] if engine.bos_id is None else [engine.bos_id]) + engine.encode(prompt)
    if not ids:
        print("codegen-lsp: error: empty prompt", file=sys.stderr)
        return 2
    request = GenerateRequest(
        key="generate",
        prompt=ids,
        max_new_tokens=args.max_new_tokens,
        n=args.candidates,
        sampling=sampling,
        greedy_first=ranking,
        heal=False,
    )
    kept, budget = fit_prompt(request, engine.n_ctx, ids[0])
    if budget < args.max_new_tokens:  # said, not silently cut (as the engine does)
        cut = f", from its last {len(kept)} tokens" if len(kept) < len(ids) else ""
        print(
            f"codegen-lsp: note: --max-new-tokens={args.max_new_tokens} does not fit the "
            f"model's context of {engine.n_ctx} tokens with this prompt ({len(ids)} tokens): "
            f"generating at most {budget}{cut}",
            file=sys.stderr,
        )
    start = time.perf_counter()
    candidates = engine.generate(request, threading.Event()).candidates
    elapsed = time.perf_counter() - start
    texts = []
    for cand in candidates:
        full = text = cand.text
        if not args.no_truncate:
            text = end_of_block(prompt, truncate_before_pattern(full, DEFAULT_TRUNCATE))
            if ranking and cand.finish_reason == "length" and text == full:  # cut mid-line
                text = whole_lines(text)
        texts.append(text)
    order = sorted(
        range(len(candidates)),
        key=lambda i: rank_key(prompt, texts[i], candidates[i].mean_logprob),
        reverse=True,
    )
    shown = order if args.all else order[:1]
    for n, i in enumerate(shown):
        if args.all:
            sys.stdout.write(
                f"--- candidate {n + 1} (mean log-prob {candidates[i].mean_logprob:.2f})\n"
            )
        sys.stdout.write(prompt + texts[i].rstrip("\n") + "\n")
    tokens = max(len(c.token_ids) for c in candidates)
    what = f"best of {len(candidates)} candidates, " if ranking else ""
    print(f"[{what}{tokens} tokens in {elapsed:.2f}s; {engine.description}]", file=sys.stderr)
    return 0
