"""The security promises of docs/security.md, each checked where it can be.

- The package source never executes or unpickles: no ``exec``/``eval``/``compile``/
  ``__import__`` calls, no pickle modules, ``torch.load`` only with ``weights_only=True``,
  no ``trust_remote_code``, no subprocess or shell calls (an AST scan).
- A malicious ``pytorch_model.bin`` (a pickle that would run a command) is refused and
  the command never runs.
- ``serve --tcp`` listens on 127.0.0.1 only, unless ``--host`` says otherwise.
- A hub id with downloads off is never fetched: no connection is even attempted.
- Generated code is text: a model whose suggestion is ``os.system("touch pwned")``
  produces that suggestion (inline, completion, hover) and the file never appears.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from raw_lsp import RawServer
from support import SERVER_COMMAND, codegen_settings, wait_until, write_chain_checkpoint

import codegen_lsp
from codegen_lsp.codegen.checkpoint import CheckpointError, load_model

PACKAGE = Path(codegen_lsp.__file__).parent
SNIPPET = ' os.system("touch pwned")'
FORBIDDEN_CALLS = {"exec", "eval", "compile", "__import__", "execfile"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "subprocess"}
FORBIDDEN_ATTRS = {"system", "popen", "execv", "execve", "execvp", "spawnv", "spawnl", "startfile"}


def package_sources() -> list[tuple[Path, ast.Module]]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    return [(f, ast.parse(f.read_text(encoding="utf-8"), str(f))) for f in files]


def test_source_never_executes_or_unpickles() -> None:
    problems: list[str] = []
    torch_loads = 0
    for path, tree in package_sources():
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                bad = {n.split(".")[0] for n in names} & FORBIDDEN_MODULES
                problems += [f"{where}:{node.lineno} imports {m}" for m in bad]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                problems.append(f"{where}:{node.lineno} calls {func.id}()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if func.value.id == "os" and func.attr in FORBIDDEN_ATTRS:
                    problems.append(f"{where}:{node.lineno} calls os.{func.attr}()")
                if (func.value.id, func.attr) == ("torch", "load"):
                    torch_loads += 1
                    weights_only = [k for k in node.keywords if k.arg == "weights_only"]
                    if not (weights_only and getattr(weights_only[0].value, "value", None) is True):
                        problems.append(f"{where}:{node.lineno} torch.load without weights_only")
            for keyword in node.keywords:
                if keyword.arg == "trust_remote_code":
                    problems.append(f"{where}:{node.lineno} passes trust_remote_code")
                if keyword.arg == "shell":
                    problems.append(f"{where}:{node.lineno} passes shell=")
    assert not problems, problems
    assert torch_loads == 1  # the .bin reader in codegen/checkpoint.py


def test_malicious_pickle_is_refused(tmp_path: Path, tiny_checkpoint: Path) -> None:
    marker = tmp_path / "pickle-ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil"
    evil.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", evil / "config.json")
    torch.save({"transformer.wte.weight": Payload()}, evil / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(evil)
    assert not marker.exists()


def _listening_sockets(pid: int) -> list[tuple[str, str]]:
    """(local address, table) of the listening TCP sockets that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                found.append((fields[1], table))
    return found


def test_tcp_listens_on_loopback_only(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    server = subprocess.Popen([*SERVER_COMMAND, "--tcp", "--port", "0", "--log-file", str(log)])
    try:

        def listening() -> bool:
            assert server.poll() is None, "the server exited"
            return log.exists() and "listening on" in log.read_text()

        wait_until(listening, 60, "the server to listen", interval=0.1)
        host, port = re.search(r"listening on ([\d.]+):(\d+)", log.read_text()).groups()
        assert host == "127.0.0.1"
        sockets = _listening_sockets(server.pid)
        assert sockets == [(f"0100007F:{int(port):04X}", "tcp")], sockets
    finally:
        server.kill()
        server.wait()


def test_hub_id_without_allow_download_never_connects(tmp_path: Path) -> None:
    probe = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network is off in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from codegen_lsp.codegen.checkpoint import CheckpointError, resolve
try:
    resolve("Salesforce/codegen-350M-mono", allow_download=False)
except CheckpointError as exc:
    print("refused:", exc)
print("attempts:", len(attempts))
"""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "allowDownload" in done.stdout, done.stdout
    assert "attempts: 0" in done.stdout


def snippet_checkpoint(directory: Path, tokenizer: Any) -> Path:
    """A chain model whose greedy output after any prompt is ``SNIPPET``, then eos."""
    ids = tokenizer.encode(SNIPPET)
    assert tokenizer.eos_id not in ids
    chain = list(zip([None, *ids], [*ids, tokenizer.eos_id], strict=True))
    return write_chain_checkpoint(directory, chain)


def test_generated_code_is_never_run(tmp_path: Path, tokenizer: Any) -> None:
    model = snippet_checkpoint(tmp_path / "chain", tokenizer)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    server = RawServer(tmp_path / "server.log", cwd=workspace)
    try:
        server.initialize(codegen_settings(model, maxNewTokens=16))
        uri = (workspace / "app.py").as_uri()
        server.open(uri, "import os\n\nresult =\n\ndef cleanup():\n    pass\n")
        position = {"textDocument": {"uri": uri}, "position": {"line": 2, "character": 8}}
        inline = server.call(
            "textDocument/inlineCompletion", {**position, "context": {"triggerKind": 1}}
        )
        completion = server.call("textDocument/completion", position)
        hover_at = {"textDocument": {"uri": uri}, "position": {"line": 4, "character": 5}}
        hover = server.call("textDocument/hover", hover_at)
        texts = [
            inline["result"]["items"][0]["insertText"],
            completion["result"]["items"][0]["textEdit"]["newText"],
            hover["result"]["contents"]["value"],
        ]
        assert all('os.system("touch pwned")' in t for t in texts), texts
        time.sleep(1.0)
    finally:
        assert server.close() == 0
    assert not list(tmp_path.rglob("pwned")), list(tmp_path.rglob("pwned"))
    assert not Path("pwned").exists()
