"""Top-p at the small end of its range (0, 1]: a value too small for float32 (``1e-300``
rounds to 0) means "keep the most likely token", never an empty distribution (NaN).

Checked on :func:`logits_to_probs` and :func:`sample` directly, and end to end with
``codegen-lsp generate`` on a tiny checkpoint whose sampled output is known.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from support import CLI_COMMAND

from codegen_lsp.engine.api import SamplingParams
from codegen_lsp.engine.sampling import logits_to_probs, sample

TINY_TOP_P = [1e-300, 1e-46, 5e-324, 1e-38, 1e-7]


@pytest.mark.parametrize("top_p", TINY_TOP_P)
@pytest.mark.parametrize("top_k", [0, 3])
def test_tiny_top_p_keeps_the_top_token(top_p: float, top_k: int) -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3  # [B, V]
    probs = logits_to_probs(logits, SamplingParams(temperature=0.8, top_p=top_p, top_k=top_k))
    assert torch.isfinite(probs).all()
    expected = torch.nn.functional.one_hot(logits.argmax(-1), 50).float()
    assert torch.equal(probs, expected)
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        chosen = sample(logits, SamplingParams(1.0, top_p, top_k), generator)
        assert torch.equal(chosen, logits.argmax(-1))


def test_top_p_keeps_the_smallest_set_above_it() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    kept = logits_to_probs(probs.log(), SamplingParams(temperature=1.0, top_p=0.7))
    assert torch.allclose(kept, torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.isfinite(logits_to_probs(probs.log(), SamplingParams(1.0, 1.0))).all()


def test_generate_with_tiny_top_p(choice_checkpoint: Path) -> None:
    """The command line samples with the tiny top-p, as a user would set it."""
    common = ["generate", "x =", "--model", str(choice_checkpoint), "--device", "cpu"]
    common += ["--max-new-tokens", "6", "--candidates", "1"]
    greedy = subprocess.run(
        [*CLI_COMMAND, *common, "--temperature", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert greedy.returncode == 0, greedy.stderr
    sampled = subprocess.run(
        [*CLI_COMMAND, *common, "--temperature", "1.0", "--top-p", "1e-300", "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sampled.returncode == 0, sampled.stderr
    assert "nan" not in sampled.stderr.lower()
    assert sampled.stdout == greedy.stdout  # top-p that small: the top token every step
    assert greedy.stdout.startswith("x =")
