"""Keystroke replay and throughput measurements over any :class:`Backend`.

Keystroke replay types a real standard-library module one character at a time, with about
1,000 tokens of context before the cursor (the window start is a fixed line start, as the
completion layer keeps it while the user types), and asks for a suggestion at every
keystroke. Throughput is prefill tokens per second for prompts of several lengths and
decode milliseconds per token at a given context.
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

from codegen_lsp.commands.bench.backends import Backend, Timing

Encode = Callable[[str], list[int]]


@dataclass
class Keystrokes:
    """Where the replay types: ``text[window:cursor + k]`` is the k-th prompt."""

    text: str
    window: int
    cursor: int
    source: str


def module_text(name: str = "argparse") -> tuple[str, str]:
    """Source text and file name of a standard-library module."""
    module = import_module(name)
    path = inspect.getsourcefile(module)
    if path is None:
        raise ValueError(f"module {name} has no source file")
    return Path(path).read_text(encoding="utf-8"), path


def place_cursor(
    text: str, encode: Encode, context_tokens: int, keystrokes: int, source: str
) -> Keystrokes:
    """A cursor at a line start with ``context_tokens`` tokens before it in the window."""
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    # put the cursor where enough text follows for every keystroke
    cursor = next((s for s in starts if s > len(text) * 0.3 and len(text) - s > keystrokes + 10), 0)
    lo, hi = 0, len([s for s in starts if s < cursor]) - 1
    while lo < hi:  # latest window start with at least context_tokens tokens
        mid = (lo + hi + 1) // 2
        if len(encode(text[starts[mid] : cursor])) >= context_tokens:
            lo = mid
        else:
            hi = mid - 1
    return Keystrokes(text, starts[lo], cursor, source)


@dataclass
class ReplayResult:
    """Per-keystroke figures of one backend."""

    name: str
    indices: list[int] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    prefilled: list[int | None] = field(default_factory=list)
    reused: list[int | None] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """p50/p95 latency, time to first token, prefilled/reused medians."""
        out: dict[str, Any] = {"keystrokes": len(self.ms)}
        if self.ms:
            out["p50_ms"] = percentile(self.ms, 50)
            out["p95_ms"] = percentile(self.ms, 95)
            out["first_token_p50_ms"] = percentile(self.first_ms, 50)
            out["prompt_tokens_median"] = statistics.median(self.prompt_tokens)
        known = [p for p in self.prefilled if p is not None]
        if known:
            out["prefilled_median"] = statistics.median(known)
            out["prefilled_mean"] = statistics.fmean(known)
            out["reused_median"] = statistics.median([r or 0 for r in self.reused])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, for the JSON report."""
        return {**asdict(self), "summary": self.summary()}


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


@dataclass
class Entry:
    """A backend in the comparison: which keystrokes it replays, how to forget its cache."""

    backend: Backend
    keys: set[int]
    reset: Callable[[], None] | None = None
    heal: bool = False

    def run(self, ids: list[int], new_tokens: int) -> Timing:
        """One call, healing the prompt where the backend supports it."""
        if self.heal:
            return self.backend.run(ids, new_tokens, heal=True)  # type: ignore[call-arg]
        return self.backend.run(ids, new_tokens)


def replay_all(
    entries: Sequence[Entry],
    ks: Keystrokes,
    encode: Encode,
    total: int,
    new_tokens: int,
    log: Callable[[str], None] | None = None,
) -> list[ReplayResult]:
    """Type ``total`` characters; after each, every backend replaying it suggests.

    Backends take turns at each keystroke, so a change in the machine's load hits all of
    them alike."""
    results = [ReplayResult(e.backend.name) for e in entries]
    warm = encode(ks.text[ks.window : ks.cursor])
    for entry in entries:
        entry.run(warm, new_tokens)  # one-time costs are not a keystroke's
    for k in range(total):
        ids = encode(ks.text[ks.window : ks.cursor + k + 1])
        for entry, result in zip(entries, results, strict=True):
            if k not in entry.keys:
                continue
            timing = entry.run(ids, new_tokens)
            result.indices.append(k)
            result.ms.append(timing.ms)
            result.first_ms.append(timing.first_ms)
            result.prompt_tokens.append(len(ids))
            result.prefilled.append(timing.prefilled)
            result.reused.append(timing.reused)
        if log and (k % 25 == 0 or k == total - 1):
            last = ", ".join(f"{r.name} {r.ms[-1]:.0f}" for r in results if r.indices[-1:] == [k])
            log(f"  keystroke {k + 1}/{total}: {last} ms")
    return results


def spread(total: int, count: int) -> list[int]:
    """``count`` keystroke indices spread evenly over ``range(total)``."""
    if count >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / max(1, count - 1)) for i in range(count)})


def throughput_all(
    entries: Sequence[Entry],
    ids: list[int],
    prefill_lengths: Sequence[int],
    decode_context: int,
    decode_tokens: int,
    repeats: int,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Prefill tok/s per prompt length and decode ms/token, best of ``repeats``, with the
    backends taking turns at every measurement."""
    out: list[dict[str, Any]] = [
        {"prefill_tok_s": {}, "prefill_ms": {}, "decode_context": decode_context} for _ in entries
    ]
    for length in prefill_lengths:
        for _ in range(repeats):
            for entry, data in zip(entries, out, strict=True):
                if entry.reset:
                    entry.reset()
                ms = entry.backend.run(ids[:length], 1).first_ms
                best = min(ms, data["prefill_ms"].get(str(length), float("inf")))
                data["prefill_ms"][str(length)] = best
                data["prefill_tok_s"][str(length)] = length / best * 1000
        if log:
            log(f"  prefill {length}: done")
    for _ in range(repeats):
        for entry, data in zip(entries, out, strict=True):
            decode = entry.backend.run(ids[:decode_context], decode_tokens).decode_ms
            if decode is not None:
                data["decode_ms_per_token"] = min(decode, data.get("decode_ms_per_token", 1e9))
    return out


def plot(panels: dict[str, Sequence[ReplayResult]], path: Path) -> None:
    """Latency per keystroke: one panel per model, one series per backend (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 4.5 * len(panels)), squeeze=False)
    for ax, (title, results) in zip(axes[:, 0], panels.items(), strict=True):
        for res in results:
            style = "-" if len(res.ms) > 40 else "o--"
            ax.plot(res.indices, res.ms, style, label=res.name, markersize=4, linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("keystroke")
        ax.set_ylabel("time to suggestion (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
