"""The live board: one poll per web process tells every open board when runs moved.

Each open board holds a Server-Sent Events stream and waits on its own queue, costing nothing
while nothing happens. One task per process reads a change mark (the newest task id and the
newest status change: two index lookups) every ``interval`` seconds, and only while at least one
board is open; when the mark moves, each board is told once and fetches its columns again.

A board page carries the mark it was drawn at and hands it back when it subscribes: if the runs
moved between drawing the page and opening the stream, the board is told at once, so no change
falls into the gap between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from engine.errors import DatabaseError
from engine.store import console_queries as q
from engine.store.db import Database

log = logging.getLogger(__name__)

CHANGED = "changed"
CLOSED = "closed"


class Hub:
    """Fans one change mark out to every open board of this process."""

    def __init__(self, db: Database, interval: float = 1.0) -> None:
        self.db = db
        self.interval = interval
        self._queues: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._mark: Any = None
        self.polls = 0

    async def mark(self) -> str:
        """The change mark now, as a board page carries it (``"<newest task>.<newest event>"``)."""
        return _text(await self._read())

    @contextlib.asynccontextmanager
    async def subscribe(self, since: str | None = None) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue that receives CHANGED when runs move (and CLOSED when the server stops).

        ``since`` is the mark the board was drawn at: when the runs have moved since, the queue
        holds CHANGED from the start.
        """
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self._queues.add(queue)
        if self._mark is None:  # the baseline the poll compares against, read before anyone listens
            with contextlib.suppress(DatabaseError):
                self._mark = await self._read()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll())
        if since is not None and self._mark is not None and since != _text(self._mark):
            queue.put_nowait(CHANGED)
        try:
            yield queue
        finally:
            self._queues.discard(queue)

    @property
    def subscribers(self) -> int:
        """How many boards are open."""
        return len(self._queues)

    async def _poll(self) -> None:
        while self._queues:
            try:
                mark = await self._read()
                self.polls += 1
                if self._mark is not None and mark != self._mark:
                    self._tell(CHANGED)
                self._mark = mark
            except DatabaseError as exc:
                log.warning("live board: %s", exc, extra={"action": "console_live_error"})
            await asyncio.sleep(self.interval)
        self._mark = None

    async def _read(self) -> tuple[int, int]:
        row = await self.db.fetch_one(q.CHANGE_MARK)
        return (row["tasks"], row["events"]) if row else (0, 0)

    def _tell(self, what: str) -> None:
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):  # one pending notice is enough
                queue.put_nowait(what)

    async def close(self, *_: Any) -> None:
        """End every stream (the server is stopping)."""
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(CLOSED)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _text(mark: tuple[int, int]) -> str:
    return f"{mark[0]}.{mark[1]}"
