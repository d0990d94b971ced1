"""CPU training on a shared 2-core machine: pick the faster of 1 and 2 intra-op threads."""

from __future__ import annotations

import torch


class ThreadChooser:
    """Pick the faster of 1 and 2 intra-op threads, re-probing now and then.

    On a shared 2-core machine two OpenMP threads can be much slower than one when another
    process holds a core (every parallel region waits for the descheduled thread).
    """

    def __init__(self, setting: str, probe_every: int = 200, probe_len: int = 4) -> None:
        self.fixed = None if setting == "auto" else int(setting)
        self.probe_every, self.probe_len = probe_every, probe_len
        self.count = 0
        self.times: dict[int, list[float]] = {1: [], 2: []}
        torch.set_num_threads(self.fixed or 2)

    def record(self, seconds: float) -> None:
        """Note one step's time and maybe switch the thread count for the next step."""
        self.count += 1
        if self.fixed:
            return
        phase = self.count % self.probe_every
        if 1 <= phase <= 2 * self.probe_len:
            n = torch.get_num_threads()
            if phase > 1:  # the first step after a switch is a warm-up
                self.times[n].append(seconds)
            torch.set_num_threads(1 if phase <= self.probe_len else 2)
            if phase == 2 * self.probe_len:
                best = min((1, 2), key=lambda k: sorted(self.times[k])[len(self.times[k]) // 2])
                self.times = {1: [], 2: []}
                torch.set_num_threads(best)
