"""What a job's ``run(ctx)`` receives: a Context plus its fire time and read-only run figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from engine.context import Context
from engine.store import queries
from engine.store.db import Tx

if TYPE_CHECKING:
    from engine.store.fanout import FreshRuns
    from engine.triggers.jobs.stream import SendStream


class JobStats:
    """``ctx.stats``: read-only figures about flowbot's own runs, for report jobs (async)."""

    def __init__(self, tx: Tx, lock: asyncio.Lock | None = None) -> None:
        self._tx = tx
        # The fire's transaction is shared with the job's sends being written meanwhile.
        self._lock = lock or asyncio.Lock()

    async def runs_by_workflow_status(self, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
        """Runs created in [since, until): ``[{"workflow", "status", "n"}]``."""
        async with self._lock:
            rows = await self._tx.fetch_all(queries.RUNS_BY_WORKFLOW_STATUS, {"since": since, "until": until})
        return [{"workflow": r["workflow"], "status": r["status"], "n": int(r["n"])} for r in rows]

    async def slowest_steps(self, since: dt.datetime, until: dt.datetime,
                            limit: int = 5) -> list[dict[str, Any]]:
        """Stages whose tasks completed in [since, until), slowest first:
        ``[{"workflow", "stage", "n", "avg_seconds", "max_seconds"}]``."""
        async with self._lock:
            rows = await self._tx.fetch_all(queries.SLOWEST_STEPS,
                                            {"since": since, "until": until, "limit": limit})
        return [{"workflow": r["workflow"], "stage": r["stage"], "n": int(r["n"]),
                 "avg_seconds": float(r["avg_seconds"] or 0), "max_seconds": float(r["max_seconds"] or 0)}
                for r in rows]


class JobContext(Context):
    """The ``ctx`` of a job: a Context plus the fire time being served and ``stats``.

    ``ctx.run`` set by a job becomes the starting context of every run its sends start.
    """

    def __init__(self, *, job_key: str, fire_time: dt.datetime, manual: bool, stats: JobStats,
                 max_payload_bytes: int, previous_fire_time: dt.datetime | None = None) -> None:
        super().__init__(stage_key=job_key, run_context=None, max_payload_bytes=max_payload_bytes,
                         can_name_run=True)
        #: The scheduled instant this run serves (UTC); "now" for `flowbot jobs run`.
        self.fire_time = fire_time
        #: The previous fire time of the schedule (UTC), e.g. the start of a report's window.
        self.previous_fire_time = previous_fire_time
        self.manual = manual
        self.stats = stats
        self._stream: SendStream | None = None
        self._batch: FreshRuns | None = None  # sends naming no run, not yet handed to the stream
        self._context_version = -1

    def stream_to(self, stream: SendStream) -> None:
        """Route sends that name no run into batches that ``stream`` writes while the job runs."""
        self._stream = stream
        self._batch = stream.new_batch()

    def send(self, type: str, payload: dict[str, Any] | None = None, *, run_id: str | None = None) -> None:
        """Emit a task of ``type``: it starts a run of its own (or joins the run it names)."""
        super().send(type, payload, run_id=run_id)
        if self._stream is None or self._batch is None or run_id is not None:
            return
        send = self.outcome.sends.pop()
        if self.run.version != self._context_version:
            self._context_version = self.run.version
            self._batch.set_context(self.run.changes()[0])
        self._batch.add(send)
        if self._batch.sends % 64 == 0:
            time.sleep(0)  # from a job thread: let the event loop (writing batches) have the GIL
        if self._batch.sends >= self._stream.chunk:
            full, self._batch = self._batch, self._stream.new_batch()
            self._batch.set_context(self.run.changes()[0])
            self._stream.offer(full)

    def unsent(self) -> FreshRuns | None:
        """The batch not yet handed to the stream (the job has finished sending)."""
        batch, self._batch = self._batch, None
        return batch
