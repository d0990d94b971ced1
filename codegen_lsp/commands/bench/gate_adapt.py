"""Threshold adaptation from accept counts, simulated on a typing replay (``bench gate``).

The question (issue 26): would moving the gate's threshold toward a target acceptance rate,
from the counts an editor reports (shown, accepted), show better suggestions than the fixed
threshold? A replay with ``filter: off`` has, at every position, the gate's score of the
suggestion and whether the file confirms its first word; the simulation walks the positions in
replay order (files top to bottom, as a user types them) and plays the user: a shown
suggestion whose first word is confirmed counts as accepted. After each shown suggestion the
threshold moves by ``step * (target - accepted)`` (a stochastic-approximation controller: it
settles where the share accepted of the shown is ``target``), bounded to ``[low, high]``.

It is compared with the fixed threshold it starts from: started at the default, and started
deliberately wrong (too low and too high, as a checkpoint whose scores run high or low would
be). Nothing here runs a model: it reads the rows of a replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STEP = 0.01  # threshold change per shown suggestion, times (target - accepted)
LOW, HIGH = 0.05, 0.95  # the bounds the threshold moves within


@dataclass(frozen=True)
class Walk:
    """One simulated session: shares of positions shown, of the shown confirmed, and the
    threshold it ended at."""

    shown: float
    word: float
    confirmed_per_position: float
    final_threshold: float
    mean_threshold_last_half: float


def walk(
    rows: list[dict[str, Any]],
    start: float,
    target: float | None,
    rules: set[str],
    step: float = STEP,
) -> Walk:
    """Play ``rows`` (an ``off`` replay, in order) with the threshold starting at ``start``;
    ``target`` None keeps it fixed."""
    t = start
    shown = confirmed = 0
    seen: list[float] = []
    for r in rows:
        if not r["text"] or rules & set(r["rules"]):
            continue
        seen.append(t)
        if r["score"] < t:
            continue
        shown += 1
        confirmed += bool(r["word"])
        if target is not None:
            t = min(HIGH, max(LOW, t + step * (target - bool(r["word"]))))
    half = seen[len(seen) // 2 :] or [t]
    return Walk(
        shown / max(1, len(rows)),
        confirmed / max(1, shown),
        confirmed / max(1, len(rows)),
        t,
        sum(half) / len(half),
    )


def simulate(
    rows: list[dict[str, Any]], default: float, target: float, rules: set[str]
) -> list[dict[str, Any]]:
    """Fixed and adapted thresholds from the default and from wrong starts."""
    out = []
    for name, start in (("default", default), ("too low", 0.1), ("too high", 0.8)):
        fixed = walk(rows, start, None, rules)
        adapted = walk(rows, start, target, rules)
        out.append(
            {"start": name, "threshold": start, "fixed": vars(fixed), "adapted": vars(adapted)}
        )
    return out
