"""``codegen-lsp pull HUB_ID``: fetch a checkpoint into the Hugging Face cache ahead of time.

The files are the ones a load reads (:func:`codegen_lsp.codegen.download.wanted_files`),
fetched by :func:`~codegen_lsp.codegen.download.download` with a progress bar on standard
error (bytes, percent, rate; a plain line per tenth when standard error is not a terminal).
An interrupted pull keeps its partial file and the next one resumes it. At the end the
snapshot's folder and how to use it are printed on standard output. Then the model is loaded
once as the server loads it, which writes its quantized weights to the weight cache
(``--no-prepare`` skips that). Torch is imported only for that step: the argument checks and
the download need none.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from typing import TextIO

from codegen_lsp.codegen.download import Cancelled, DownloadError, DownloadState, download

HELP = (
    "Fetch a hub checkpoint (e.g. Salesforce/codegen-350M-mono) into the Hugging Face cache, "
    "with progress; an interrupted pull resumes where it stopped. The hub, cache and token are "
    "huggingface_hub's (HF_ENDPOINT, HF_HOME / HF_HUB_CACHE, HF_TOKEN)."
)
# org/name as the hub spells them
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
LINE_EVERY_S = 0.1  # terminal redraws at most this often


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``pull``."""
    p.add_argument("model", help="hub id, e.g. Salesforce/codegen-350M-mono")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the result")
    p.add_argument(
        "--no-prepare",
        action="store_true",
        help="only download (by default the model is then loaded once, which writes its "
        "quantized weights to the weight cache: the editor's first start is then fast)",
    )


class Bar:
    """Progress on a stream: one line redrawn on a terminal, else a line per tenth."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream, self.tty = stream, tty
        self.drawn_at = 0.0
        self.tenth = -1
        self.file = ""

    def __call__(self, state: DownloadState) -> None:
        if state.note:
            self._line(f"{state.file or state.repo_id}: {state.note}")
        if self.tty:
            now = time.monotonic()
            if now - self.drawn_at >= LINE_EVERY_S or state.note == "done":
                self.drawn_at = now
                self._draw(state)
            return
        if state.file != self.file and state.file and state.note != "cached":
            self.file = state.file
            self.stream.write(f"fetching {state.file}\n")
        tenth = state.percent // 10
        if tenth != self.tenth:
            self.tenth = tenth
            self.stream.write(f"{state.percent:3d}% {state.describe()}\n")
        self.stream.flush()

    def _draw(self, state: DownloadState) -> None:
        width = shutil.get_terminal_size((80, 20)).columns
        text = f" {state.percent:3d}% {state.describe()}  {state.file}"
        room = max(10, min(40, width - len(text) - 3))
        filled = room * state.percent // 100
        line = f"[{'#' * filled}{'.' * (room - filled)}]{text}"
        self.stream.write("\r" + line[: width - 1] + "\x1b[K")
        if state.note == "done":
            self.stream.write("\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
        if text.endswith(": done"):
            return
        self.stream.write(text + "\n")


def run(args: argparse.Namespace) -> int:
    """Fetch; one clear line and exit code 1 when it cannot."""
    name = args.model
    if os.path.isdir(os.path.expanduser(name)):
        print(f"codegen-lsp pull: {name} is a local folder: use it as it is", file=sys.stderr)
        return 1
    if not _HUB_ID.fullmatch(name):
        print(
            f"codegen-lsp pull: {name!r} is not a hub id (ORG/NAME, e.g. "
            "Salesforce/codegen-350M-mono)",
            file=sys.stderr,
        )
        return 1
    bar = None if args.quiet else Bar(sys.stderr, sys.stderr.isatty())
    try:
        snapshot = download(name, progress=bar)
    except KeyboardInterrupt:
        print("\ncodegen-lsp pull: stopped; run it again to resume", file=sys.stderr)
        return 130
    except (Cancelled, DownloadError) as exc:
        print(f"codegen-lsp pull: {exc}", file=sys.stderr)
        return 1
    print(f"{name} is in the Hugging Face cache: {snapshot}")
    if not args.no_prepare:
        prepared = prepare(name, quiet=args.quiet)
        if prepared:
            print(f"codegen-lsp pull: {prepared}", file=sys.stderr)
    print(f'use it: codegen-lsp generate --model {name} "def hello():"')
    print(f'  or in the editor: "codegen.model": "{name}" (no allowDownload needed now)')
    return 0


def prepare(name: str, quiet: bool = False) -> str:
    """Load ``name`` once as the server would by default (int8 weights on a CPU with bf16),
    so its quantized weights land in the weight cache; what went wrong, or "". Imports
    torch (the download did not need it)."""
    if not quiet:
        print("preparing the quantized weights (one load of the model)...", file=sys.stderr)
    from codegen_lsp.codegen.locate import CheckpointError
    from codegen_lsp.engine.api import EngineSpec
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.machine import EngineConfigError
    from codegen_lsp.engine.weight_cache import wait_for_writes

    try:
        engine = load_engine(EngineSpec(model=name))
    except (CheckpointError, EngineConfigError) as exc:
        return f"downloaded, but it does not load: {exc}"
    engine.close()
    wait_for_writes()
    return ""
