"""Several runs side by side on one GPU in one short lease, and their weights brought back.

A GPU is limited by the data rather than by compute here (the stdlib training split is 8.7M
tokens: a few minutes of an H100/H200 make many passes), so the v2 sweep trained several
configurations at once, one ``python -m model.train train`` process each on the same GPU::

    python -m model.sweep run --configs v2-A,v2-B,v2-C,v2-D --work .gpu --out OUT  # GPU machine
    python -m model.sweep unpack --parts OUT --run v2-B      # here: -> codegen_lsp/default_model

``run`` waits for the runs (their longest ``minutes`` plus ``--grace``), exports each run's
best weights (fp16, published layout), and writes into OUT: ``summary.json`` (every run's
summary), ``train.log`` (every run's log) and the checkpoints of the runs that fit, the first
configuration always, then by best held-out score, as one tar split into
``models.tar.part-NN`` pieces of at most 15 MiB (the lease returns few, small files).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from model.config import load_config
from model.corpus import SHIP_DIR
from model.train import export

REPO = Path(__file__).resolve().parent.parent
PART_BYTES = 15 * 2**20
PACK_LIMIT = 58 * 2**20  # what the lease returns (64 MiB) less room for logs
SHIPPED = ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")


def cmd_run(args: argparse.Namespace) -> None:
    """Start one training process per configuration, wait, export and pack the results."""
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [load_config(name, args.overrides) for name in args.configs.split(",")]
    procs = {}
    for cfg in configs:
        run_dir = work / "runs" / cfg.name
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "model.train", "train", "--config", cfg.name]
        cmd += ["--work", str(work), "--device", args.device, *args.overrides]
        cmd += ["--smoke"] if args.smoke else []
        err = open(run_dir / "stderr.log", "w")
        procs[cfg.name] = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
    longest = max(cfg.minutes for cfg in configs) * 60 or 3600.0
    deadline = time.time() + longest + args.grace
    for name, proc in procs.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            print(f"{name}: killed at the deadline", flush=True)
    summaries: dict[str, dict] = {}
    exported = work / "export"
    for cfg in configs:
        run_dir = work / "runs" / cfg.name
        if (run_dir / "summary.json").is_file():
            summaries[cfg.name] = json.loads((run_dir / "summary.json").read_text())
            export(run_dir, work / cfg.data, exported / cfg.name)
            s = summaries[cfg.name]
            print(f"{cfg.name}: best held-out {s['best_heldout']} at step {s['best_step']}, "
                  f"{s['tokens_per_s']} tok/s, {s['passes']:.1f} passes", flush=True)  # fmt: skip

    def score(name: str) -> float:
        return (summaries.get(name, {}).get("best_heldout") or {}).get(args.rank, 9e9)

    names = [cfg.name for cfg in configs]
    buf, packed, size = io.BytesIO(), [], 0
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in names[:1] + sorted(names[1:], key=score):
            if name not in summaries:
                continue
            run_bytes = sum(f.stat().st_size for f in (exported / name).iterdir())
            if size + run_bytes > PACK_LIMIT:
                continue
            tar.add(exported / name, arcname=name)
            packed.append(name)
            size += run_bytes
    blob = buf.getvalue()
    for i in range(0, len(blob), PART_BYTES):
        (out / f"models.tar.part-{i // PART_BYTES:02d}").write_bytes(blob[i : i + PART_BYTES])
    with open(out / "train.log", "w") as log:
        for name in names:
            for part in ("stderr.log", "train.log"):
                path = work / "runs" / name / part
                if path.is_file():
                    log.write(f"==> {name}/{part}\n{path.read_text()}\n")
    report = {"packed": packed, "runs": summaries}
    (out / "summary.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"packed {packed} ({size / 2**20:.1f} MiB)", flush=True)


def cmd_unpack(args: argparse.Namespace) -> None:
    """Join the returned parts, extract every run under ``--into``, install ``--run`` if named."""
    parts = sorted(Path(args.parts).glob("models.tar.part-*"))
    blob = b"".join(p.read_bytes() for p in parts)
    into = Path(args.into)
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    print(f"extracted {sorted(p.name for p in into.iterdir())} into {into}")
    if args.run:
        for name in SHIPPED:
            shutil.copy(into / args.run / name, Path(args.ship) / name)
        print(f"installed run {args.run} into {args.ship}")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m model.sweep", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="train configurations side by side, pack the results")
    run.add_argument("--configs", required=True, help="comma-separated: v2-A,v2-B")
    run.add_argument("--work", default=".gpu", help="holds stdlib/ (python -m model.train prepare)")
    run.add_argument("--out", required=True)
    run.add_argument("--device", default="cuda")
    run.add_argument("--grace", type=float, default=90.0, help="seconds past the longest budget")
    run.add_argument("--rank", default="heldout", help="pack by this score (heldout_lib)")
    run.add_argument("--smoke", action="store_true", help="each run: 2 tiny steps")
    run.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="for every run")
    run.set_defaults(func=cmd_run)
    unpack = sub.add_parser("unpack", help="extract returned parts, install one run")
    unpack.add_argument("--parts", required=True, help="folder of models.tar.part-*")
    unpack.add_argument("--into", default="/work/train_state/gpu", help="extract here")
    unpack.add_argument("--run", default="", help="install this run into --ship")
    unpack.add_argument("--ship", default=str(SHIP_DIR))
    unpack.set_defaults(func=cmd_unpack)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
