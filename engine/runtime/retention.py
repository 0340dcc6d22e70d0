"""Retention as a part of long-running processes: a purge pass every ``FLOWBOT_PURGE_INTERVAL``.

`flowbot run` and `flowbot worker` run it (every process that runs a worker); the advisory lock of
``engine.store.retention`` lets one of them purge at a time, the others skip that pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import TYPE_CHECKING

from engine.errors import DatabaseError
from engine.store.retention import Policy, Purger

if TYPE_CHECKING:
    from engine.runtime.app import App, Part

log = logging.getLogger(__name__)

#: The first pass waits up to this long after start (seconds, at random): processes started
#: together do not all try at once, and a restart loop does not purge on every start.
FIRST_PASS_JITTER = 60.0


def retention_part(app: App, *, first_delay: float | None = None) -> Part:
    """Purge what retention no longer keeps, every ``purge_interval`` seconds, until stopped."""
    settings = app.settings
    purger = Purger(app.db, Policy.from_settings(settings), batch=settings.purge_batch, clock=app.store.clock)

    async def part(stop: asyncio.Event) -> None:
        delay = random.uniform(0, min(FIRST_PASS_JITTER, settings.purge_interval)) if first_delay is None \
            else first_delay
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            delay = settings.purge_interval
            try:
                done = await purger.purge(stop)
            except DatabaseError as exc:
                log.warning("retention pass failed: %s", exc, extra={"action": "purge_error"})
                continue
            if done is None:
                log.debug("retention: another process is purging", extra={"action": "purge_skipped"})
            elif done.total:
                log.info("retention: deleted %s", done.describe(), extra={"action": "purged", "rows": done.total})

    return part
