"""The ``codegen-lsp`` command: serve | complete | generate | bench | demo | export | pull.

Each subcommand lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``codegen-lsp serve`` starts without loading benchmark code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

from codegen_lsp import __version__

# Each subcommand: its module and what it does, in one line (shown by ``codegen-lsp --help``
# without importing the module; its ``HELP`` is the longer text of its own ``-h``).
COMMANDS = {
    "serve": (
        "codegen_lsp.commands.serve",
        "run the language server for an editor (stdio, or --tcp --port N)",
    ),
    "complete": (
        "codegen_lsp.commands.complete",
        "print the suggestion at FILE --line L --character C (0-based), no editor needed",
    ),
    "generate": ("codegen_lsp.commands.generate", "print PROMPT and the model's continuation"),
    "bench": ("codegen_lsp.commands.bench.cli", "measure speed and quality against baselines"),
    "demo": (
        "codegen_lsp.commands.demo",
        "start the server, ask it for one suggestion as an editor would, print it",
    ),
    "export": ("codegen_lsp.commands.export", "export a checkpoint as GPT-J for vLLM"),
    "cache": (
        "codegen_lsp.commands.cache",
        "list or clear the cached quantized weights (what makes a second start fast)",
    ),
    "pull": (
        "codegen_lsp.commands.pull",
        "fetch a hub checkpoint into the Hugging Face cache, with progress (resumable)",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="codegen-lsp",
        description="A language server running CodeGen models locally, in its own process.",
        epilog="Run 'codegen-lsp COMMAND -h' for a command's options; -v shows details "
        "(tracebacks) where a command fails.",
    )
    parser.add_argument("--version", action="version", version=f"codegen-lsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=help_text, add_help=False)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    # Idle OpenMP threads must sleep, not spin: the server idles between keystrokes and
    # shares the CPU with the editor (spinning made a decode step up to 10x slower under load).
    # Set before torch is imported by any subcommand.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # torch warns at import when numpy is missing; the package does not use numpy (it is not
    # a dependency), so on a fresh install the warning is noise before every command's output
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
    args_list = list(sys.argv[1:] if argv is None else argv)
    only = next((a for a in args_list if a in COMMANDS), None)
    parser = build_parser(only if only is not None else "__none__")
    args = parser.parse_args(args_list)
    if getattr(args, "_module", None) is None:
        if args.command is None:
            parser.print_help()
            return 2
        parser = build_parser(args.command)
        args = parser.parse_args(args_list)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
