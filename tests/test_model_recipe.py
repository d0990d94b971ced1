"""The default model's recipe (model/) as its README runs it: every run configuration builds and
trains two smoke-sized steps on a small corpus and exports a checkpoint the package loads; a
run resumes; the GPU sweep packs and unpacks; the evaluation reproduces the card's first
held-out prompt row for the shipped model.

The commands run as subprocesses from the repository root (``python -m model.train ...``), so
thread settings and imports stay out of the test process.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from codegen_lsp.codegen.checkpoint import load_model
from model.config import TrainConfig, config_names, load_config
from model.data import V2_COMMIT, split_texts
from model.train import export, lr_at, progress_of, smoke_config

REPO = Path(__file__).resolve().parent.parent


def run(*args: str | Path) -> str:
    """``python -m ARGS`` in the repository root; its stdout (fails with its stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def has_v2_commit() -> bool:
    cmd = ["git", "cat-file", "-e", f"{V2_COMMIT}^{{commit}}"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both corpora prepared from their manifests' first 12 matching files (small BPE)."""
    if not split_texts("stdlib", "train", limit=1):
        pytest.skip("no file of model/manifest.tsv.gz matches this Python's standard library")
    work = tmp_path_factory.mktemp("recipe")
    run("model.train", "prepare", "--data", "stdlib", "--work", work, "--limit-files", "12",
        "--vocab-size", "320")  # fmt: skip
    if has_v2_commit():
        run("model.train", "prepare", "--data", "v3", "--work", work, "--limit-files", "12")
    return work


def smoke(work: Path, name: str) -> dict:
    """Train ``name`` smoke-sized (its ``init: run:`` dependency first); its summary."""
    cfg = load_config(name)
    if cfg.data == "v3" and not has_v2_commit():
        pytest.skip(f"{name} starts from v2 at {V2_COMMIT[:7]}, not in this clone's history")
    if cfg.init.startswith("run:"):
        smoke(work, cfg.init.removeprefix("run:"))
    out = run("model.train", "train", "--config", name, "--work", work, "--smoke")
    assert "done: 2 steps, 256 tokens" in out
    return json.loads((work / "runs" / name / "summary.json").read_text())


@pytest.mark.parametrize("name", config_names())
def test_every_run_config_trains_smoke_steps_and_exports_a_loadable_checkpoint(
    work: Path, name: str, tmp_path: Path
) -> None:
    cfg = load_config(name)
    summary = smoke(work, name)
    assert summary["steps"] == 2 and summary["config"] == smoke_config(cfg).to_dict()
    losses = [float(line.split()[3]) for line in (work / "runs" / name / "train.log").open()
              if line.startswith("step ")]  # fmt: skip
    assert losses and all(math.isfinite(x) for x in losses)
    if cfg.eval_every:
        assert summary["best_heldout"]["heldout"] < math.log(summary["model_config"]["vocab_size"])
    export(work / "runs" / name, work / cfg.data, tmp_path / "ckpt")  # what `train.py export` does
    model = load_model(tmp_path / "ckpt", dtype=torch.float32)
    generation = json.loads((tmp_path / "ckpt" / "generation_config.json").read_text())
    assert generation["file_start_bos"] is True
    if cfg.init == "scratch":
        shape = model.config
        assert (shape.n_layer, shape.n_embd, shape.rotary_dim) == (
            cfg.n_layer, cfg.n_embd, cfg.rotary_dim,
        )  # fmt: skip
    if cfg.init.startswith("git:"):  # v2's rows kept, the infill tokens' rows added
        base = load_model(work / f"shipped-{V2_COMMIT[:7]}", dtype=torch.float32)
        old, new = base.transformer.wte.weight, model.transformer.wte.weight
        assert new.shape[0] == 8256 and old.shape[0] == 8192
        assert torch.allclose(new[:8192], old, atol=0.02)
        assert torch.allclose(new[8192], old.mean(0), atol=0.02)
    logits = model(torch.tensor([[0, 5, 7]]), torch.arange(3))
    assert torch.isfinite(logits).all()


def test_a_finished_run_resumes_instead_of_training_again(work: Path, tmp_path: Path) -> None:
    smoke(work, "v2-A")
    out = run("model.train", "train", "--config", "v2-A", "--work", work, "--smoke")
    assert "resumed at step 2" in out and "done: 2 steps" in out
    run("model.train", "export", "--config", "v2-A", "--work", work, "--out", tmp_path / "a")
    assert load_model(tmp_path / "a", dtype=torch.float32).config.n_layer == 4
    with pytest.raises(subprocess.CalledProcessError):  # another config, the same state
        subprocess.run(
            [sys.executable, "-m", "model.train", "train", "--config", "v2-A", "--work", work,
             "--smoke", "lr=0.1"], cwd=REPO, capture_output=True, check=True, timeout=600,
        )  # fmt: skip


def test_sweep_packs_runs_and_unpack_installs_one(work: Path, tmp_path: Path) -> None:
    (tmp_path / "gpu").mkdir()
    (tmp_path / "gpu" / "stdlib").symlink_to(work / "stdlib")
    run("model.sweep", "run", "--configs", "v2-D", "--work", tmp_path / "gpu",
        "--out", tmp_path / "out", "--device", "cpu", "--smoke")  # fmt: skip
    report = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert report["packed"] == ["v2-D"] and report["runs"]["v2-D"]["steps"] == 2
    ship = tmp_path / "ship"
    ship.mkdir()
    run("model.sweep", "unpack", "--parts", tmp_path / "out", "--into", tmp_path / "x",
        "--run", "v2-D", "--ship", ship)  # fmt: skip
    assert load_model(ship, dtype=torch.float32).config.n_layer == 6


def test_schedule_warms_up_then_follows_the_largest_budget_fraction() -> None:
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=100, minutes=1.0, batch=2, seq=4)
    assert lr_at(cfg, 0, 0.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 9, 0.0) == pytest.approx(1e-3)
    assert lr_at(cfg, 50, 0.5) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(1e-4)
    assert progress_of(cfg, 50, 0.0, 1000) == pytest.approx(0.5)
    assert progress_of(cfg, 10, 45.0, 1000) == pytest.approx(0.75)  # time ahead of steps
    passes = TrainConfig(passes=2.0, batch=2, seq=4)
    assert progress_of(passes, 100, 0.0, 1000) == pytest.approx(0.4)


def test_configs_refuse_unknown_keys_and_typed_overrides_apply() -> None:
    assert load_config("v2-B", ["lr=0.01", "bf16=false"]).lr == 0.01
    assert load_config("v2-B", ["bf16=false"]).bf16 is False
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        load_config("v2-B", ["lerning_rate=0.01"])
    with pytest.raises(ValueError, match="no budget"):
        TrainConfig()


def test_evaluate_reproduces_the_cards_first_prompt_row(tmp_path: Path) -> None:
    if not split_texts("stdlib", "heldout", limit=1):
        pytest.skip("no held-out file of model/manifest.tsv.gz matches this standard library")
    record = json.loads((REPO / "model" / "runs" / "v2" / "eval.json").read_text())["v2"]
    out = tmp_path / "eval.json"
    run("model.evaluate", "--suites", "loss,prompts", "--n-prompts", "1", "--limit-files", "1",
        "--name", "v2", "--out", out)  # fmt: skip
    result = json.loads(out.read_text())["v2"]
    assert result["prompts"] == record["prompts"][:1]  # greedy and best of 8, text for text
    loss = result["loss_stdlib"]
    assert loss["files"] == 1 and 0.5 < loss["loss"] < 3.0  # uniform over 8,192 ids: 9.0
    assert loss["bits_per_byte"] < loss["xz_bpb_per_file"]
