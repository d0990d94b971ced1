"""Evaluation of a default model on the v3 held-out splits: loss, line completion, infill.

    python model/evaluate_v3.py --model DIR --name v3 [--out model/eval.json]

- **Loss** (nats/token) and bits per byte on the stdlib held-out split (v2's, so the figures
  compare with v2's card) and on the held-out packages (``heldout-package``: code of packages
  no file of which was trained on), scored as ``evaluate.py`` does (windows of the model's
  context, stride 256), beside ``xz -9`` and ``gzip -9`` on the same bytes.
- **Line completion through the server's code path** (``SuggestionService`` on the worker,
  the prompt window, stop rules and filters of a keystroke): for each sampled held-out line
  the document is the file up to that line's indentation, the cursor stands after the
  indentation, nothing follows; the one-line suggestion is compared with the real line:
  exact match (trailing whitespace ignored) and edit similarity (1 - Levenshtein / longer).
- **Infill**: the same lines with the rest of the file after the cursor line (the line itself
  emptied), so a model with CodeGen2's infill tokens gets the suffix (``fim`` auto).

Lines are drawn deterministically: per file, lines of 8-100 characters that are not comments,
not blank, and not the file's first 5, ranked by sha256(path, line number); ``--lines-per-file``
of them from each of the first ``--files`` files of each split in sha256(path) order. Nothing
generated is executed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from corpus import EOS_ID  # noqa: E402
from evaluate import compressed_bits, score  # noqa: E402
from packages import read_corpus, read_manifest_v3  # noqa: E402

SPLITS = {"stdlib": ("stdlib", "heldout"), "packages": (None, "heldout-package")}


def held_out_texts(split: str) -> list[tuple[str, str]]:
    """(path, text) of one evaluation split, checked against the manifest, in the order of
    sha256(path): a budget of files or tokens takes a spread of the split, not its first
    directories."""
    package, name = SPLITS[split]
    rows = [f for f in read_manifest_v3() if f.split == name]
    rows = [f for f in rows if package is None or f.package == package]
    texts = [(f"{f.package}/{f.rel}", text) for f, text in read_corpus(rows, (name,))]
    return sorted(texts, key=lambda item: hashlib.sha256(item[0].encode()).digest())


def loss(model_dir: str, texts: list[str], max_tokens: int) -> dict[str, float]:
    """Held-out loss, bits per byte and the compressors' bits per byte on ``texts``."""
    from codegen_lsp.codegen.checkpoint import load_model

    model = load_model(model_dir, dtype=torch.float32)
    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    ids, kept = [], []
    total = 0
    for text, enc in zip(
        texts, tokenizer.encode_batch(texts, add_special_tokens=False), strict=True
    ):
        if max_tokens and total + len(enc.ids) > max_tokens:
            break
        ids.append([EOS_ID, *enc.ids])
        kept.append(text.encode("utf-8"))
        total += len(enc.ids)
    t0 = time.time()
    nats = score(model, ids, 256, 8)
    n_bytes = sum(map(len, kept))
    out = {"files": len(ids), "bytes": n_bytes, "tokens": total, "loss": nats / total}
    out["bits_per_byte"] = nats / math.log(2) / n_bytes
    for name, command in (("xz", ["xz", "-9", "-c"]), ("gzip", ["gzip", "-9", "-n", "-c"])):
        per_file, joined = compressed_bits(kept, command)
        out[f"{name}_bpb_per_file"] = per_file / n_bytes
        out[f"{name}_bpb_concatenated"] = joined / n_bytes
    out["seconds"] = round(time.time() - t0, 1)
    return out


def sample_lines(
    texts: list[tuple[str, str]], files: int, per_file: int
) -> list[tuple[str, str, int]]:
    """(path, text, line number) of the evaluation lines (see the module docstring)."""
    out = []
    for path, text in texts[:files]:
        lines = text.split("\n")
        good = [
            i
            for i, line in enumerate(lines)
            if i >= 5 and 8 <= len(line.strip()) <= 100 and not line.strip().startswith("#")
        ]
        good.sort(key=lambda i: hashlib.sha256(f"{path}:{i}".encode()).digest())
        out.extend((path, text, i) for i in sorted(good[:per_file]))
    return out


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein distance / the longer length (1.0 for two empty strings)."""
    if not a and not b:
        return 1.0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return 1 - previous[-1] / max(len(a), len(b))


def completions(model_dir: str, samples: list[tuple[str, str, int]], infill: bool) -> list[dict]:
    """One suggestion per sample through the server's suggestion service."""
    from codegen_lsp.completion.context import Cursor
    from codegen_lsp.completion.languages import language_for
    from codegen_lsp.completion.service import SuggestionService
    from codegen_lsp.engine.loader import load_engine
    from codegen_lsp.engine.worker import Worker
    from codegen_lsp.server.documents import split_lines
    from codegen_lsp.server.settings import parse_settings

    settings, problems, _ = parse_settings(
        {"model": model_dir, "multiline": "never", "maxNewTokens": 48, "fim": "auto"}
    )
    assert not problems, problems
    worker = Worker(load_engine)
    rows = []
    try:
        engine = worker.load(settings.engine_spec(), lambda *_: None).result()
        service = SuggestionService(worker, lambda message: None)
        service.ready = lambda: ""
        service.configure(settings.completion_options(engine.info))
        language = language_for("python", "x.py")
        for n, (path, text, line) in enumerate(samples):
            lines = text.split("\n")
            target = lines[line]
            indent = target[: len(target) - len(target.lstrip())]
            after = lines[line + 1 :] if infill else []
            document = "\n".join([*lines[:line], indent, *after])
            cursor = Cursor.at(split_lines(document), line, len(indent), language, path)
            service.reset()
            out = asyncio.run(service.suggest(f"doc{n}", lambda c=cursor: c))
            got = (out.texts[0] if out.texts else "").split("\n")[0].rstrip()
            want = target.strip()
            rows.append(
                {
                    "path": path,
                    "line": line,
                    "want": want,
                    "got": got,
                    "exact": got == want,
                    "similarity": edit_similarity(got, want),
                }  # fmt: skip
            )
    finally:
        worker.close()
    return rows


def summary(rows: list[dict]) -> dict[str, float]:
    """Exact-match share and mean edit similarity."""
    n = max(1, len(rows))
    return {
        "lines": len(rows),
        "exact": sum(r["exact"] for r in rows) / n,
        "similarity": sum(r["similarity"] for r in rows) / n,
    }


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: evaluate one model, merge into the JSON file under ``--name``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", required=True, help="key in the output (v2, v3)")
    parser.add_argument("--out", default=str(HERE / "eval.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--files", type=int, default=80, help="files per split for lines")
    parser.add_argument("--lines-per-file", type=int, default=2)
    parser.add_argument("--package-tokens", type=int, default=400_000, help="loss budget")
    parser.add_argument("--skip-loss", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result: dict[str, object] = {"model": args.model}
    samples = []
    for split in SPLITS:
        texts = held_out_texts(split)
        if not args.skip_loss:
            budget = 0 if split == "stdlib" else args.package_tokens
            result[f"loss_{split}"] = loss(args.model, [t for _, t in texts], budget)
            print(split, json.dumps(result[f"loss_{split}"]), flush=True)
        samples += sample_lines(texts, args.files, args.lines_per_file)
    for kind, infill in (("line", False), ("infill", True)):
        rows = completions(args.model, samples, infill)
        result[kind] = summary(rows)
        result[f"{kind}_rows"] = rows
        print(kind, json.dumps(result[kind]), flush=True)
    out = Path(args.out)
    merged = json.loads(out.read_text()) if out.exists() else {}
    if merged and "v2" not in merged:  # the v2-era file: its figures are v2's
        merged = {"v2": merged}
    merged[args.name] = {**merged.get(args.name, {}), **result}
    out.write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
