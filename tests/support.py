"""Helpers shared by the tests: tiny checkpoints, server commands and settings, LSP calls.

Checkpoints: :func:`write_tiny_checkpoint` (a random-weight CodeGen, optionally with its
output bias pinned on a few tokens so greedy or sampled output is predictable) and
:func:`write_chain_checkpoint` (a 1-layer CodeGen whose next token depends on the last one
only, following a given table). Both are built with ``codegen_lsp``'s synthetic-checkpoint
module, imported here and nowhere else in the tests.

LSP: helpers for a ``pytest-lsp`` :class:`~pytest_lsp.LanguageClient` (``open_doc``,
``change``, ``inline``, ``complete``, ``configure``, ``server_status``, ``wait_for_state``,
``wait_for_message``); ``raw_lsp.RawServer`` has the same calls for raw frames. Fixtures live
in ``conftest.py``; test modules import what they need from here (``from support import ...``).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from lsprotocol import types

from codegen_lsp.codegen.modeling import CodeGenForCausalLM
from codegen_lsp.commands.bench.synthetic import random_model, write_checkpoint

T = TypeVar("T")

# --- checkpoints ----------------------------------------------------------------------------
TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "codegen-tokenizer"
TINY_SHAPE = dict(n_positions=256, n_embd=64, n_layer=2, n_head=4, rotary_dim=8)
TINY_VOCAB = 50304
STEADY_TOKEN = 657  # " 0" in the CodeGen tokenizer (a run of it is data, not a loop)
CHOICE_TOKENS = (2124, 331, 1976)  # " x", " y", " z"
PINNED_BIAS = 50.0  # added to a pinned token's logit: every other token is out of the race


def tiny_model(
    seed: int = 0, pinned: Sequence[int] = (), n_positions: int = 256
) -> CodeGenForCausalLM:
    """A tiny random-weight CodeGen; with ``pinned`` tokens, only those are ever chosen
    (greedy takes the one the random weights favour, sampling picks among them)."""
    shape = {**TINY_SHAPE, "n_positions": n_positions}
    model = random_model(shape, vocab_size=TINY_VOCAB, seed=seed)
    with torch.no_grad():
        for token in pinned:
            model.lm_head.bias[token] += PINNED_BIAS
    return model


def write_tiny_checkpoint(
    directory: Path, pinned: Sequence[int] = (), n_positions: int = 256
) -> Path:
    """A tiny model (see :func:`tiny_model`) saved with the tokenizer fixture beside it."""
    model = tiny_model(pinned=pinned, n_positions=n_positions)
    return write_checkpoint(directory, TOKENIZER_DIR, model)


def write_chain_checkpoint(
    directory: Path,
    chain: Sequence[tuple[int | None, int]],
    n_positions: int = 256,
    tokenizer_dir: Path = TOKENIZER_DIR,
) -> Path:
    """A 1-layer CodeGen whose greedy next token depends on the current token only:
    ``chain`` maps a token to its successor, ``(None, t)`` gives the successor of every token
    not listed. The blocks write nothing (attention and MLP outputs are zero), each listed
    token has its own embedding direction, and the head maps that direction to its successor.
    """
    sources = [source for source, _ in chain]
    assert len(set(sources)) == len(sources), f"a token with two successors: {chain}"
    shape = {**TINY_SHAPE, "n_layer": 1, "n_positions": n_positions}
    model = random_model(shape, vocab_size=TINY_VOCAB)
    width = model.config.n_embd
    assert len(chain) < width, "one embedding direction per listed token"
    with torch.no_grad():
        block = model.transformer.h[0]
        for tensor in (block.attn.out_proj.weight, block.mlp.fc_out.weight, block.mlp.fc_out.bias):
            tensor.zero_()  # hidden state = the token's embedding
        slots = torch.eye(width)  # slot 0: every token not listed
        wte = model.transformer.wte.weight
        wte.copy_(slots[0].expand(model.config.vocab_size, width))
        slot_of = {None: 0}
        for source in sources:
            if source is not None:
                slot_of[source] = len(slot_of)
                wte[source] = slots[slot_of[source]]
        # the final layer norm (weight 1, bias 0) turns a slot into this direction
        normed = (slots - slots.mean(1, keepdim=True)) / slots.std(1, unbiased=False, keepdim=True)
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        for source, target in chain:  # a token may be the successor of several
            model.lm_head.weight[target] += 10 * normed[slot_of[source]]
    return write_checkpoint(directory, tokenizer_dir, model.eval())


FIM_TOKENS = ("<mask_1>", "<sep>", "<eom>")


def write_fim_tokenizer(directory: Path) -> Path:
    """The CodeGen tokenizer fixture with CodeGen2's infill tokens added after its ids."""
    directory.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_DIR.iterdir():
        shutil.copyfile(f, directory / f.name)
    data = json.loads((directory / "tokenizer.json").read_text())
    next_id = max(t["id"] for t in data["added_tokens"]) + 1
    added = json.loads((directory / "added_tokens.json").read_text())
    for i, token in enumerate(FIM_TOKENS):
        data["added_tokens"].append({"id": next_id + i, "content": token, "single_word": False,
                                     "lstrip": False, "rstrip": False, "normalized": False,
                                     "special": True})  # fmt: skip
        added[token] = next_id + i
    (directory / "tokenizer.json").write_text(json.dumps(data))
    (directory / "added_tokens.json").write_text(json.dumps(added))
    return directory


def default_model_dir() -> Path | None:
    """The shipped default model's directory, or None if it is not there (yet)."""
    try:
        from codegen_lsp.codegen.default import default_model_dir as shipped
    except ImportError:
        return None
    try:
        path = Path(shipped())
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return None
    return path if (path / "config.json").is_file() else None


# --- commands and settings ------------------------------------------------------------------
CLI_COMMAND = [sys.executable, "-m", "codegen_lsp"]
SERVER_COMMAND = [*CLI_COMMAND, "serve"]
# filter off: tiny random checkpoints are not what the suggestion gate was fitted on (the gate's
# own tests ask for it)
CPU = {"device": "cpu", "dtype": "float32", "quantize": "none", "threads": 1, "filter": "off"}


def cpu_settings(model: Path | str, **extra: Any) -> dict[str, Any]:
    """``codegen`` settings for a small model on the CPU in float32, one thread."""
    return {"model": str(model), **CPU, **extra}


def codegen_settings(model: Path | str, **extra: Any) -> dict[str, Any]:
    """The ``{"codegen": ...}`` object that initializationOptions and
    didChangeConfiguration carry, with :func:`cpu_settings`."""
    return {"codegen": cpu_settings(model, **extra)}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- waiting --------------------------------------------------------------------------------
Description = str | Callable[[], str]  # what is waited for (a callable: read at the end)


def _timed_out(timeout: float, what: Description) -> AssertionError:
    text = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:.0f}s waiting for {text}")


def wait_until(
    check: Callable[[], T], timeout: float, what: Description, interval: float = 0.05
) -> T:
    """Call ``check`` until it returns something truthy; that value. Fails after
    ``timeout`` seconds, saying ``what`` it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        time.sleep(interval)


async def await_until(
    check: Callable[[], Awaitable[T]], timeout: float, what: Description, interval: float = 0.05
) -> T:
    """:func:`wait_until` for an async ``check``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise _timed_out(timeout, what)
        await asyncio.sleep(interval)


# --- a pytest-lsp client --------------------------------------------------------------------
def as_dict(value: Any) -> Any:
    """A pygls ``Object`` (namedtuple) result as plain dicts/lists."""
    if hasattr(value, "_asdict"):
        return {k: as_dict(v) for k, v in value._asdict().items()}
    if isinstance(value, list | tuple):
        return [as_dict(v) for v in value]
    return value


async def server_status(client: Any) -> dict[str, Any]:
    """The ``codegen/status`` request's answer."""
    return as_dict(await client.protocol.send_request_async("codegen/status", None))


async def wait_for_state(
    client: Any,
    states: tuple[str, ...] = ("ready",),
    timeout: float = 90,
    model: Path | str | None = None,
) -> dict[str, Any]:
    """Poll ``codegen/status`` until its state is one of ``states`` (for ``model``, when
    given: a status from before a settings change does not count); return the status."""
    last: dict[str, Any] = {}

    async def reached() -> dict[str, Any] | None:
        last.update(await server_status(client))
        wanted = model is None or last["model"] == str(model)
        return dict(last) if wanted and last["state"] in states else None

    return await await_until(reached, timeout, lambda: f"{states} (last status {last})")


async def wait_for_message(client: Any, text: str, timeout: float = 30) -> Any:
    """The first ``window/showMessage`` the client got that contains ``text``."""

    async def found() -> Any:
        return next((m for m in client.messages if text in m.message), None)

    def shown() -> str:
        return f"a message with {text!r} (got {[m.message for m in client.messages]})"

    return await await_until(found, timeout, shown)


def configure(client: Any, model: Path | str, **extra: Any) -> None:
    """didChangeConfiguration with :func:`codegen_settings`."""
    settings = codegen_settings(model, **extra)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings))


def open_doc(client: Any, uri: str, text: str, language: str = "python") -> None:
    """didOpen (version 1)."""
    item = types.TextDocumentItem(uri=uri, language_id=language, version=1, text=text)
    client.text_document_did_open(types.DidOpenTextDocumentParams(item))


def change(
    client: Any, uri: str, version: int, start: tuple[int, int], end: tuple[int, int], text: str
) -> None:
    """An incremental didChange: ``text`` replaces the range ``start``-``end`` (line, unit)."""
    where = types.Range(types.Position(*start), types.Position(*end))
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            [types.TextDocumentContentChangePartial(range=where, text=text)],
        )
    )


def inline_params(
    uri: str,
    line: int,
    character: int,
    trigger: types.InlineCompletionTriggerKind = types.InlineCompletionTriggerKind.Invoked,
) -> types.InlineCompletionParams:
    """inlineCompletion params at a position."""
    return types.InlineCompletionParams(
        context=types.InlineCompletionContext(trigger),
        text_document=types.TextDocumentIdentifier(uri),
        position=types.Position(line, character),
    )


async def inline(client: Any, uri: str, line: int, character: int, **kwargs: Any) -> Any:
    """An inlineCompletion request's answer."""
    params = inline_params(uri, line, character, **kwargs)
    return await client.text_document_inline_completion_async(params)


async def complete(client: Any, uri: str, line: int, character: int) -> Any:
    """A completion request's answer."""
    params = types.CompletionParams(
        types.TextDocumentIdentifier(uri), types.Position(line, character)
    )
    return await client.text_document_completion_async(params)
