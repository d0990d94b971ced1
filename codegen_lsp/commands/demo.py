"""``codegen-lsp demo``: one real completion through the language server, as an editor asks.

Starts ``codegen-lsp serve`` as a subprocess, speaks LSP to it over stdio (initialize,
didOpen, inlineCompletion, shutdown) and prints the suggestion. This is the README's
"does it work on my machine" command: no editor needed, nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

HELP = "start the server, ask it for one inline completion like an editor would, print it"

SAMPLE = '''import math


def is_prime(n: int) -> bool:
    """Return True if n is a prime number."""
'''


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``demo``."""
    p.add_argument("file", nargs="?", help="file to complete at its end (default: a sample)")
    p.add_argument("--model", help="checkpoint directory or hub id (default: the shipped model)")
    p.add_argument("--candidates", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server")


async def _demo(args: argparse.Namespace) -> int:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    if args.file:
        path = Path(args.file).resolve()
        text = path.read_text(encoding="utf-8")
    else:
        path = Path.cwd() / "demo_sample.py"
        text = SAMPLE
    lines = text.split("\n")
    position = types.Position(line=len(lines) - 1, character=len(lines[-1]))
    settings: dict[str, object] = {
        "candidates": args.candidates,
        "maxNewTokens": args.max_new_tokens,
    }
    if args.model:
        settings["model"] = args.model
    messages: list[str] = []
    client = LanguageClient("codegen-lsp-demo", "0.1")

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        messages.append(params.message)
        print(f"[server] {params.message}", file=sys.stderr)

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:
        messages.append(params.message)

    @client.feature("codegen/status")
    def _status(params: object) -> None:  # the server's status-bar notifications
        return None

    await client.start_io(sys.executable, "-m", "codegen_lsp", "serve")
    try:
        await client.initialize_async(
            types.InitializeParams(
                capabilities=types.ClientCapabilities(),
                initialization_options={"codegen": settings},
                root_uri=path.parent.as_uri(),
            )
        )
        client.initialized(types.InitializedParams())
        uri = path.as_uri()
        client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=text
                )
            )
        )
        params = types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position,
            context=types.InlineCompletionContext(
                trigger_kind=types.InlineCompletionTriggerKind.Invoked
            ),
        )
        start = time.perf_counter()
        deadline = start + args.timeout
        items: list[types.InlineCompletionItem] = []
        while time.perf_counter() < deadline:  # the first answer may come while the model loads
            result = await asyncio.wait_for(
                client.text_document_inline_completion_async(params), args.timeout
            )
            items = list(
                result.items if isinstance(result, types.InlineCompletionList) else result or []
            )
            if items:
                break
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - start
        print(text, end="")
        for i, item in enumerate(items):
            insert = item.insert_text
            insert = insert if isinstance(insert, str) else insert.value
            header = f"--- suggestion {i + 1}" if len(items) > 1 else "--- suggestion"
            print(f"{header} (after {elapsed:.2f}s) ---")
            print(insert)
        if not items:
            print("--- no suggestion ---", file=sys.stderr)
            return 1
        await client.shutdown_async(None)
        client.exit(None)
        return 0
    finally:
        await client.stop()


def run(args: argparse.Namespace) -> int:
    """Run the demo round trip."""
    return asyncio.run(_demo(args))
