"""Fault injection for tests, off unless the ``CODEGEN_LSP_FAULT`` environment variable is set.

``CODEGEN_LSP_FAULT=generate_once``: the first generation fails inside the worker thread, in
the middle of decoding (its stop check raises at the first generated text), the way a
real engine error would. The request answers empty, the user sees one message, and the next
request runs normally. ``slow_load``: the first model load waits 6 s before it starts
(``CODEGEN_LSP_SLOW_LOAD_S`` changes that), so a test can type while the model is surely
still loading. Names combine with commas; nothing else is recognised; unknown names are
logged and ignored.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

FAULT_ENV = "CODEGEN_LSP_FAULT"
KNOWN = ("generate_once", "slow_load")


class InjectedFault(RuntimeError):
    """The error an injected fault raises."""


class Faults:
    """The faults still armed in this process."""

    def __init__(self, spec: str | None = None) -> None:
        names = (os.environ.get(FAULT_ENV, "") if spec is None else spec).split(",")
        self._armed = {n.strip() for n in names if n.strip()}
        for name in sorted(self._armed - set(KNOWN)):
            log.warning("%s: unknown fault %r ignored (known: %s)", FAULT_ENV, name, KNOWN)
        self._armed &= set(KNOWN)
        if self._armed:
            log.warning("%s: armed %s", FAULT_ENV, ", ".join(sorted(self._armed)))

    def take(self, name: str) -> bool:
        """True once for an armed ``name``; disarms it."""
        if name in self._armed:
            self._armed.discard(name)
            return True
        return False


class FailingStop:
    """A stop rule whose check fails at the first text (the injected generation fault)."""

    def start(self) -> FailingStop:
        return self

    def feed(self, piece: str) -> int | None:
        raise InjectedFault(f"injected fault ({FAULT_ENV}=generate_once)")

    def finish(self) -> int | None:
        return None
