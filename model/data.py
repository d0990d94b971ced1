"""Training data: token streams on disk, shipped checkpoints from git, batches of rows.

``prepare(kind, work)`` writes ``WORK/KIND/``: ``tokenizer.json``, ``train_tokens.npy`` (the
training split as one uint16 stream, each file preceded by ``<|endoftext|>``; the v3 stream
also ends with one), ``heldout_tokens.npy`` (the held-out split, for the loop's quick score)
and, for the stdlib, ``heldout_lib_tokens.npy`` (held-out library files, tests left out) and
``train_is_test.npy`` (which training tokens belong to test files, for ``lib_weight``).

- ``stdlib`` (v1, v2): the files of ``model/manifest.tsv.gz``; a byte-level BPE trained on the
  training split (``corpus.train_tokenizer``).
- ``v3``: the files of ``model/manifest-v3.tsv.gz``; v2's tokenizer (from the commit that
  shipped it) plus CodeGen2's infill tokens ``<mask_1>``, ``<sep>``, ``<eom>`` (ids 8192-8194).

Every file is checked against its manifest's sha256; ``limit`` (smoke runs) instead takes the
first ``limit`` files of each split whose bytes match and skips the others.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer

from model.corpus import EOS_ID, encode_stream, read_manifest, stdlib_root, train_tokenizer
from model.packages import STDLIB, read_manifest_v3, site_root

REPO = Path(__file__).resolve().parent.parent
FIM_TOKENS = ("<mask_1>", "<sep>", "<eom>")
V2_COMMIT = "947919dd291ebe475b57df65d606da24cb8dc076"  # a commit that ships v2
SHIPPED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def is_test_path(rel: str) -> bool:
    """Test code: ``test/``, ``*/tests/``, ``idle_test/``, ``test_*.py`` and the like."""
    parts = rel.split("/")
    in_tests = any(p in ("test", "tests", "idle_test") for p in parts[:-1])
    return in_tests or parts[-1].startswith("test_")


def git_checkpoint(work: Path, commit: str) -> Path:
    """The default model shipped at ``commit``, written once into ``WORK/shipped-COMMIT7``."""
    out = work / f"shipped-{commit[:7]}"
    if all((out / name).is_file() for name in SHIPPED_FILES):
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in SHIPPED_FILES:
        blob = f"{commit}:codegen_lsp/default_model/{name}"
        done = subprocess.run(["git", "show", blob], cwd=REPO, capture_output=True, check=False)
        if done.returncode:
            raise SystemExit(f"git show {blob}: {done.stderr.decode().strip()}")
        (out / name).write_bytes(done.stdout)
    return out


def fim_tokenizer(base: Path) -> Tokenizer:
    """The base tokenizer with CodeGen2's three infill tokens (idempotent)."""
    tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in FIM_TOKENS]
    )
    return tokenizer


def split_texts(kind: str, split: str, limit: int = 0) -> list[tuple[str, str]]:
    """``(path, text)`` of one split of ``kind``'s manifest, checked against its sha256."""
    if kind == "stdlib":
        rows = [(stdlib_root(), f.rel, f.sha256) for f in read_manifest() if f.split == split]
    else:
        rows = [
            (stdlib_root() if f.package == STDLIB else site_root(), f.rel, f.sha256)
            for f in read_manifest_v3()
            if f.split == split
        ]
    out: list[tuple[str, str]] = []
    for root, rel, digest in rows:
        path = root / rel
        data = path.read_bytes() if path.is_file() else b""
        if hashlib.sha256(data).hexdigest() != digest:
            if limit:
                continue
            raise SystemExit(f"{path}: missing or not the manifest's bytes (another Python?)")
        out.append((rel, data.decode("utf-8")))
        if limit and len(out) == limit:
            break
    return out


def _stream(tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """``encode_stream`` in chunks (the encodings of 160 MB at once would not fit)."""
    parts = [encode_stream(tokenizer, texts[i : i + 512]) for i in range(0, len(texts), 512)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def prepare(kind: str, work: Path, vocab_size: int = 8192, limit: int = 0) -> Path:
    """Write ``WORK/KIND/`` (see the module docstring); return that directory."""
    out = work / kind
    out.mkdir(parents=True, exist_ok=True)
    train = split_texts(kind, "train", limit)
    held = split_texts(kind, "heldout", max(2, limit // 4) if limit else 0)
    texts = [text for _, text in train]
    if kind == "stdlib":
        tokenizer = train_tokenizer(texts, vocab_size)
    else:
        tokenizer = fim_tokenizer(git_checkpoint(work, V2_COMMIT))
    tokenizer.save(str(out / "tokenizer.json"))
    stream = _stream(tokenizer, texts)
    if kind == "v3":
        stream = np.concatenate([stream, np.array([EOS_ID], dtype=np.uint16)])
    np.save(out / "train_tokens.npy", stream)
    np.save(out / "heldout_tokens.npy", _stream(tokenizer, [t for _, t in held]))
    if kind == "stdlib":
        lib = [t for rel, t in held if not is_test_path(rel)]
        np.save(out / "heldout_lib_tokens.npy", _stream(tokenizer, lib))
        encs = tokenizer.encode_batch(texts, add_special_tokens=False)
        lengths = [len(e.ids) + 1 for e in encs]  # <|endoftext|> + the file
        flags = np.repeat([is_test_path(rel) for rel, _ in train], lengths).astype(np.bool_)
        if len(flags) != len(stream):
            raise SystemExit("train stream and test flags disagree")
        np.save(out / "train_is_test.npy", flags)
    size = sum(len(t.encode("utf-8")) for t in texts)
    print(
        f"{kind}: {tokenizer.get_vocab_size()} ids; train {len(train)} files, {size} bytes, "
        f"{len(stream)} tokens ({size / max(1, len(stream)):.2f} bytes/token); held-out "
        f"{len(held)} files -> {out}",
        flush=True,
    )
    return out


class Batches:
    """Rows of ``seq + 1`` tokens: random windows of the stream, a share ``fim`` rearranged
    into infill examples, library windows drawn ``lib_weight`` times as often as tests.

    An infill example is cut where the server cuts it, in text, not in tokens: a window of one
    file is decoded, a cursor is put on one of its lines (after the indentation 70% of the
    time, else anywhere in the line), the middle is the rest of that line (60%) or of 2-5 lines
    (40%) without the last newline, and prefix, suffix and middle are encoded on their own, as
    the server encodes the text before and after the cursor, in CodeGen2's layout
    ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1> middle <eom>``. The prefix starts at
    a line start (with ``<|endoftext|>`` when that is the file's start), the suffix is the
    first 0-128 tokens after the middle (usually 128); a short row is filled with the start
    of another file.
    """

    def __init__(
        self,
        stream: np.ndarray,
        tokenizer: Tokenizer,
        seq: int,
        seed: int,
        fim: float = 0.0,
        is_test: np.ndarray | None = None,
        lib_weight: float = 1.0,
    ) -> None:
        self.stream = stream.astype(np.int64)
        self.tokenizer, self.seq, self.fim = tokenizer, seq, fim
        self.rng = np.random.default_rng(seed)
        self.lib_starts = self.test_starts = np.zeros(0, dtype=np.int64)
        self.lib_share = 1.0
        if lib_weight != 1.0:
            if is_test is None:
                raise ValueError("lib_weight needs the training stream's test flags")
            flags = is_test[: len(self.stream) - seq - 1]
            self.lib_starts, self.test_starts = np.flatnonzero(~flags), np.flatnonzero(flags)
            lib = lib_weight * len(self.lib_starts)
            self.lib_share = lib / (lib + len(self.test_starts))
        if fim:
            self.mask, self.sep, self.eom = (tokenizer.token_to_id(t) for t in FIM_TOKENS)
            self.eos = np.flatnonzero(self.stream == EOS_ID)  # file i: eos[i]+1 .. eos[i+1]

    def get_state(self) -> dict:
        """The random state, to resume exactly."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore :meth:`get_state`'s state."""
        self.rng.bit_generator.state = state

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def _window(self) -> tuple[str, bool]:
        """Text of up to ~1,000 tokens of one file, and whether it starts at the file start."""
        while True:
            c = int(self.rng.integers(1, len(self.stream) - 1))
            f = int(np.searchsorted(self.eos, c, side="right")) - 1
            if f + 1 < len(self.eos) and self.eos[f + 1] - self.eos[f] > 8:
                break
        first, end = int(self.eos[f]) + 1, int(self.eos[f + 1])
        a, b = max(first, c - 700), min(end, c + 300)
        text = self.tokenizer.decode(self.stream[a:b].tolist(), skip_special_tokens=False)
        return text, a == first

    def _fit_prefix(self, lines: list[str], room: int, at_start: bool) -> list[int]:
        """The longest run of whole last lines of ``lines`` that fits in ``room`` tokens."""
        lo, hi = 0, len(lines)  # lines[hi:] always fits (empty)
        while lo < hi:  # the smallest i such that lines[i:] fits
            mid = (lo + hi) // 2
            ids = self._encode("".join(lines[mid:]))
            if len(ids) + (at_start and mid == 0) <= room:
                hi = mid
            else:
                lo = mid + 1
        ids = self._encode("".join(lines[lo:]))
        return [EOS_ID, *ids] if at_start and lo == 0 else ids

    def infill(self) -> np.ndarray:
        """One ``seq + 1``-token infill example."""
        total = self.seq + 1
        while True:
            text, at_start = self._window()
            lines = text.splitlines(keepends=True)
            lo = 0 if at_start else 1  # a window that starts mid-file starts mid-line
            if len(lines) - lo >= 3 and any(x.strip() for x in lines[lo:-1]):
                break
        k = int(self.rng.integers(lo, len(lines) - 1))
        while not lines[k].strip():  # a cursor on a blank line wants a suggestion: no empty middles
            k = int(self.rng.integers(lo, len(lines) - 1))
        line = lines[k]
        indent = len(line) - len(line.lstrip(" \t"))
        body_end = len(line.rstrip("\r\n"))
        if self.rng.random() < 0.7 or body_end <= indent:
            col = indent
        else:
            col = int(self.rng.integers(indent, body_end + 1))
        span = 1 if self.rng.random() < 0.6 else int(self.rng.integers(2, 6))
        chunk = "".join(lines[k : k + span])
        cut = len(chunk.rstrip("\r\n")) if k + span <= len(lines) else len(chunk)
        middle_text = chunk[col:cut]
        after = chunk[cut:] + "".join(lines[k + span :])
        room = 128 if self.rng.random() < 0.8 else int(self.rng.integers(0, 129))
        suffix = self._encode(after)[:room]
        middle = self._encode(middle_text)[: total // 3]
        fixed = len(suffix) + len(middle) + 5  # mask, eos, sep, mask, eom
        prefix = self._fit_prefix([*lines[lo:k], line[:col]], total - fixed, at_start)
        row = [*prefix, self.mask, *suffix, EOS_ID, self.sep, self.mask, *middle, self.eom]
        if len(row) < total:  # fill with the start of another file
            f = int(self.rng.integers(0, len(self.eos) - 1))
            start = int(self.eos[f])
            row += self.stream[start : start + total - len(row)].tolist()
        return np.asarray(row[:total], dtype=np.int64)

    def plain(self, starts: np.ndarray | None = None) -> np.ndarray:
        """One random window (from ``starts`` when given)."""
        if starts is None:
            start = int(self.rng.integers(0, len(self.stream) - self.seq - 1))
        else:
            start = int(starts[self.rng.integers(0, len(starts))])
        return self.stream[start : start + self.seq + 1]

    def next(self, batch: int) -> torch.Tensor:
        """``batch`` rows, ``[B, seq + 1]``."""
        if len(self.lib_starts):
            n_lib = int(self.rng.binomial(batch, self.lib_share))
            rows = [self.plain(self.lib_starts) for _ in range(n_lib)]
            rows += [self.plain(self.test_starts) for _ in range(batch - n_lib)]
        else:
            rows = [
                self.infill() if self.fim and self.rng.random() < self.fim else self.plain()
                for _ in range(batch)
            ]
        return torch.from_numpy(np.stack(rows))
