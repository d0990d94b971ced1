"""``codegen-lsp generate`` end to end, as a subprocess."""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest
from support import CLI_COMMAND


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI_COMMAND, "generate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_generate_prints_prompt_and_continuation(tiny_checkpoint):
    proc = _run(
        "--model", str(tiny_checkpoint), "--max-new-tokens", "8", "--no-truncate", "def f():"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("def f():")
    assert len(proc.stdout) > len("def f():\n")
    assert "8 tokens" in proc.stderr


def test_generate_is_deterministic_with_seed(tiny_checkpoint):
    # One sampled candidate (no greedy one to rank first), and a random model: its next
    # token is nearly uniform over 50k ids, so two seeds agreeing on 6 tokens never happens.
    args = ["--model", str(tiny_checkpoint), "--max-new-tokens", "6", "--temperature", "0.8"]
    args += ["--candidates", "1", "--no-truncate", "x = "]
    a, again, other = (_run("--seed", seed, *args) for seed in ("7", "7", "8"))
    assert a.returncode == again.returncode == other.returncode == 0, a.stderr + other.stderr
    assert a.stdout == again.stdout, "the same seed gave two outputs"
    assert a.stdout != other.stdout, "two seeds gave one output: is --seed ignored?"


def test_generate_bad_model_path_is_one_clear_line(tmp_path):
    proc = _run("--model", str(tmp_path / "missing"), "def f():")
    assert proc.returncode == 2
    assert "model directory not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_generate_corrupt_checkpoint(tiny_checkpoint, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    proc = _run("--model", str(bad), "def f():")
    assert proc.returncode == 2
    assert "corrupt or truncated" in proc.stderr and "Traceback" not in proc.stderr


def test_generate_default_model_fibonacci():
    from codegen_lsp.codegen.default import default_model_dir

    if not (default_model_dir() / "model.safetensors").exists():
        pytest.skip("the default model is not shipped yet")
    proc = subprocess.run(
        [*CLI_COMMAND, "generate", "def fibonacci(n):"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(Path.home())},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith("def fibonacci(n):")
    body = out[len("def fibonacci(n):") :]
    first = body.split("\n")[1]
    assert body.startswith("\n") and first.startswith((" ", "\t")) and first.strip()  # a body
    # the default is the best of 8 ranked candidates: a whole function that parses, no loop
    assert _parses(out), out
    lines = [line.strip() for line in body.split("\n") if line.strip()]
    assert lines and len(set(lines)) == len(lines), out
    assert "best of 8 candidates" in proc.stderr


def _parses(src: str) -> bool:
    try:
        ast.parse(src)
    except SyntaxError:
        return False
    return True


def test_demo_gets_a_suggestion_through_the_server(tmp_path):
    """The README's main command: one inline completion over LSP from the shipped model."""
    from codegen_lsp.codegen.default import default_model_dir

    if not (default_model_dir() / "model.safetensors").exists():
        pytest.skip("the default model is not shipped yet")
    proc = subprocess.run(
        [*CLI_COMMAND, "demo", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    head, _, suggestion = proc.stdout.partition("--- suggestion")
    assert head.startswith("import math")
    assert suggestion.split("---\n", 1)[1].strip()


def test_generate_all_prints_every_candidate(tiny_checkpoint) -> None:
    proc = _run("--model", str(tiny_checkpoint), "--candidates", "3", "--all", "def f():")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("--- candidate ") == 3
    assert proc.stdout.count("def f():") == 3
    assert "best of 3 candidates" in proc.stderr


def test_generate_rejects_zero_candidates(tiny_checkpoint) -> None:
    proc = _run("--model", str(tiny_checkpoint), "--candidates", "0", "def f():")
    assert proc.returncode == 2
    assert "--candidates must be >= 1" in proc.stderr and "Traceback" not in proc.stderr
