"""``maxNewTokens`` against the model's context: the document is never given up for it.

A generation budget at or above ``n_ctx - 1`` used to cut the prompt to ``<|endoftext|>``
alone (every document got the same suggestion, silently). Now a suggestion generates at most
half the context, so the prompt keeps the other half; the clamp is said once, naming the
setting and the model's context (``window/showMessage`` and the log in the server, standard
error for ``complete`` and ``generate``). Tiny checkpoints of 256 positions, real processes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from raw_lsp import RawServer
from support import CLI_COMMAND, codegen_settings

from codegen_lsp.engine.api import GenerateRequest
from codegen_lsp.engine.sampling import fit_prompt

N_CTX = 256  # the tiny checkpoint's n_positions
DOCUMENT = (
    "import os\n\n\ndef read_config(path):\n    with open(path) as handle:\n"
    "        return handle.read().splitlines()\n\n\nvalue = read_con"
)
OTHER = "class Account:\n    def __init__(self, owner, balance):\n        self.owner = owne"


def _requests(log: str) -> list[tuple[int, int]]:
    """(prompt tokens, generated tokens) of every model request in a server log."""
    found = re.findall(r"inline: prompt=(\d+) .*? generated=(\d+)", log)
    return [(int(p), int(g)) for p, g in found]


@pytest.mark.parametrize("max_new", [N_CTX - 1, 300, 2048])
def test_server_keeps_the_document(tmp_path: Path, tiny_checkpoint: Path, max_new: int) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize(codegen_settings(tiny_checkpoint, maxNewTokens=max_new, timeLimitMs=0))
        message = server.wait_for_message(f"maxNewTokens={max_new}")
        assert f"context of {N_CTX} tokens" in message and f"at most {N_CTX // 2}" in message
        for uri, text in (("file:///c/a.py", DOCUMENT), ("file:///c/b.py", OTHER)):
            server.open(uri, text)
            last = text.splitlines()[-1]
            answer = server.inline(uri, len(text.splitlines()) - 1, len(last), timeout=60)
            assert "result" in answer, answer
        requests = _requests(server.log())
        assert len(requests) == 2, server.log()
        for prompt, generated in requests:
            assert prompt >= 20  # the document, not <|endoftext|> alone
            assert generated <= N_CTX // 2 and prompt + generated <= N_CTX
        server.configure(codegen_settings(tiny_checkpoint, maxNewTokens=max_new, topK=5))
        assert server.status()["state"] == "ready"
        shown = [m for m in server.messages_shown() if "maxNewTokens=" in m]
        assert len(shown) == 1, shown  # once per setting and context
    finally:
        assert server.close() == 0


def test_server_says_nothing_when_it_fits(tmp_path: Path, tiny_checkpoint: Path) -> None:
    server = RawServer(tmp_path / "server.log")
    try:
        server.initialize(codegen_settings(tiny_checkpoint, maxNewTokens=N_CTX // 2))
        server.open("file:///c/a.py", DOCUMENT)
        server.inline("file:///c/a.py", len(DOCUMENT.splitlines()) - 1, len("value = read_con"))
        assert not [m for m in server.messages_shown() if "maxNewTokens" in m]
    finally:
        assert server.close() == 0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI_COMMAND, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_complete_command_keeps_the_document(tmp_path: Path, tiny_checkpoint: Path) -> None:
    source = tmp_path / "app.py"
    source.write_text(DOCUMENT)
    line = len(DOCUMENT.splitlines()) - 1
    done = _cli(
        "complete", str(source), "--line", str(line), "--model", str(tiny_checkpoint),
        "--device", "cpu", "--max-new-tokens", "1000",
    )  # fmt: skip
    assert "--max-new-tokens=1000" in done.stderr and f"context of {N_CTX}" in done.stderr
    figures = re.search(r"prompt (\d+) tokens, generated (\d+)", done.stderr)
    assert figures, done.stderr
    prompt, generated = int(figures[1]), int(figures[2])
    assert prompt >= 20 and generated <= N_CTX // 2


def test_generate_command_keeps_the_prompt(tiny_checkpoint: Path) -> None:
    done = _cli(
        "generate", DOCUMENT, "--model", str(tiny_checkpoint), "--device", "cpu",
        "--candidates", "1", "--max-new-tokens", "2000", "--no-truncate",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    note = re.search(
        r"--max-new-tokens=2000 .* context of 256 tokens .*\((\d+) tokens\)", done.stderr
    )
    assert note, done.stderr
    generated = re.search(r"\[(\d+) tokens in", done.stderr)
    assert generated, done.stderr
    assert int(note[1]) + int(generated[1]) <= N_CTX  # the prompt stayed whole beside it


def test_fit_prompt_gives_the_budget_way_to_the_prompt() -> None:
    short, long = list(range(20)), list(range(500))
    assert fit_prompt(GenerateRequest("k", short, max_new_tokens=300), N_CTX, 0) == (short, 236)
    assert fit_prompt(GenerateRequest("k", long, max_new_tokens=300), N_CTX, 0) == (
        long[-128:],
        128,
    )
    assert fit_prompt(GenerateRequest("k", long, max_new_tokens=64), N_CTX, 0) == (
        long[-192:],
        64,
    )
    assert fit_prompt(GenerateRequest("k", [], max_new_tokens=8), N_CTX, 7) == ([7], 8)
