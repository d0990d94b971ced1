"""Corpus and tokenizer of the default model: the stdlib's files, the split, the BPE.

    python -m model.corpus          # scan this interpreter's stdlib -> model/manifest.tsv.gz

``scan_stdlib`` walks ``sysconfig.get_paths()["stdlib"]`` (site-packages excluded), keeps the
``.py`` files, marks exact duplicates (sha256 of the content; the first path in sorted order is
kept) and files that are not UTF-8, and holds out every file whose relative path hashes into
the lowest ``HELD_OUT_PERMILLE`` of 1000 buckets. ``train_tokenizer`` is a byte-level BPE in
CodeGen's style (``<|endoftext|>`` = id 0 as bos/eos, runs of 2..31 spaces and 2..9 tabs as
added non-special tokens split out before BPE). Used by ``data.py`` and ``evaluate.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors, trainers
from tokenizers.models import BPE

REPO = Path(__file__).resolve().parent.parent

EOS = "<|endoftext|>"
EOS_ID = 0
MAX_SPACES = 31
MAX_TABS = 9
HELD_OUT_PERMILLE = 60
MANIFEST = REPO / "model" / "manifest.tsv.gz"
SHIP_DIR = REPO / "codegen_lsp" / "default_model"
# Whitespace runs the tokenizer treats as whole added tokens (longest match first).
_RUNS = re.compile(r"( {2,}|\t{2,})")


@dataclass
class SourceFile:
    """One corpus file: its path relative to the stdlib root, digest, size and split."""

    rel: str
    sha256: str
    size: int
    split: str  # "train", "heldout", "duplicate" or "not-utf8"


def held_out(rel: str) -> bool:
    """Stable split: a file is held out when its relative path hashes into the low buckets."""
    bucket = int(hashlib.sha256(rel.encode("utf-8")).hexdigest()[:8], 16) % 1000
    return bucket < HELD_OUT_PERMILLE


def stdlib_root() -> Path:
    """This interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def scan_stdlib(root: Path | None = None) -> list[SourceFile]:
    """Every ``.py`` file under the stdlib (no site-packages), deduplicated and split."""
    root = root or stdlib_root()
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        paths.extend(Path(dirpath) / f for f in filenames if f.endswith(".py"))
    seen: set[str] = set()
    files: list[SourceFile] = []
    for path in sorted(paths, key=lambda p: p.relative_to(root).as_posix()):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        try:
            data.decode("utf-8")
            split = "heldout" if held_out(rel) else "train"
        except UnicodeDecodeError:
            split = "not-utf8"
        if split != "not-utf8" and digest in seen:
            split = "duplicate"
        seen.add(digest)
        files.append(SourceFile(rel, digest, len(data), split))
    return files


def write_manifest(files: list[SourceFile], path: Path = MANIFEST) -> None:
    """Write ``path\\tsha256\\tbytes\\tsplit`` lines, gzip-compressed (deterministic bytes)."""
    lines = ["path\tsha256\tbytes\tsplit"] + [
        f"{f.rel}\t{f.sha256}\t{f.size}\t{f.split}" for f in files
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(("\n".join(lines) + "\n").encode("utf-8"))


def read_manifest(path: Path = MANIFEST) -> list[SourceFile]:
    """Read the manifest written by :func:`write_manifest`."""
    rows = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()[1:]
    out = []
    for row in rows:
        rel, digest, size, split = row.split("\t")
        out.append(SourceFile(rel, digest, int(size), split))
    return out


def read_texts(files: list[SourceFile], split: str, root: Path | None = None) -> list[str]:
    """Texts of the files in one split, checked against the manifest's digests."""
    root = root or stdlib_root()
    texts = []
    for f in files:
        if f.split != split:
            continue
        data = (root / f.rel).read_bytes()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise ValueError(f"{f.rel}: content differs from the manifest (another Python?)")
        texts.append(data.decode("utf-8"))
    return texts


def _bpe_pieces(texts: list[str]) -> Iterator[str]:
    """Text with the whitespace runs cut out, so BPE never learns what added tokens cover."""
    for text in texts:
        yield from (piece for piece in _RUNS.split(text) if piece and not _RUNS.fullmatch(piece))


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE with CodeGen's conventions and ``vocab_size`` ids in total."""
    tokenizer = Tokenizer(BPE(fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    n_added = (MAX_SPACES - 1) + (MAX_TABS - 1)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - n_added,
        min_frequency=2,
        special_tokens=[AddedToken(EOS, special=True, normalized=False)],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_bpe_pieces(texts), trainer=trainer)
    if tokenizer.token_to_id(EOS) != EOS_ID:
        raise ValueError(f"{EOS} landed on id {tokenizer.token_to_id(EOS)}")
    runs = [" " * n for n in range(MAX_SPACES, 1, -1)] + ["\t" * n for n in range(MAX_TABS, 1, -1)]
    tokenizer.add_tokens([AddedToken(r, special=False, normalized=True) for r in runs])
    return tokenizer


def encode_stream(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """All texts as one uint16 token stream, each file preceded by ``<|endoftext|>``."""
    parts: list[np.ndarray] = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        parts.append(np.array([EOS_ID, *enc.ids], dtype=np.uint16))
    return np.concatenate(parts)


if __name__ == "__main__":
    scanned = scan_stdlib()
    write_manifest(scanned)
    counts: dict[str, list[int]] = {}
    for f in scanned:
        counts.setdefault(f.split, [0, 0])
        counts[f.split][0] += 1
        counts[f.split][1] += f.size
    for name, (n, size) in sorted(counts.items()):
        print(f"{name:10s} {n:6d} files {size:11d} bytes -> {MANIFEST}")
