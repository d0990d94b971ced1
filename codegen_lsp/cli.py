"""The ``codegen-lsp`` command: serve | complete | generate | bench | demo | export.

Each subcommand lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their subcommand runs, so
``codegen-lsp serve`` starts without loading benchmark code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from codegen_lsp import __version__

COMMANDS = {
    "serve": "codegen_lsp.commands.serve",
    "complete": "codegen_lsp.commands.complete",
    "generate": "codegen_lsp.commands.generate",
    "bench": "codegen_lsp.commands.bench.cli",
    "demo": "codegen_lsp.commands.demo",
    "export": "codegen_lsp.commands.export",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with ``only``, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(
        prog="codegen-lsp",
        description="A language server running CodeGen models locally, in its own process.",
    )
    parser.add_argument("--version", action="version", version=f"codegen-lsp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=f"(run 'codegen-lsp {name} -h')", add_help=False)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    # Idle OpenMP threads must sleep, not spin: the server idles between keystrokes and
    # shares the CPU with the editor (spinning made a decode step up to 10x slower under load).
    # Set before torch is imported by any subcommand.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
