"""``codegen-lsp bench gate``: what the suggestion gate shows, hides and saves, on held-out code.

Types the evaluation packages (``EVAL_PACKAGES`` of :mod:`gate_replay`, none of whose files
trained the gate or the model) through the suggestion service on a model (the shipped one by
default) twice: with ``filter: off`` and with ``filter: auto``. It prints and writes
(``gate.json``, ``gate.png`` in ``--out``):

- the replay table: the share of positions that show a suggestion, and of those shown, the
  share whose first word / first 10 characters / whole first line the file confirms; the
  model runs made;
- the threshold curve (from the ``off`` run's scores, the before-generation rules in force),
  with the default threshold's point, checked against the ``auto`` run;
- the before-generation gate: model runs skipped, and the confirmed suggestions it lost;
- threshold adaptation from accept counts, simulated on the ``off`` run (:mod:`gate_adapt`);
- trimming shown suggestions to their confident head, measured on the ``auto`` run
  (:mod:`gate_trim`; not shipped).

``--set KEY=VALUE`` passes server settings to both runs (e.g. ``quantize=none`` or
``dtype=float32``: the shipped model as a checkpoint the gate was not fitted on).

Quality figures, not timings: they do not move with the machine's load.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from codegen_lsp.commands.bench import gate_adapt, gate_replay, gate_trim
from codegen_lsp.commands.bench.probes import machine_info
from codegen_lsp.completion.gate import GATE_FILE, GateModel, load_gate

HELP = "the suggestion gate on held-out code: shown, confirmed, skipped (filter off vs auto)"
LEVELS = ("word", "chars10", "whole_line")
MIN_PLOTTED = 20  # the curve stops where fewer positions are shown


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``bench gate``."""
    p.add_argument("--model", help="checkpoint directory or hub id (default: the shipped model)")
    p.add_argument("--per-file", type=int, default=6, help="lines per file (start + mid-line)")
    p.add_argument("--files", type=int, default=40, help="files per package at most")
    p.add_argument("--out", default="bench/results", help="folder for gate.json and gate.png")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server setting for both runs (JSON value, else a string), e.g. quantize=none",
    )
    p.add_argument("--name", default="gate", help="file names: NAME.json, NAME-rows.json, NAME.png")


def settings_of(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as server settings (a value that is not JSON is a string)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def rates(rows: list[dict[str, Any]], shown: list[bool]) -> dict[str, float]:
    """Share of positions shown; of those, the share confirmed at each level."""
    picked = [r for r, s in zip(rows, shown, strict=True) if s]
    out = {"shown": len(picked) / max(1, len(rows))}
    for level in LEVELS:
        out[level] = sum(r[level] for r in picked) / max(1, len(picked))
    out["confirmed_word_per_position"] = sum(r["word"] for r in picked) / max(1, len(rows))
    return out


def offline(rows: list[dict[str, Any]], model: GateModel, threshold: float) -> list[bool]:
    """Which positions of an ``off`` replay the gate would show at ``threshold``."""
    rules = set(model.skip_rules)
    return [
        bool(r["text"]) and r["score"] >= threshold and not rules & set(r["rules"]) for r in rows
    ]


def summarize(off: list[dict[str, Any]], auto: list[dict[str, Any]], model: GateModel) -> dict:
    """The table, the curve and the before-gate figures of two replays of the same positions."""
    shown_off = [bool(r["text"]) for r in off]
    shown_auto = [r["shown"] for r in auto]
    after_only = [bool(r["text"]) and r["score"] >= model.threshold for r in off]
    skipped = [bool(r["skipped"]) for r in auto]
    lost = [s and o["word"] and bool(o["text"]) for s, o in zip(skipped, off, strict=True)]
    lost_shown = [
        lo and o["score"] >= model.threshold for lo, o in zip(lost, off, strict=True)
    ]  # lost ones the after-generation gate would have shown
    table = {
        "off": {**rates(off, shown_off), "model_runs": len(off)},
        "after-generation gate only": {**rates(off, after_only), "model_runs": len(off)},
        "auto": {**rates(auto, shown_auto), "model_runs": len(auto) - sum(skipped)},
    }
    curve = [
        {"threshold": t / 100, **rates(off, offline(off, model, t / 100))} for t in range(0, 100)
    ]
    predicted = offline(off, model, model.threshold)
    by_kind = {
        kind: {
            "off": rates(
                [r for r in off if r["kind"] == kind],
                [s for r, s in zip(off, shown_off, strict=True) if r["kind"] == kind],
            ),
            "auto": rates(
                [r for r in auto if r["kind"] == kind],
                [s for r, s in zip(auto, shown_auto, strict=True) if r["kind"] == kind],
            ),
        }
        for kind in ("start", "mid")
    }
    return {
        "positions": len(off),
        "threshold": model.threshold,
        "skip_rules": list(model.skip_rules),
        "table": table,
        "by_cursor": by_kind,
        "before_gate": {
            "runs_skipped": sum(skipped),
            "runs_skipped_share": sum(skipped) / max(1, len(off)),
            "confirmed_lost": sum(lost),
            "confirmed_lost_that_auto_would_show": sum(lost_shown),
            "confirmed_off": sum(r["word"] for r in off if r["text"]),
        },
        "auto_matches_offline": sum(p == s for p, s in zip(predicted, shown_auto, strict=True)),
        "curve": curve,
        "adaptation": {
            "target": model.accept_target,
            "step": gate_adapt.STEP,
            "walks": gate_adapt.simulate(
                off, model.threshold, model.accept_target, set(model.skip_rules)
            ),
        },
        "target": {
            "word_share_ratio": table["auto"]["word"] / max(1e-9, table["off"]["word"]),
            "shown_share": table["auto"]["shown"],
        },
    }


def markdown(result: dict[str, Any]) -> str:
    """The replay table as Markdown."""
    rows = [
        "| filter | positions shown | first word confirmed | first 10 chars | whole line "
        "| model runs |\n",
        "| --- | --- | --- | --- | --- | --- |\n",
    ]
    for name, r in result["table"].items():
        rows.append(
            f"| {name} | {r['shown']:.1%} | {r['word']:.1%} | {r['chars10']:.1%} "
            f"| {r['whole_line']:.1%} | {r['model_runs']} |\n"
        )
    return "".join(rows)


def adaptation_text(adaptation: dict[str, Any]) -> str:
    """The simulated threshold adaptation as lines of text."""
    lines = [
        f"threshold adaptation (simulated: accepted = first word confirmed; target "
        f"{adaptation['target']:.0%}, step {adaptation['step']}):"
    ]
    for w in adaptation["walks"]:
        f, a = w["fixed"], w["adapted"]
        lines.append(
            f"  start {w['start']} ({w['threshold']:.2f}): fixed {f['shown']:.1%} shown, "
            f"{f['word']:.1%} confirmed; adapted {a['shown']:.1%} shown, {a['word']:.1%} "
            f"confirmed, threshold {a['mean_threshold_last_half']:.2f} over the second half"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """The threshold curve: shown share and confirmed shares against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    enough = MIN_PLOTTED / max(1, result["positions"])  # fewer shown: the shares are noise
    curve = [c for c in result["curve"] if c["shown"] >= enough]
    x = [c["threshold"] for c in curve]
    fig, ax = plt.subplots(figsize=(8, 4.8))
    ax.plot(x, [c["shown"] for c in curve], "k-", label="positions shown a suggestion")
    names = {"word": "first word", "chars10": "first 10 chars", "whole_line": "whole line"}
    for level, name in names.items():
        ax.plot(x, [c[level] for c in curve], label=f"shown: {name} confirmed")
    t = result["threshold"]
    auto = result["table"]["auto"]
    ax.axvline(t, color="grey", linestyle=":", linewidth=1)
    ax.plot([t], [auto["shown"]], "ko")
    ax.plot([t], [auto["word"]], "o", color="C0")
    ax.annotate(f"default {t:.2f}", (t, auto["word"]), textcoords="offset points", xytext=(6, 6))
    ax.axhline(1 / 3, color="k", linestyle="--", linewidth=0.6, alpha=0.5)
    ax.set_xlabel("gate threshold (estimated chance the first word is taken)")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, 1)
    ax.set_title(f"suggestion gate, held-out code ({result['positions']} positions)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    """Replay with filter off and auto, summarize, write and print."""
    model = load_gate()
    if model is None:
        raise SystemExit(f"no gate data at {GATE_FILE} (python -m model.gate writes it)")
    items = gate_replay.positions(gate_replay.EVAL_PACKAGES, args.per_file, args.files)
    print(f"{len(items)} positions of {', '.join(gate_replay.EVAL_PACKAGES)}", flush=True)
    started = time.time()
    runs = {}
    extra = settings_of(args.set)
    for setting in ("off", "auto"):
        records = gate_replay.replay(args.model, items, {**extra, "filter": setting})
        runs[setting] = gate_replay.as_rows(records)
        print(f"filter {setting}: {time.time() - started:.0f} s", flush=True)
    result = {
        "suite": "gate",
        "model": args.model or "default",
        "settings": extra,
        "packages": gate_replay.versions(gate_replay.EVAL_PACKAGES),
        "machine": machine_info(),
        **summarize(runs["off"], runs["auto"], model),
        "trimming": gate_trim.measure(runs["auto"], items),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / f"{args.name}-rows.json").write_text(json.dumps(runs) + "\n")
    print(markdown(result))
    b = result["before_gate"]
    print(
        f"before-generation gate: {b['runs_skipped']} model runs skipped "
        f"({b['runs_skipped_share']:.1%}); confirmed first words lost {b['confirmed_lost']} "
        f"of {b['confirmed_off']} ({b['confirmed_lost_that_auto_would_show']} of them above "
        f"the threshold); auto run = offline prediction at {result['auto_matches_offline']}"
        f"/{result['positions']} positions"
    )
    print(adaptation_text(result["adaptation"]))
    print(gate_trim.text(result["trimming"]))
    try:
        plot(result, out / f"{args.name}.png")
    except ImportError:
        print("matplotlib missing: no plot (pip install 'codegen-lsp[bench]')")
    return 0
