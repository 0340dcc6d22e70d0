"""The outbox: side effects written with the transaction that caused them, delivered after commit.

A stage's ``ctx.slack.post`` (and the engine's "a person must act" notice) becomes an outbox row
in the stage's own transaction; a retried stage wrote nothing, so nothing is sent twice. The
``OutboxDispatcher`` delivers rows through handlers that plugins register per kind; a row is
marked delivered right after its handler returns. Handlers raise ``RetryLater`` for 429s and
outages, ``PermanentFailure`` for errors retrying cannot fix (recorded on the effect and its task).

Through a database outage the dispatcher backs off and goes on; what it learnt about an effect it
delivered (delivered, retry, failed) is written as soon as the database is back, within the
effect's lease, so a delivered effect is not delivered again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.errors import DatabaseError, DatabaseUnavailable, FlowbotError
from engine.store import queries
from engine.store.db import OUTBOX_CHANNEL, Database, outage_backoff
from engine.store.tasks import Clock, utcnow

log = logging.getLogger(__name__)

OutboxHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""Delivers one effect: receives the row (id, kind, payload, task_id, run_id, attempts) and
returns what to keep as the result (e.g. the message ts)."""

MAX_ATTEMPTS = 10


async def progress(db: Database, effect_id: int) -> dict[str, Any]:
    """What a multi-message effect recorded as sent so far (``note_progress``)."""
    row = await db.fetch_one(queries.OUTBOX_RESULT, {"id": effect_id})
    return dict((row or {}).get("result") or {})


async def note_progress(db: Database, effect_id: int, patch: dict[str, Any]) -> None:
    """Remember part of what an effect sent, so a retried delivery does not send it twice."""
    async with db.transaction() as tx:
        await tx.execute(queries.OUTBOX_NOTE_PROGRESS, {"id": effect_id, "patch": patch})


class RetryLater(FlowbotError):
    """Raised by a handler when delivery should be tried again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float = 5.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentFailure(FlowbotError):
    """Raised by a handler when delivery can never succeed (e.g. channel_not_found)."""


class OutboxDispatcher:
    """Delivers pending effects of the kinds it has handlers for."""

    def __init__(self, db: Database, handlers: dict[str, OutboxHandler], *, clock: Clock = utcnow,
                 batch: int = 50, concurrency: int = 8, poll_interval: float = 2.0,
                 lease_seconds: int = 60) -> None:
        self.db = db
        self.handlers = handlers
        self.clock = clock
        self.batch = batch
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self._sem = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        #: The latest delivery in flight per task: a task's effects go out in the order claimed
        #: (its card is posted before it is updated).
        self._last_of_task: dict[int, asyncio.Task[None]] = {}

    def wake(self, _payload: str = "") -> None:
        """New effects may be waiting (a commit sent NOTIFY)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set (then let the deliveries in flight finish).

        Deliveries run in the background: an effect committed while earlier ones are still being
        delivered is claimed as soon as its NOTIFY arrives, not after them."""
        if not self.handlers:
            return
        try:
            async with self.db.listen(OUTBOX_CHANNEL, self.wake):
                failures = 0
                while not stop.is_set():
                    self._wake.clear()
                    try:
                        n = await self.deliver_due(wait=False)
                        failures = 0
                    except DatabaseError as exc:
                        if not isinstance(exc, DatabaseUnavailable):  # an outage is logged once, by the database
                            log.warning("outbox: %s", exc, extra={"action": "outbox_error"})
                        n, failures = 0, failures + 1
                    if n < self.batch:
                        # After a failure: back off, cut short when LISTEN is back (so is the database).
                        wait = outage_backoff(failures) if failures else self.poll_interval
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wait(stop), wait)
        finally:
            if self._in_flight:
                await asyncio.wait(list(self._in_flight))

    async def _wait(self, stop: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def deliver_due(self, *, wait: bool = True) -> int:
        """Claim one batch of due effects and deliver them; returns how many were claimed.

        ``wait=False`` returns once they are claimed (their deliveries go on in the background),
        after waiting for room when ``concurrency`` deliveries are already in flight."""
        while len(self._in_flight) >= self.concurrency:
            await asyncio.wait(list(self._in_flight), return_when=asyncio.FIRST_COMPLETED)
        # One statement, its own transaction: one round trip before the first delivery starts.
        rows = await self.db.fetch_all(
            queries.CLAIM_OUTBOX,
            {"now": self.clock(), "limit": self.batch, "lease": self.lease_seconds, "kinds": sorted(self.handlers)},
        )
        # Ids grow in commit order: a task's effects start in the order they were written.
        started = [self._start(dict(r)) for r in sorted(rows, key=lambda r: r["id"])]
        if wait and started:
            await asyncio.wait(started)
        return len(rows)

    def _start(self, row: dict[str, Any]) -> asyncio.Task[None]:
        task_id = row.get("task_id")
        before = self._last_of_task.get(task_id) if task_id is not None else None
        delivery = asyncio.create_task(self._deliver_after(before, row))
        self._in_flight.add(delivery)
        if task_id is not None:
            self._last_of_task[task_id] = delivery

        def done(t: asyncio.Task[None]) -> None:
            self._in_flight.discard(t)
            if task_id is not None and self._last_of_task.get(task_id) is t:
                del self._last_of_task[task_id]

        delivery.add_done_callback(done)
        return delivery

    async def _deliver_after(self, before: asyncio.Task[None] | None, row: dict[str, Any]) -> None:
        if before is not None:
            await asyncio.wait([before])
        await self._deliver(row)

    async def _deliver(self, row: dict[str, Any]) -> None:
        async with self._sem:
            handler = self.handlers[row["kind"]]
            try:
                result = await handler(row)
            except RetryLater as exc:
                if row["attempts"] >= MAX_ATTEMPTS:
                    await self._failed(row, f"gave up after {row['attempts']} attempts: {exc}")
                else:
                    await self._execute(queries.OUTBOX_RETRY, id=row["id"], delay=exc.delay, error=str(exc))
                return
            except PermanentFailure as exc:
                await self._failed(row, str(exc))
                return
            except Exception as exc:
                log.exception("outbox handler %s failed", row["kind"], extra={"action": "outbox_handler_error"})
                delay = min(2.0 ** row["attempts"], 300.0)
                if row["attempts"] >= MAX_ATTEMPTS:
                    await self._failed(row, f"{type(exc).__name__}: {exc}")
                else:
                    await self._execute(queries.OUTBOX_RETRY, id=row["id"], delay=delay,
                                        error=f"{type(exc).__name__}: {exc}")
                return
            await self._execute(queries.OUTBOX_DELIVERED, id=row["id"], result=result)

    async def _failed(self, row: dict[str, Any], error: str) -> None:
        log.warning("outbox effect %s (%s) failed: %s", row["id"], row["kind"], error,
                    extra={"action": "outbox_failed"})

        async def record() -> None:
            async with self.db.transaction() as tx:
                await tx.execute(queries.OUTBOX_FAILED, {"id": row["id"], "error": error, "now": self.clock()})
                if row.get("task_id"):
                    line = {"at": self.clock().isoformat(), "message": f"{row['kind']} failed: {error}"}
                    await tx.execute(queries.APPEND_TASK_LOG, {"id": row["task_id"], "lines": [line]})

        await self._through_outage(record)

    async def _execute(self, query: Any, **params: Any) -> None:
        async def record() -> None:
            # One statement, its own transaction (one round trip, not three).
            await self.db.fetch_all(query, {"now": self.clock(), **params})

        await self._through_outage(record)

    async def _through_outage(self, record: Callable[[], Awaitable[None]]) -> None:
        """Write what a delivery found, retried through a database outage while the effect's lease
        lasts (past it, another dispatcher may take the effect again)."""
        give_up_at = time.monotonic() + self.lease_seconds
        failures = 0
        while True:
            try:
                await record()
                return
            except DatabaseUnavailable:
                failures += 1
                if time.monotonic() + outage_backoff(failures) > give_up_at:
                    raise
                await asyncio.sleep(outage_backoff(failures))

