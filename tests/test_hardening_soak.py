"""A short soak: 300 keystrokes over LSP with ``codegen-lsp bench soak``'s own code.

The tiny ``steady`` model keeps it fast; the full 10,000-keystroke run on the shipped model
is a benchmark (``bench/results/soak.json``), not a test. Checked here: every request was
answered, the KV cache stayed within its budget, the report and plot were written, and RSS
did not run away (the 5% threshold is for the long run; 300 keystrokes are mostly warm-up).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codegen_lsp.commands.bench import soak


def test_short_soak(tmp_path: Path, steady_checkpoint: Path) -> None:
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    settings = {"device": "cpu", "dtype": "float32", "quantize": "none", "threads": 1}
    settings |= {"maxNewTokens": 4, "cacheMemoryMB": 1}  # room for few documents: evictions
    args = parser.parse_args(
        [
            "--keystrokes", "300", "--interval-ms", "5", "--status-every", "10",
            "--model", str(steady_checkpoint), "--settings", json.dumps(settings),
            "--out", str(tmp_path), "--max-growth", "25",
        ]
    )  # fmt: skip
    code = soak.run(args)
    report = json.loads((tmp_path / "soak.json").read_text())
    assert report["requests"]["sent"] == report["requests"]["answered"] == 300, report["requests"]
    assert report["checks"]["kv_within_budget"], report["kv_cache"]
    assert report["kv_cache"]["budget_bytes"] == 2**20 and report["kv_cache"]["samples"] >= 30
    assert report["server"]["failures"] == 0 and report["server_exit_code"] == 0
    assert sum(report["server"]["actions"].values()) == 300
    assert len(report["series"]["rss"]) >= 3 and report["rss_mib"]["growth_pct"] < 25
    assert (tmp_path / "soak_rss.png").stat().st_size > 10_000
    assert code == 0
