"""``codegen-lsp export``: write a CodeGen checkpoint in a layout another engine serves.

``--format gptj`` writes GPT-J (``GPTJForCausalLM``), which vLLM, SGLang and TensorRT-LLM run
natively; the source is any checkpoint the project loads (a directory, sharded or ``.bin``
weights, or a hub id in the local cache). See docs/remote.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen_lsp.codegen.checkpoint import CheckpointError, resolve
from codegen_lsp.codegen.export import export_gptj

HELP = "Export a CodeGen checkpoint as GPT-J for vLLM (see docs/remote.md)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``codegen-lsp export``."""
    parser.add_argument("source", help="checkpoint directory or hub id (in the local cache)")
    parser.add_argument("target", help="new directory for the exported checkpoint")
    parser.add_argument("--format", choices=("gptj",), default="gptj", help="output layout")
    parser.add_argument(
        "--dtype",
        choices=("keep", "float32", "bfloat16", "float16"),
        default="keep",
        help="dtype of the written weights (keep: as in the source)",
    )
    parser.add_argument(
        "--shard-mb", type=int, default=4096, help="most MiB per safetensors file (default 4096)"
    )
    parser.add_argument(
        "--allow-download", action="store_true", help="fetch a hub id that is not cached"
    )
    parser.add_argument(
        "--qkv-shards",
        type=int,
        default=None,
        help="shards of the fused qkv_proj (default: the checkpoint's own count, else 4)",
    )


def run(args: argparse.Namespace) -> int:
    """Export; a clear message and exit code 1 on failure."""
    try:
        source = resolve(args.source, allow_download=args.allow_download)
        summary = export_gptj(
            source, Path(args.target), args.dtype, args.shard_mb, qkv_shards=args.qkv_shards
        )
    except CheckpointError as exc:
        print(f"codegen-lsp export: {exc}", file=sys.stderr)
        return 1
    print(
        f"exported {source} -> {summary['target']} as GPT-J ({summary['dtype']}, "
        f"{summary['shards']} file(s)); serve it with: python -m "
        f"vllm.entrypoints.openai.api_server --model {summary['target']}"
    )
    return 0
