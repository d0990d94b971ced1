"""``codegen-lsp generate PROMPT``: print the prompt and the model's continuation."""

from __future__ import annotations

import argparse
import re
import sys
import time

import torch

HELP = "print PROMPT followed by the model's continuation (no editor, no server)"

DEFAULT_TRUNCATE = [r"^#", re.escape("<|endoftext|>"), "^'''", '^"""', "\n\n\n"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``generate``."""
    p.add_argument("prompt", help="text to continue; '-' reads it from standard input")
    p.add_argument("--model", help="checkpoint directory or hub id (default: the shipped model)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 means greedy (default)")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--allow-download", action="store_true", help="fetch a hub id if not cached")
    p.add_argument(
        "--no-truncate",
        action="store_true",
        help="do not cut at CodeGen's usual patterns (comments, docstrings, 3 blank lines)",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, generate, print; clear one-line errors for bad input."""
    from codegen_lsp.codegen.checkpoint import CheckpointError, load_model, resolve
    from codegen_lsp.codegen.generation import SamplingParams, generate
    from codegen_lsp.codegen.tokenizer import CodeGenTokenizer, TokenizerError

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        if args.model:
            directory = resolve(args.model, allow_download=args.allow_download)
        else:
            from codegen_lsp.codegen.default import default_model_dir

            directory = default_model_dir()
        dtype = getattr(torch, args.dtype)
        model = load_model(directory, dtype=dtype, device=args.device)
        tokenizer = CodeGenTokenizer.from_dir(directory)
        params = SamplingParams(args.temperature, args.top_p, args.top_k)
    except (CheckpointError, TokenizerError, ValueError) as exc:
        print(f"codegen-lsp: error: {exc}", file=sys.stderr)
        return 2
    ids = tokenizer.encode(prompt) or [tokenizer.bos_id]
    start = time.perf_counter()
    new = generate(
        model,
        ids,
        args.max_new_tokens,
        params,
        vocab_limit=tokenizer.vocab_size,
        eos_id=tokenizer.eos_id,
        seed=args.seed,
    )
    elapsed = time.perf_counter() - start
    patterns = None if args.no_truncate else DEFAULT_TRUNCATE
    text = tokenizer.decode(new, truncate_before_pattern=patterns)
    sys.stdout.write(prompt + text + "\n")
    print(f"[{len(new)} tokens in {elapsed:.2f}s from {directory}]", file=sys.stderr)
    return 0
