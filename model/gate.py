"""Train the suggestion gate shipped beside the default model (``default_model/gate.json``).

Run from the repository root::

    python -m model.gate                   # replay (or reuse the saved replay), fit, write
    python -m model.gate --fresh           # replay again
    python -m model.gate --model DIR --fresh --out DIR/gate.json --runs DIR/gate-runs
                                           # a gate for another checkpoint (its own replay)

1. **Replay**: held-out code (``TRAIN_PACKAGES`` of ``codegen_lsp/commands/bench/gate_replay``:
   installed packages the model never saw, none of them used to evaluate the gate) is typed
   through the real suggestion service on the shipped model with ``filter: off``, cursors at
   line starts and mid-line; each suggestion's features (``codegen_lsp/completion/gate.py``)
   and how much of it the file confirms are recorded (``model/runs/gate/train-replay.json``).
2. **Fit**: a logistic regression (L2, standardised features, full-batch L-BFGS in torch)
   predicts "the first word is confirmed".
3. **Threshold and rules**: among the thresholds that still show a suggestion at
   ``MIN_SHOWN`` of the positions, the lowest at which the shown suggestions' first words are
   confirmed ``TARGET_RATIO`` times as often as with the filter off (else the highest of
   them), read from out-of-fold scores (``FOLDS``-fold cross-validation by file: scores of
   files the fit did not see, as in use); a before-generation rule is put in force when, at the
   positions it covers, the after-generation gate shows a confirmed suggestion at most
   ``RULE_MAX_RATE`` of the time (the model run there is almost always wasted); then the
   threshold is chosen again with the rules in force. ``HAND_RULES`` (inside a word: text
   follows the cursor, which a typing replay never has) are in force without data.
4. **Write** ``codegen_lsp/default_model/gate.json`` and ``model/runs/gate/fit.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from codegen_lsp.commands.bench import gate_replay
from codegen_lsp.completion.gate import FEATURES, FORMAT, GATE_FILE, SKIP_RULES

RUNS = Path(__file__).resolve().parent / "runs" / "gate"
PER_FILE = 8  # lines per file (each replayed at its start and mid-line)
FILES = 40  # files per package at most
L2 = 1e-2
FOLDS = 5
# In force whatever the replay says: a replay types the file up to the cursor, so nothing ever
# follows it and this rule never holds there; a suggestion would go into the middle of a word.
HAND_RULES = ("inside a word",)
RULE_MAX_RATE = 0.05  # a rule whose positions get a shown, confirmed word more often: off
MIN_SHOWN = 1 / 3  # share of positions that must still show a suggestion (the target)
TARGET_RATIO = 2.0  # first words confirmed, shown vs all (the target for the default)


def fit(x: list[list[float]], y: list[bool]) -> tuple[list[float], list[float], list[float], float]:
    """(mean, scale, weights, bias) of the logistic regression of ``y`` on ``x``."""
    data = torch.tensor(x, dtype=torch.float64)
    mean = data.nanmean(0).nan_to_num(0.0)
    data = torch.where(data.isnan(), mean, data)  # what the engine could not tell: the mean
    scale = data.std(0).clamp_min(1e-6)
    z = (data - mean) / scale
    target = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, target)
        loss = loss + L2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mean.tolist(), scale.tolist(), w.detach().tolist(), float(b.detach())


def score(
    row: list[float], mean: list[float], scale: list[float], w: list[float], b: float
) -> float:
    """The fitted model's probability for features ``row`` (as the gate computes it)."""
    zsum = b + sum(
        wi * (v - m) / s
        for wi, v, m, s in zip(w, row, mean, scale, strict=True)
        if not math.isnan(v)
    )
    return 1 / (1 + math.exp(-max(-60.0, min(60.0, zsum))))


def out_of_fold(rows: list[dict[str, Any]]) -> list[float]:
    """Each row's score from a fit on the other folds' files (0 where there is no text):
    the scores the gate gives to code it was not fitted on."""
    files = sorted({r["path"] for r in rows}, key=lambda p: hashlib.sha256(p.encode()).digest())
    fold = {path: i % FOLDS for i, path in enumerate(files)}
    scores = [0.0] * len(rows)
    for k in range(FOLDS):
        train = [r for r in rows if r["text"] and fold[r["path"]] != k]
        mean, scale, w, b = fit([r["values"] for r in train], [r["word"] for r in train])
        for i, r in enumerate(rows):
            if r["text"] and fold[r["path"]] == k:
                scores[i] = score(r["values"], mean, scale, w, b)
    return scores


def choose_rules(
    rows: list[dict[str, Any]], scores: list[float], threshold: float
) -> tuple[list[str], dict[str, Any]]:
    """The before-generation rules in force, and every rule's figures on the replay."""
    figures = {}
    chosen = []
    for name in SKIP_RULES:
        covered = [(r, s) for r, s in zip(rows, scores, strict=True) if name in r["rules"]]
        confirmed = sum(r["word"] for r, _ in covered if r["text"])
        useful = sum(r["word"] for r, s in covered if r["text"] and s >= threshold)
        rate = useful / len(covered) if covered else 0.0
        figures[name] = {
            "positions": len(covered),
            "confirmed_off": confirmed,
            "shown_and_confirmed": useful,
            "rate": rate,
        }
        if (covered and rate <= RULE_MAX_RATE) or name in HAND_RULES:
            chosen.append(name)
    return chosen, figures


def choose_threshold(rows: list[dict[str, Any]], scores: list[float], rules: list[str]) -> float:
    """The lowest threshold (in steps of 0.01) at which the shown suggestions' first words
    are confirmed TARGET_RATIO times as often as with the filter off, among those that still
    show a suggestion at MIN_SHOWN of the positions; when none does, the highest of those."""
    kept = [
        (s, r["word"])
        for r, s in zip(rows, scores, strict=True)
        if r["text"] and not set(r["rules"]) & set(rules)
    ]
    with_text = [r["word"] for r in rows if r["text"]]
    off = sum(with_text) / max(1, len(with_text))
    allowed = []
    for step in range(100):
        t = step / 100
        shown = [word for s, word in kept if s >= t]
        if len(shown) / len(rows) >= MIN_SHOWN:
            allowed.append((t, sum(shown) / max(1, len(shown))))
    if not allowed:
        return 0.0
    reaching = [t for t, rate in allowed if rate >= TARGET_RATIO * off]
    return reaching[0] if reaching else allowed[-1][0]


def main(argv: list[str] | None = None) -> None:
    """Replay, fit and write the gate."""
    parser = argparse.ArgumentParser(prog="python -m model.gate", description=__doc__)
    parser.add_argument("--fresh", action="store_true", help="replay even if saved")
    parser.add_argument("--out", default=str(GATE_FILE))
    parser.add_argument("--model", help="checkpoint to replay (default: the shipped model)")
    parser.add_argument("--runs", default=str(RUNS), help="folder for the replay and fit.json")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    saved = runs / "train-replay.json"
    if args.fresh or not saved.exists():
        items = gate_replay.positions(gate_replay.TRAIN_PACKAGES, PER_FILE, FILES)
        print(f"replaying {len(items)} positions", file=sys.stderr)
        started = time.time()
        records = gate_replay.replay(
            args.model, items, {"filter": "off"}, lambda m: print(m, file=sys.stderr)
        )
        run = {
            "packages": gate_replay.versions(gate_replay.TRAIN_PACKAGES),
            "per_file": PER_FILE,
            "files_per_package": FILES,
            "seconds": round(time.time() - started, 1),
            "features": list(FEATURES),
            "rows": gate_replay.as_rows(records),
        }
        saved.write_text(json.dumps(run) + "\n")
    run = json.loads(saved.read_text())
    rows = run["rows"]
    with_text = [r for r in rows if r["text"]]
    x = [r["values"] for r in with_text]
    y = [r["word"] for r in with_text]
    mean, scale, w, b = fit(x, y)
    scores_by_row = out_of_fold(rows)
    first = choose_threshold(rows, scores_by_row, [])
    rules, rule_figures = choose_rules(rows, scores_by_row, first)
    threshold = choose_threshold(rows, scores_by_row, rules)
    shown = [
        bool(r["text"]) and s >= threshold and not set(r["rules"]) & set(rules)
        for s, r in zip(scores_by_row, rows, strict=True)
    ]  # out of fold: as on code the fit did not see
    word_auto = sum(r["word"] for r, s in zip(rows, shown, strict=True) if s) / max(1, sum(shown))
    data = {
        "format": FORMAT,
        "about": "suggestion gate of the shipped default model; written by python -m model.gate",
        "features": list(FEATURES),
        "mean": [round(v, 6) for v in mean],
        "scale": [round(v, 6) for v in scale],
        "weights": [round(v, 6) for v in w],
        "bias": round(b, 6),
        "threshold": threshold,
        "accept_target": round(word_auto, 4),
        "skip_rules": rules,
        "trained_on": {"packages": run["packages"], "positions": len(rows)},
    }
    Path(args.out).write_text(json.dumps(data, indent=1) + "\n")
    summary = {
        "positions": len(rows),
        "with_suggestion": len(with_text),
        "word_rate_off": sum(y) / max(1, len(rows)),
        "word_rate_of_suggestions_off": sum(y) / max(1, len(y)),
        "threshold": threshold,
        "rules": rule_figures,
        "rules_in_force": rules,
        "out_of_fold": {
            "shown_share_auto": sum(shown) / len(rows),
            "word_rate_of_shown_auto": word_auto,
            "ratio_vs_off": word_auto / max(1e-9, sum(y) / max(1, len(y))),
        },
        "weights": dict(zip(FEATURES, data["weights"], strict=True)),
    }
    (runs / "fit.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
