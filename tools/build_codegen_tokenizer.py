"""Build Salesforce CodeGen's tokenizer files from GPT-2's BPE ranks.

CodeGen ships GPT-2's byte-level BPE (50257 ids, ``<|endoftext|>`` = 50256) plus 38
non-special whitespace tokens: runs of 31..2 spaces at ids 50257..50286 and runs of
9..2 tabs at ids 50287..50294. The GPT-2 ranks come from ``whisper/assets/gpt2.tiktoken``
in the openai-whisper sdist on PyPI (MIT licence); a tiktoken file stores one
``base64(token bytes) rank`` pair per line, without the merges. Each merge is recovered
by re-running BPE over a token's bytes while allowing only lower ranks: the two parts
left at the end are the pair whose merge made the token.

Usage::

    python tools/build_codegen_tokenizer.py OUT_DIR [--tiktoken PATH]

PATH is either ``gpt2.tiktoken`` or the openai-whisper sdist (``.tar.gz``). Without
``--tiktoken`` the sdist is fetched with ``pip download``. The output directory holds
``vocab.json``, ``merges.txt``, ``added_tokens.json``, ``special_tokens_map.json`` and
``tokenizer_config.json`` (the layout of the published Salesforce checkpoints, loadable by
transformers) and ``tokenizer.json`` (one file for the ``tokenizers`` library).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE

WHISPER_SDIST = "openai-whisper==20250625"
TIKTOKEN_MEMBER = "whisper/assets/gpt2.tiktoken"
TIKTOKEN_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOS = "<|endoftext|>"
EOS_ID = 50256
MAX_SPACES = 31
MAX_TABS = 9


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-in character for each byte value 0..255."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table: list[str] = [""] * 256
    for b in kept:
        table[b] = chr(b)
    shifted = 0
    for b in range(256):
        if not table[b]:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def read_tiktoken(data: bytes) -> dict[bytes, int]:
    """Parse tiktoken's ``base64 rank`` lines into a bytes -> rank table."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(data.decode("ascii").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise ValueError(f"tiktoken line {number}: expected 'base64 rank', got {line!r}")
        ranks[base64.b64decode(fields[0])] = int(fields[1])
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError("tiktoken ranks are not the contiguous range 0..N-1")
    return ranks


def split_at_rank(token: bytes, ranks: dict[bytes, int], below: int) -> list[bytes]:
    """Run byte-pair merging over ``token`` using only ranks lower than ``below``."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best_rank, best_at = below, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_rank, best_at = rank, i
        if best_at < 0:
            break
        parts[best_at : best_at + 2] = [parts[best_at] + parts[best_at + 1]]
    return parts


def recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list, in rank order, that rebuilds every multi-byte token."""
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = split_at_rank(token, ranks, rank)
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not one merge of lower ranks")
        merges.append((parts[0], parts[1]))
    return merges


def whitespace_tokens() -> dict[str, int]:
    """CodeGen's 38 extra tokens: runs of 31..2 spaces, then runs of 9..2 tabs."""
    tokens = {" " * n: EOS_ID + 1 + MAX_SPACES - n for n in range(MAX_SPACES, 1, -1)}
    first_tab = EOS_ID + MAX_SPACES
    tokens.update({"\t" * n: first_tab + MAX_TABS - n for n in range(MAX_TABS, 1, -1)})
    return tokens


def load_tiktoken_bytes(path: Path | None) -> bytes:
    """Read gpt2.tiktoken from a file, an sdist, or a freshly downloaded sdist."""
    if path is None:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", WHISPER_SDIST]
            subprocess.run([*command, "-d", tmp], check=True, stdout=sys.stderr)
            archives = sorted(Path(tmp).glob("*.tar.gz"))
            if not archives:
                raise ValueError(f"pip download {WHISPER_SDIST} produced no sdist")
            return load_tiktoken_bytes(archives[0])
    if path.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith("/" + TIKTOKEN_MEMBER):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        return handle.read()
        raise ValueError(f"{path}: no {TIKTOKEN_MEMBER} inside")
    return path.read_bytes()


def build_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], added: dict[str, int]
) -> Tokenizer:
    """A ``tokenizers`` Tokenizer equal to transformers' CodeGen tokenizer."""
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    for content, expected_id in sorted(added.items(), key=lambda item: item[1]):
        tokenizer.add_tokens([AddedToken(content, special=False, normalized=True)])
        if tokenizer.token_to_id(content) != expected_id:
            raise ValueError(f"added token {content!r} did not land on id {expected_id}")
    return tokenizer


def write_json(path: Path, value: object) -> None:
    """Write JSON as UTF-8 with a trailing newline."""
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def build(out_dir: Path, tiktoken: Path | None) -> None:
    """Write CodeGen's tokenizer files into ``out_dir``."""
    data = load_tiktoken_bytes(tiktoken)
    digest = hashlib.sha256(data).hexdigest()
    if digest != TIKTOKEN_SHA256:
        print(
            f"warning: gpt2.tiktoken sha256 {digest} differs from the known file", file=sys.stderr
        )
    ranks = read_tiktoken(data)
    if len(ranks) != EOS_ID:
        raise ValueError(f"expected {EOS_ID} GPT-2 ranks, found {len(ranks)}")
    alphabet = byte_alphabet()

    def to_text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {to_text(token): rank for token, rank in ranks.items()}
    vocab[EOS] = EOS_ID
    vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
    merges = [(to_text(a), to_text(b)) for a, b in recover_merges(ranks)]
    added = whitespace_tokens()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(
        json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    merge_lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (out_dir / "merges.txt").write_text("\n".join(merge_lines) + "\n", encoding="utf-8")
    write_json(out_dir / "added_tokens.json", added)
    specials = {"bos_token": EOS, "eos_token": EOS, "unk_token": EOS}
    write_json(out_dir / "special_tokens_map.json", specials)
    config = {
        "tokenizer_class": "CodeGenTokenizer",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        **specials,
    }
    write_json(out_dir / "tokenizer_config.json", config)
    build_tokenizer(vocab, merges, added).save(str(out_dir / "tokenizer.json"), pretty=False)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the tokenizer files into")
    parser.add_argument(
        "--tiktoken", type=Path, help="gpt2.tiktoken or the openai-whisper sdist (.tar.gz)"
    )
    args = parser.parse_args(argv)
    try:
        build(args.out_dir, args.tiktoken)
    except (OSError, ValueError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote CodeGen tokenizer files to {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
