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
from typing import Any

SHUTDOWN_S = 5.0  # how long the server gets to exit after shutdown before it is stopped

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
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a suggestion")
    p.add_argument("-v", "--verbose", action="store_true", help="print the server's messages")


async def _demo(args: argparse.Namespace) -> int:
    from lsprotocol import types
    from pygls.lsp.client import LanguageClient

    if args.file:
        path = Path(args.file).resolve()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            print(f"codegen-lsp: error: {args.file}: {exc}", file=sys.stderr)
            return 2
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
    failed: list[str] = []  # the server's error messages: stop asking at the first
    client = LanguageClient("codegen-lsp-demo", "0.1")

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _show(params: types.ShowMessageParams) -> None:
        if params.type == types.MessageType.Error:
            failed.append(params.message)
        elif args.verbose:
            print(f"[server] {params.message}", file=sys.stderr)

    @client.feature(types.WINDOW_LOG_MESSAGE)
    def _log(params: types.LogMessageParams) -> None:
        if args.verbose:
            print(f"[server log] {params.message}", file=sys.stderr)

    @client.feature("codegen/status")
    def _status(params: Any) -> None:  # the server's status-bar notifications
        state = getattr(params, "state", None)
        if state == "error" and not failed:
            failed.append(str(getattr(params, "message", "the server reported an error")))

    serve = [sys.executable, "-m", "codegen_lsp", "serve"] + (["-v"] if args.verbose else [])
    await client.start_io(*serve)
    try:
        await asyncio.wait_for(_initialize(client, path, settings), args.timeout)
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
        # The first answers may come while the model loads: ask again until a suggestion,
        # an error from the server, or the deadline.
        while not failed and time.perf_counter() < deadline:
            left = max(0.1, deadline - time.perf_counter())
            result = await asyncio.wait_for(
                client.text_document_inline_completion_async(params), left
            )
            items = list(
                result.items if isinstance(result, types.InlineCompletionList) else result or []
            )
            if items:
                break
            await asyncio.sleep(0.5)
        elapsed = time.perf_counter() - start
        if failed:
            print(f"codegen-lsp: error: {failed[0]}", file=sys.stderr)
            return 1
        if not items:
            print(f"codegen-lsp: error: no suggestion within {args.timeout:g} s", file=sys.stderr)
            return 1
        print(text, end="")
        for i, item in enumerate(items):
            insert = item.insert_text
            insert = insert if isinstance(insert, str) else insert.value
            header = f"--- suggestion {i + 1}" if len(items) > 1 else "--- suggestion"
            print(f"{header} (after {elapsed:.2f}s) ---")
            print(insert)
        return 0
    except asyncio.TimeoutError:
        print(f"codegen-lsp: error: no answer within {args.timeout:g} s", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # pygls fails pending requests this way when the server dies
        print(f"codegen-lsp: error: the server stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        await _close(client)


async def _initialize(client: Any, path: Path, settings: dict[str, object]) -> None:
    from lsprotocol import types

    await client.initialize_async(
        types.InitializeParams(
            capabilities=types.ClientCapabilities(),
            initialization_options={"codegen": settings},
            root_uri=path.parent.as_uri(),
        )
    )
    client.initialized(types.InitializedParams())


async def _close(client: Any) -> None:
    """Always end the server: shutdown and exit when it answers, else stop it by force."""
    try:
        await asyncio.wait_for(client.shutdown_async(None), SHUTDOWN_S)
        client.exit(None)
    except Exception:  # noqa: BLE001 - a server that cannot shut down is stopped below
        pass
    process = getattr(client, "_server", None)
    if process is not None:
        try:
            await asyncio.wait_for(process.wait(), SHUTDOWN_S)
        except asyncio.TimeoutError:
            process.kill()
    try:
        await asyncio.wait_for(client.stop(), SHUTDOWN_S)
    except Exception:  # noqa: BLE001 - the process is gone either way
        pass


def run(args: argparse.Namespace) -> int:
    """Run the demo round trip."""
    if args.model:
        from codegen_lsp.codegen.locate import CheckpointError, check_local

        try:
            check_local(args.model)
        except CheckpointError as exc:
            print(f"codegen-lsp: error: cannot load model: {exc}", file=sys.stderr)
            return 2
    return asyncio.run(_demo(args))
