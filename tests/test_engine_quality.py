"""Int8 weights keep the default model's predictions: top-1 agreement with float32 >= 99%.

Held-out code is the ``heldout`` split of ``model/manifest.tsv.gz`` (standard-library files
the default model never trained on), read from this interpreter's standard library where the
sha256 still matches. Every linear layer runs its int8 kernel (the decode path), activations
in bf16, and the top logits are refined in float32 as the engine does. Skips when the default
model is not installed.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import sysconfig
from pathlib import Path

import pytest
import torch

from codegen_lsp.codegen.checkpoint import load_model
from codegen_lsp.codegen.tokenizer import CodeGenTokenizer
from codegen_lsp.engine.head import LogitsHead
from codegen_lsp.engine.quantize import quantize_int8

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "model" / "manifest.tsv.gz"
MAX_TOKENS = 4000  # 1% resolution with room; fast on a loaded CPU


def default_dir() -> Path | None:
    try:
        from codegen_lsp.codegen.default import default_model_dir
    except ImportError:
        return None
    directory = Path(default_model_dir())
    return directory if (directory / "config.json").is_file() else None


def held_out_texts() -> list[str]:
    """Held-out files whose content matches the manifest, in manifest order."""
    if not MANIFEST.is_file():
        return []
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for line in gzip.decompress(MANIFEST.read_bytes()).decode("utf-8").splitlines()[1:]:
        rel, digest, _size, split = line.split("\t")
        path = root / rel
        if split != "heldout" or not path.is_file():
            continue
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() == digest:
            texts.append(data.decode("utf-8"))
    return texts


@pytest.mark.skipif(default_dir() is None, reason="the default model is not installed yet")
def test_int8_top1_agreement_on_held_out_code() -> None:
    texts = held_out_texts()
    if not texts:
        pytest.skip("no held-out files of model/manifest.tsv.gz match this standard library")
    directory = default_dir()
    assert directory is not None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fp32 = load_model(directory, dtype=torch.float32)
        int8 = copy.deepcopy(fp32).to(torch.bfloat16)
        head = LogitsHead.for_model(int8)  # as the engine does: float32 top logits
        quantize_int8(int8, small_rows=1 << 30)  # int8 kernel for every call
        tokenizer = CodeGenTokenizer.from_dir(directory)
        window = fp32.config.n_positions
        agree = total = 0
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer.encode(text)
                for start in range(0, len(ids) - 1, window):
                    chunk = torch.tensor([ids[start : start + window]])  # [1, T]
                    positions = torch.arange(chunk.shape[1])
                    want = fp32(chunk, positions).argmax(-1)
                    got = head(int8.transformer(chunk, positions)[0]).argmax(-1)[None]
                    agree += int((want == got).sum())
                    total += chunk.numel()
                if total >= MAX_TOKENS:
                    break
    finally:
        torch.set_num_threads(threads)
    assert total >= 2000
    assert agree / total >= 0.99, f"top-1 agreement {agree / total:.4f} over {total} tokens"
