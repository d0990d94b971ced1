"""The soak's report: latency buckets, the pass/fail summary, JSON and the RSS plot."""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


@dataclass
class Record:
    """Everything measured during a run."""

    rss: list[tuple[float, int, int]] = field(default_factory=list)  # (t, keystroke, bytes)
    kv: list[tuple[float, int, int, int]] = field(default_factory=list)  # (t, key, held, budget)
    latency: list[tuple[int, float, bool]] = field(default_factory=list)  # (key, ms, items?)
    failed: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    sent: int = 0
    keystroke: int = 0


def latency_buckets(latency: list[tuple[int, float, bool]], size: int) -> list[list[float]]:
    """[first keystroke, p50, p95, max] of the latencies of every ``size`` keystrokes."""
    buckets: dict[int, list[float]] = {}
    for key, ms, _ in latency:
        buckets.setdefault(key // size * size, []).append(ms)
    return [
        [start, round(percentile(v, 50), 1), round(percentile(v, 95), 1), round(max(v), 1)]
        for start, v in sorted(buckets.items())
    ]


def write_report(report: dict[str, Any], path: Path) -> None:
    """The report as JSON: figures indented, the long series one per line."""
    head = {k: v for k, v in report.items() if k != "series"}
    series = ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in report["series"].items())
    text = json.dumps(head, indent=1)[:-2] + ',\n "series": {\n' + series + "\n }\n}\n"
    path.write_text(text, encoding="utf-8")


def summarize(args: argparse.Namespace, record: Record, status: dict[str, Any]) -> dict[str, Any]:
    """The JSON report: figures, samples and checks."""
    mib = 2**20
    warm_key = int(args.keystrokes * args.warmup)
    window = max(1, args.keystrokes // 20)
    after = [r for _, k, r in record.rss if warm_key <= k < warm_key + window] or [
        r for _, k, r in record.rss if k >= warm_key
    ]
    last = [r for _, k, r in record.rss if k >= args.keystrokes - window]
    base = statistics.median(after) if after else 0
    end = statistics.median(last) if last else 0
    growth = (end - base) / base * 100 if base else float("inf")
    kv_max = max((held for _, _, held, _ in record.kv), default=0)
    budget = max((b for _, _, _, b in record.kv), default=0)
    ms = [lat for _, lat, _ in record.latency]
    ms_items = [lat for _, lat, items in record.latency if items]
    answered = len(record.latency)
    checks = {
        "all_answered": answered == record.sent and not record.failed,
        "rss_growth_ok": growth < args.max_growth,
        "kv_within_budget": 0 < budget and kv_max <= budget,
    }
    return {
        "keystrokes": args.keystrokes,
        "documents": args.documents,
        "interval_ms": args.interval_ms,
        "model": args.model or "default",
        "requests": {
            "sent": record.sent,
            "answered": answered,
            "with_suggestions": sum(1 for *_, items in record.latency if items),
            "failed": record.failed[:20],
        },
        "latency_ms": {
            name: round(value, 1)
            for name, value in (
                ("p50", percentile(ms, 50)),
                ("p95", percentile(ms, 95)),
                ("p99", percentile(ms, 99)),
                ("max", max(ms, default=0.0)),
                ("p50_with_suggestions", percentile(ms_items, 50)),
                ("p95_with_suggestions", percentile(ms_items, 95)),
            )
        },
        "rss_mib": {
            "start": round(record.rss[0][2] / mib, 2) if record.rss else 0,
            "after_warmup": round(base / mib, 2),
            "end": round(end / mib, 2),
            "max": round(max((r for *_, r in record.rss), default=0) / mib, 2),
            "growth_pct": round(growth, 2),
            "warmup_keystrokes": warm_key,
        },
        "kv_cache": {"max_bytes": kv_max, "budget_bytes": budget, "samples": len(record.kv)},
        "server": status,
        "messages": record.messages[:20],
        "checks": checks,
        "passed": all(checks.values()),
        "series": {
            "rss": [[round(t, 2), k, r] for t, k, r in record.rss],
            "kv": [[round(t, 2), k, held] for t, k, held, _ in record.kv],
            "latency": latency_buckets(record.latency, max(1, args.keystrokes // 100)),
        },
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """RSS, KV cache and latency against the keystroke number."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series, mib = report["series"], 2**20
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax1.plot([k for _, k, _ in series["rss"]], [r / mib for *_, r in series["rss"]], lw=1)
    ax1.axvline(report["rss_mib"]["warmup_keystrokes"], color="gray", ls="--", lw=1)
    ax1.set_ylabel("server RSS (MiB)")
    growth = report["rss_mib"]["growth_pct"]
    ax1.set_title(
        f"soak: {report['keystrokes']} keystrokes, RSS growth after warm-up {growth:+.2f}%"
    )
    ax2.plot([k for _, k, _ in series["kv"]], [h / mib for *_, h in series["kv"]], lw=1)
    ax2.axhline(
        report["kv_cache"]["budget_bytes"] / mib, color="red", ls="--", lw=1, label="budget"
    )
    ax2.set_ylabel("KV cache (MiB)")
    ax2.legend(loc="center right")
    starts = [b[0] for b in series["latency"]]
    for column, label in ((1, "p50"), (2, "p95"), (3, "max")):
        ax3.plot(starts, [b[column] for b in series["latency"]], lw=1, label=label)
    ax3.set_yscale("log")
    ax3.set_ylabel("latency (ms)")
    ax3.legend(loc="upper right")
    ax3.set_xlabel("keystroke")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
