"""``codegen-lsp bench soak``: a long typing session over real LSP; memory must stay flat.

Starts ``codegen-lsp serve`` (stdio) under pygls' ``LanguageClient`` and plays N keystrokes
over several documents, each one a standard-library module being retyped in the middle of
its file: typing a character, deleting a few, pasting lines, switching files, closing and
reopening one. Every keystroke sends ``didChange`` and an ``inlineCompletion`` request, at a
fixed typing interval and without waiting for the answer (an editor does the same; newer
requests supersede older ones). Meanwhile it samples the server's RSS (``VmRSS`` of
``/proc/PID/status``) and asks ``codegen/status`` for the KV cache bytes and budget.

Writes ``soak.json`` and ``soak_rss.png`` (RSS, KV cache and latency per keystroke), keeps
the server's log as ``soak-server.log.tmp`` beside them, and prints a summary. Passes (exit
code 0) when every request was answered, RSS after warm-up grew less than ``--max-growth``
percent, and the KV cache never held more than its budget.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsprotocol import types

from codegen_lsp.commands.bench.soak_report import Record, plot, summarize, write_report

HELP = "soak test: a long simulated typing session over LSP (memory, latency, answers)"
MODULES = ("textwrap", "shlex", "fnmatch", "string", "glob", "bisect", "colorsys", "calendar")
ACTIONS = (("type", 80), ("delete", 8), ("paste", 5), ("switch", 5), ("reopen", 2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench soak``."""
    p.add_argument("--keystrokes", type=int, default=10_000, help="keystrokes to play")
    p.add_argument("--documents", type=int, default=4, help="documents typed in turn")
    p.add_argument("--model", default="", help="checkpoint dir or hub id (default: shipped)")
    p.add_argument("--interval-ms", type=float, default=20.0, help="time between keystrokes")
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of the run that warms up")
    p.add_argument("--max-growth", type=float, default=5.0, help="RSS growth allowed, percent")
    p.add_argument("--sample-ms", type=float, default=200.0, help="RSS sampling period")
    p.add_argument("--status-every", type=int, default=50, help="codegen/status every N keys")
    p.add_argument("--settings", default="{}", help="extra codegen settings as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results", help="folder for soak.json, soak_rss.png")


# --- the session ------------------------------------------------------------------------------
@dataclass
class Doc:
    """A document being retyped: ``typed`` (before the cursor) + ``tail`` (after it)."""

    uri: str
    source: str  # the module; typed again from the top once it is all typed
    target: str  # what the user is typing (``typed`` is always a prefix of it)
    typed: str
    tail: str
    version: int = 1
    is_open: bool = False

    @property
    def text(self) -> str:
        return self.typed + self.tail

    def cursor(self) -> types.Position:
        """The cursor (end of ``typed``) in UTF-16 units."""
        line = self.typed.count("\n")
        last = self.typed[self.typed.rfind("\n") + 1 :]
        return types.Position(line, len(last.encode("utf-16-le")) // 2)


def _module_source(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"no source for module {name}")
    return Path(spec.origin).read_text(encoding="utf-8")


def make_documents(count: int, rng: random.Random) -> list[Doc]:
    """Documents: a module's first lines typed, its last quarter as the text after."""
    docs = []
    for i in range(count):
        source = _module_source(MODULES[i % len(MODULES)])
        lines = source.splitlines(keepends=True)
        start = min(40, len(lines) // 4)
        typed = "".join(lines[:start])
        tail = "\n\n" + "".join(lines[len(lines) * 3 // 4 :])
        uri = f"file:///soak/doc{i}_{MODULES[i % len(MODULES)]}.py"
        docs.append(Doc(uri, source, source, typed, tail))
    rng.shuffle(docs)
    return docs


class Typist:
    """Plays keystrokes on the documents; each step returns the LSP messages to send."""

    def __init__(self, docs: list[Doc], rng: random.Random) -> None:
        self.docs = docs
        self.rng = rng
        self.active = docs[0]
        self.counts: dict[str, int] = {name: 0 for name, _ in ACTIONS}

    def _edit(self, doc: Doc, start: types.Position, end: types.Position, text: str) -> Any:
        doc.version += 1
        change = types.TextDocumentContentChangePartial(range=types.Range(start, end), text=text)
        return types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version), [change]
        )

    def _insert(self, doc: Doc, text: str) -> Any:
        at = doc.cursor()
        doc.typed += text
        return self._edit(doc, at, at, text)

    def step(self) -> list[tuple[str, Any]]:
        """One keystroke: [(kind, params)] with kind open | change | close."""
        action = self.rng.choices([a for a, _ in ACTIONS], [w for _, w in ACTIONS])[0]
        doc = self.active
        out: list[tuple[str, Any]] = []
        if action == "switch" and len(self.docs) > 1:
            self.active = doc = self.rng.choice([d for d in self.docs if d is not doc])
        if action == "reopen":
            out.append(
                ("close", types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(doc.uri)))
            )
            doc.is_open = False
        if not doc.is_open:
            doc.is_open, doc.version = True, 1
            item = types.TextDocumentItem(
                uri=doc.uri, language_id="python", version=1, text=doc.text
            )
            out.append(("open", types.DidOpenTextDocumentParams(item)))
        pos = len(doc.typed)
        if action == "delete" and doc.typed and doc.typed[-1] != "\n":
            n = min(self.rng.randint(1, 3), len(doc.typed) - doc.typed.rfind("\n") - 1)
            end = doc.cursor()
            doc.typed = doc.typed[:-n]
            out.append(("change", self._edit(doc, doc.cursor(), end, "")))
        elif action == "paste":
            stop = doc.target.find("\n", pos + 1)
            for _ in range(self.rng.randint(0, 6)):
                stop = doc.target.find("\n", stop + 1) if stop >= 0 else -1
            chunk = doc.target[pos : stop + 1 if stop >= 0 else len(doc.target)]
            out.append(("change", self._insert(doc, chunk or "\n")))
        else:
            out.append(("change", self._insert(doc, doc.target[pos])))
        if len(doc.typed) >= len(doc.target):  # typed the whole module: again from the top
            doc.target = doc.typed + doc.source
        self.counts[action] += 1
        return out


# --- measuring --------------------------------------------------------------------------------
def rss_bytes(pid: int) -> int | None:
    """VmRSS of process ``pid``, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


async def _sample_rss(pid: int, record: Record, period_s: float, stop: asyncio.Event) -> None:
    start = time.monotonic()
    while not stop.is_set():
        rss = rss_bytes(pid)
        if rss is not None:
            record.rss.append((time.monotonic() - start, record.keystroke, rss))
        try:
            await asyncio.wait_for(stop.wait(), period_s)
        except asyncio.TimeoutError:
            pass


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    extra = json.loads(args.settings)
    if not isinstance(extra, dict):
        raise SystemExit("--settings must be a JSON object")
    return {"model": args.model, **extra}


async def play(args: argparse.Namespace, log_file: Path) -> tuple[Record, dict[str, Any], int]:
    """Run the session; the record, the final codegen/status and the server's exit code."""
    from pygls.lsp.client import LanguageClient

    client = LanguageClient("codegen-soak", "1.0")
    record = Record()

    @client.feature("codegen/status")
    def _on_status(params: Any) -> None:  # notifications: state changes
        pass

    @client.feature(types.WINDOW_SHOW_MESSAGE)
    def _on_message(params: types.ShowMessageParams) -> None:
        record.messages.append(params.message)

    serve = ["-m", "codegen_lsp", "serve", "--log-file", str(log_file)]
    await client.start_io(sys.executable, *serve)
    pid = client._server.pid  # type: ignore[union-attr]  # the one way pygls exposes it
    caps = types.ClientCapabilities(
        text_document=types.TextDocumentClientCapabilities(
            inline_completion=types.InlineCompletionClientCapabilities()
        )
    )
    init = types.InitializeParams(
        capabilities=caps,
        process_id=os.getpid(),
        initialization_options={"codegen": _settings(args)},
    )
    await client.initialize_async(init)
    client.initialized(types.InitializedParams())
    await _wait_ready(client)
    stop = asyncio.Event()
    sampler = asyncio.ensure_future(_sample_rss(pid, record, args.sample_ms / 1000, stop))
    rng = random.Random(args.seed)
    typist = Typist(make_documents(args.documents, rng), rng)
    pending: list[asyncio.Future[Any]] = []
    notify: dict[str, Callable[[Any], None]] = {
        "open": client.text_document_did_open,
        "close": client.text_document_did_close,
        "change": client.text_document_did_change,
    }
    start = time.monotonic()
    for key in range(args.keystrokes):
        record.keystroke = key
        for kind, params in typist.step():
            notify[kind](params)
        pending.append(_request(client, typist.active, key, record))
        if key % args.status_every == 0:
            await _sample_kv(client, record, start)
        delay = start + (key + 1) * args.interval_ms / 1000 - time.monotonic()
        await asyncio.sleep(max(0.0, delay))
    await asyncio.wait_for(asyncio.gather(*pending), 120)
    await _sample_kv(client, record, start)
    status = _as_dict(await client.protocol.send_request_async("codegen/status", None))
    stop.set()
    await sampler
    await client.shutdown_async(None)
    client.exit(None)
    server = client._server
    if server is None:
        raise RuntimeError("the server process was never started")
    code = await asyncio.wait_for(server.wait(), 30)
    await client.stop()
    status["actions"] = typist.counts
    return record, status, code


def _as_dict(value: Any) -> Any:
    if hasattr(value, "_asdict"):
        return {k: _as_dict(v) for k, v in value._asdict().items()}
    return value


async def _wait_ready(client: Any, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _as_dict(await client.protocol.send_request_async("codegen/status", None))
        if status["state"] == "ready":
            return
        if status["state"] == "error":
            raise SystemExit(f"the model did not load: {status['message']}")
        await asyncio.sleep(0.2)
    raise SystemExit("the model did not load in time")


async def _sample_kv(client: Any, record: Record, start: float) -> None:
    status = _as_dict(await client.protocol.send_request_async("codegen/status", None))
    t = time.monotonic() - start
    record.kv.append((t, record.keystroke, status["cacheBytes"], status["cacheBudgetBytes"]))


def _request(client: Any, doc: Doc, key: int, record: Record) -> asyncio.Future[Any]:
    params = types.InlineCompletionParams(
        context=types.InlineCompletionContext(types.InlineCompletionTriggerKind.Automatic),
        text_document=types.TextDocumentIdentifier(doc.uri),
        position=doc.cursor(),
    )
    sent = time.perf_counter()
    record.sent += 1

    async def wait() -> None:
        try:
            result = await client.text_document_inline_completion_async(params)
        except Exception as exc:  # noqa: BLE001 - counted as unanswered
            record.failed.append(f"keystroke {key}: {exc!r}")
            return
        items = bool(getattr(result, "items", None))
        record.latency.append((key, (time.perf_counter() - sent) * 1000, items))

    return asyncio.ensure_future(wait())


# --- report -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """Play the session, write the report and the plot, print a summary."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.monotonic()
    record, status, code = asyncio.run(play(args, out / "soak-server.log.tmp"))
    report = summarize(args, record, status)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["server_exit_code"] = code
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    write_report(report, out / "soak.json")
    plot(report, out / "soak_rss.png")
    r, lat, kv = report["rss_mib"], report["latency_ms"], report["kv_cache"]
    print(
        f"keystrokes {args.keystrokes}: answered {report['requests']['answered']}/"
        f"{report['requests']['sent']}, latency p50 {lat['p50']:.0f} ms p95 {lat['p95']:.0f} ms; "
        f"RSS {r['start']:.0f} -> {r['after_warmup']:.0f} (after warm-up) -> {r['end']:.0f} MiB "
        f"({r['growth_pct']:+.2f}%); KV max {kv['max_bytes'] / 2**20:.1f} of "
        f"{kv['budget_bytes'] / 2**20:.0f} MiB; {'PASS' if report['passed'] else 'FAIL'} "
        f"({report['duration_s']:.0f} s)"
    )
    return 0 if report["passed"] and code == 0 else 1
