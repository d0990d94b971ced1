"""``$/progress`` for a model load: create, begin, report, end (when the client supports it)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from lsprotocol import types

log = logging.getLogger(__name__)

CREATE_TIMEOUT_S = 5.0
_IDS = itertools.count(1)


class LoadProgress:
    """One load's work-done progress; every call is a no-op when the client has none."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.token: str | None = None

    async def begin(self, title: str, supported: bool) -> None:
        """Create the token and send ``begin`` (skipped if unsupported or refused)."""
        if not supported:
            return
        token = f"codegen-load-{next(_IDS)}"
        try:
            create = self._server.work_done_progress.create_async(token)
            await asyncio.wait_for(create, CREATE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - progress is optional
            log.warning("window/workDoneProgress/create failed: %s", exc)
            return
        self.token = token
        begin = types.WorkDoneProgressBegin(title=title, percentage=0, cancellable=False)
        self._server.work_done_progress.begin(token, begin)

    def report(self, message: str, percentage: int) -> None:
        """A step of the load."""
        if self.token is not None:
            pct = max(0, min(percentage, 100))
            report = types.WorkDoneProgressReport(message=message, percentage=pct)
            self._server.work_done_progress.report(self.token, report)

    def end(self, message: str) -> None:
        """The load is over."""
        if self.token is not None:
            self._server.work_done_progress.end(
                self.token, types.WorkDoneProgressEnd(message=message)
            )
