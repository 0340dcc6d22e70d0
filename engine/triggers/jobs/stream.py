"""A job's sends start their runs while the job is still sending.

A job that fans out 100,000 tasks would otherwise build every send and only then insert them:
Python and Postgres taking turns. Instead, the job's ``ctx.send`` routes each send that names no
run straight into a batch of rows (``engine.store.fanout.FreshRuns``, in the job's own thread), and each
full batch goes to a consumer task on the event loop, which writes it (``Store.write_fresh``: COPY
of the runs and their first tasks) in the job's transaction while the job goes on. On two cores
the job's Python and Postgres's inserting run side by side.

Nothing changes about atomicity: the chunks go into a savepoint of the fire's transaction, which
a failing job rolls back, so its sends commit with the fire row or not at all. A sync job (run in a
thread) waits when ``ahead`` chunks are queued, so memory stays bounded however much it sends.
The run context a job sets (``ctx.run``) is the starting context of every run it starts, also
of the runs written before it set it: ``close`` brings those up to date.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from typing import Any

from engine.context import Send
from engine.errors import FlowbotError
from engine.store import children, trigger_queries
from engine.store.db import Tx
from engine.store.fanout import FreshRuns
from engine.store.tasks import Started, Store
from engine.workflow import Stage

#: Sends per chunk: small enough that Postgres starts inserting early, big enough that a COPY's
#: fixed cost is spread thin.
STREAM_CHUNK = 5_000


class StreamClosed(FlowbotError):
    """A job sent after its fire had already ended (it was cancelled, or its sends failed)."""


class SendStream:
    """Starts runs for a job's sends in the background, in the job's transaction."""

    def __init__(self, store: Store, tx: Tx, stage: Stage, *, trigger: dict[str, Any], now: dt.datetime,
                 lock: asyncio.Lock, chunk: int | None = None, ahead: int = 2) -> None:
        self.chunk = chunk or STREAM_CHUNK
        #: Held while the transaction is in use: ``ctx.stats`` queries share it with the chunks.
        self.lock = lock
        self.started = Started()
        self.error: BaseException | None = None
        self._store, self._tx, self._stage = store, tx, stage
        self._trigger, self._now = trigger, now
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[FreshRuns, bool] | None] = asyncio.Queue()
        self._room = threading.Semaphore(ahead)
        self._closed = False
        self._written: list[FreshRuns] = []  # emptied of their rows once written
        self._task = self._loop.create_task(self._consume())

    def new_batch(self) -> FreshRuns:
        """An empty batch for the next chunk of sends (filled in the job's thread)."""
        return self._store.fresh_runs(self._stage, trigger=self._trigger, now=self._now)

    @property
    def stage(self) -> Stage:
        """The job stage whose sends this stream writes."""
        return self._stage

    def new_child_batch(self, start: Stage) -> FreshRuns:
        """An empty batch of runs of ``start``'s workflow the job starts (``ctx.start``)."""
        return children.batch(self._store, self._stage, start, trigger=self._trigger, now=self._now, parent=None)

    def offer(self, batch: FreshRuns) -> None:
        """Queue a full batch to be written; any thread.

        From a job's thread this waits while ``ahead`` batches are still queued. Raises the error
        that stopped an earlier batch, so a failing fan-out stops its job early.
        """
        self._raise_if_stopped()
        if _on_thread_of(self._loop):
            self._queue.put_nowait((batch, False))
            return
        while not self._room.acquire(timeout=0.2):
            self._raise_if_stopped()
        self._raise_if_stopped()  # woken by abort()
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (batch, True))

    async def close(self, rest: FreshRuns, named: list[Send], context: dict[str, Any]) -> Started:
        """Write the last batch and the sends that name a run, once every batch is in; what was
        started. Raises what made a batch fail (the caller rolls the savepoint back)."""
        self._queue.put_nowait(None)
        await self._task
        self._closed = True
        if self.error is not None:
            raise self.error
        async with self.lock:
            await self._write(rest)
            stale = [run_id for batch in self._written for run_id in batch.started_with_other_context(context)]
            if stale:
                await self._tx.execute(trigger_queries.SET_RUN_CONTEXTS,
                                       {"ids": stale, "context": context, "now": self._now})
            if named:
                self.started.merge(await self._store.start_runs(self._tx, self._stage, named, trigger=self._trigger,
                                                                now=self._now, context=context))
        return self.started

    async def abort(self) -> None:
        """Stop: batches still queued are dropped, a waiting job thread is released (and fails)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        for _ in range(self._queue.qsize() + 2):
            self._room.release()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _consume(self) -> None:
        while (item := await self._queue.get()) is not None:
            batch, held = item
            try:
                if self.error is None and not self._closed:
                    async with self.lock:
                        await self._write(batch)
            except Exception as exc:
                self.error = exc
            finally:
                if held:
                    self._room.release()

    async def _write(self, batch: FreshRuns) -> None:
        self.started.merge(await self._store.write_fresh(self._tx, batch))
        batch.runs, batch.tasks = bytearray(), bytearray()  # written: keep the run ids and contexts
        self._written.append(batch)

    def _raise_if_stopped(self) -> None:
        if self.error is not None:
            raise StreamClosed(f"{self._stage.key}: sending stopped: {self.error}") from self.error
        if self._closed:
            raise StreamClosed(f"{self._stage.key}: the job's fire has ended; its sends are not taken")


def _on_thread_of(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
