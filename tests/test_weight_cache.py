"""The quantized-weight cache (``engine/weight_cache.py``): a second load maps the weights the
first one quantized and computes the same logits, bit for bit (native kernels on and off,
int8 and int4); a corrupt entry is found and rebuilt; a changed checkpoint misses; an
unwritable folder costs one warning; ``codegen-lsp cache list|clear`` over a subprocess.

Every test points the cache at its own temp folder through ``CODEGEN_WEIGHT_CACHE_DIR``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support import TOKENIZER_DIR, tiny_model, write_tiny_checkpoint

from codegen_lsp.commands.bench.synthetic import write_checkpoint
from codegen_lsp.engine import loader, weight_cache
from codegen_lsp.engine.api import EngineSpec
from codegen_lsp.engine.weight_files import check, list_entries

TOKENS = torch.tensor([[50256, 4299, 11748, 7, 87, 2599, 198, 220, 220, 220, 1441]])


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "weights"
    monkeypatch.setenv("CODEGEN_WEIGHT_CACHE_DIR", str(folder))
    monkeypatch.delenv("CODEGEN_WEIGHT_CACHE", raising=False)
    return folder


@pytest.fixture
def quantize_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the layers the loader quantized (none on a cache hit)."""
    calls: list[str] = []
    real = loader.quantized_layer

    def counting(linear, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(str(linear.weight.shape))
        return real(linear, *args, **kwargs)

    monkeypatch.setattr(loader, "quantized_layer", counting)
    return calls


def load(model: Path, quantize: str = "int8"):  # type: ignore[no-untyped-def]
    engine = loader.load_engine(
        EngineSpec(model=str(model), device="cpu", dtype="bfloat16", quantize=quantize)
    )
    weight_cache.wait_for_writes()
    return engine


def logits(engine) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """The engine's float32 logits for TOKENS, every position (its model and its head)."""
    with torch.no_grad():
        hidden = engine.model.transformer(TOKENS, torch.arange(TOKENS.shape[1]))
        return engine.head(hidden[0])


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_second_load_maps_the_cache_and_gives_identical_logits(
    tiny_checkpoint: Path, cache_dir: Path, quantize_calls: list[str], quantize: str
) -> None:
    first = load(tiny_checkpoint, quantize)
    assert len(quantize_calls) == 2 * 4 + 1  # qkv, out, fc_in, fc_out per layer, the head
    (entry,) = list_entries(cache_dir)
    assert entry.info["format"]["quantize"] == quantize
    quantize_calls.clear()
    second = load(tiny_checkpoint, quantize)
    assert quantize_calls == []  # nothing quantized: every layer came from the cache
    assert torch.equal(logits(first), logits(second))
    assert second.head.weight is not None  # the float32 refinement still has its weights
    assert [type(m).__name__ for m in first.model.modules()] == [
        type(m).__name__ for m in second.model.modules()
    ]


PARITY = textwrap.dedent(
    """
    import json, sys, torch
    from codegen_lsp.engine import loader, weight_cache, kernels
    from codegen_lsp.engine.api import EngineSpec
    calls = []
    real = loader.quantized_layer
    loader.quantized_layer = lambda *a, **k: calls.append(1) or real(*a, **k)
    spec = EngineSpec(model=sys.argv[1], device="cpu", dtype="bfloat16", quantize=sys.argv[2])
    tokens = torch.tensor([[50256, 4299, 11748, 7, 87, 2599, 198]])
    out = []
    for _ in range(2):
        calls.clear()
        engine = loader.load_engine(spec)
        weight_cache.wait_for_writes()
        with torch.no_grad():
            hidden = engine.model.transformer(tokens, torch.arange(tokens.shape[1]))
            out.append(engine.head(hidden[0]))
    print(json.dumps({"calls": len(calls), "same": torch.equal(*out),
                      "native": kernels.table().lib is not None}))
    """
)


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_torch_kernels_cache_their_own_layout(
    tiny_checkpoint: Path, cache_dir: Path, quantize: str
) -> None:
    """With CODEGEN_NATIVE=0 the entry is the ATen route's (int4 packs differently): a load
    after a native-kernel one does not take its int4 entry, and still matches bit for bit."""
    env = {**os.environ, "CODEGEN_NATIVE": "0"}
    args = [sys.executable, "-c", PARITY, str(tiny_checkpoint), quantize]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"calls": 0, "same": True, "native": False}
    formats = [e.info["format"]["packed"] for e in list_entries(cache_dir)]
    assert formats == (["any"] if quantize == "int8" else ["aten"])


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _data_start(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


@pytest.mark.parametrize("damage", ["truncated", "header byte", "first data byte"])
def test_a_corrupt_entry_is_found_and_rebuilt(
    tiny_checkpoint: Path,
    cache_dir: Path,
    quantize_calls: list[str],
    caplog: pytest.LogCaptureFixture,
    damage: str,
) -> None:
    reference = logits(load(tiny_checkpoint))
    (entry,) = list_entries(cache_dir)
    if damage == "truncated":
        os.truncate(entry.data, entry.data.stat().st_size - 1000)
    elif damage == "header byte":
        _flip(entry.data, 40)  # inside the JSON tensor table
    else:
        _flip(entry.data, _data_start(entry.data))
    quantize_calls.clear()
    with caplog.at_level(logging.WARNING, logger="codegen_lsp.engine.weight_cache"):
        engine = load(tiny_checkpoint)
    unusable = [r for r in caplog.records if "unusable" in r.getMessage()]
    assert len(unusable) == 1, caplog.text
    assert quantize_calls, "a corrupt entry must not be used"
    assert torch.equal(logits(engine), reference)
    (rebuilt,) = list_entries(cache_dir)
    check(rebuilt.data, rebuilt.info, full=True)  # whole again


def test_a_changed_checkpoint_misses_and_replaces_its_entry(
    tmp_path: Path, cache_dir: Path, quantize_calls: list[str]
) -> None:
    directory = write_tiny_checkpoint(tmp_path / "ck")
    before = logits(load(directory))
    (old,) = list_entries(cache_dir)
    write_checkpoint(directory, TOKENIZER_DIR, tiny_model(seed=7))  # new weights, same path
    quantize_calls.clear()
    after = logits(load(directory))
    assert quantize_calls, "new weights must be quantized, not read from the old entry"
    assert not torch.equal(before, after)
    (new,) = list_entries(cache_dir)  # the stale entry is gone
    assert new.key != old.key


def test_an_unwritable_cache_folder_costs_one_warning(
    tiny_checkpoint: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CODEGEN_WEIGHT_CACHE_DIR", str(blocker / "weights"))
    monkeypatch.setattr(weight_cache, "_said", set())
    with caplog.at_level(logging.WARNING, logger="codegen_lsp.engine.weight_cache"):
        first, second = logits(load(tiny_checkpoint)), logits(load(tiny_checkpoint))
    assert torch.equal(first, second)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot write" in warnings[0], warnings


def test_the_cache_can_be_turned_off(
    tiny_checkpoint: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CODEGEN_WEIGHT_CACHE", "0")
    load(tiny_checkpoint)
    assert not cache_dir.exists() or list_entries(cache_dir) == []


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "codegen_lsp.cli", "cache", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cache_list_and_clear_through_the_cli(
    tiny_checkpoint: Path, tmp_path: Path, cache_dir: Path
) -> None:
    other = write_checkpoint(tmp_path / "other", TOKENIZER_DIR, tiny_model(seed=5))
    load(tiny_checkpoint)
    load(other, "int4")
    keys = {e.source: e.key for e in list_entries(cache_dir)}
    listed = cli("list", "--verify")
    assert listed.returncode == 0, listed.stderr
    assert "2 entries" in listed.stdout
    for source, key in keys.items():
        line = next(line for line in listed.stdout.splitlines() if line.startswith(key))
        assert source in line and "[ok]" in line and "MiB" in line
    assert "int8 bfloat16" in listed.stdout and "int4 bfloat16" in listed.stdout
    one = keys[str(tiny_checkpoint.resolve())]
    assert cli("clear", one[:8]).returncode == 0
    assert [e.key for e in list_entries(cache_dir)] == [keys[str(other.resolve())]]
    missing = cli("clear", "ffffffffffff")
    assert missing.returncode == 1 and "no entry" in missing.stderr
    assert cli("clear").returncode == 0
    assert list_entries(cache_dir) == []
    assert "0 entries" in cli("list").stdout


@pytest.fixture
def row_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the speculation row checks the engines run (seconds each on a real model)."""
    from codegen_lsp.engine import local

    calls: list[int] = []
    real = local.rows_agree

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(local, "rows_agree", counting)
    return calls


def test_the_row_check_verdict_is_kept_with_the_entry(
    tiny_checkpoint: Path, cache_dir: Path, row_checks: list[int]
) -> None:
    first = load(tiny_checkpoint)
    assert row_checks == [1] and first.rows_verdict is True  # checked at the first start
    second = load(tiny_checkpoint)
    assert row_checks == [1], "a second start runs the row check again"
    assert second.rows_verdict is True and second.spec_width == first.spec_width > 1
    # a verdict that rows differ, kept for this machine, turns speculation off with its reason
    (rows,) = cache_dir.glob("*.rows")
    verdicts = json.loads(rows.read_text())
    rows.write_text(json.dumps({machine: False for machine in verdicts}))
    third = load(tiny_checkpoint)
    assert row_checks == [1] and third.spec_width == 1
    assert "verify rows differ" in third.speculation_state()
    # another machine's verdict is not taken: the check runs
    rows.write_text(json.dumps({"another machine": False}))
    fourth = load(tiny_checkpoint)
    assert row_checks == [1, 1] and fourth.rows_verdict is True
