"""What a job's ``run(ctx)`` receives: a Context plus its fire time and read-only run figures."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.context import Context, Send
from engine.routing import resolve_children
from engine.store import trigger_queries
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
        """Runs created in [since, until) (test runs left out): ``[{"workflow", "status", "n"}]``."""
        async with self._lock:
            rows = await self._tx.fetch_all(trigger_queries.RUNS_BY_WORKFLOW_STATUS, {"since": since, "until": until})
        return [{"workflow": r["workflow"], "status": r["status"], "n": int(r["n"])} for r in rows]

    async def slowest_steps(self, since: dt.datetime, until: dt.datetime,
                            limit: int = 5) -> list[dict[str, Any]]:
        """Stages whose tasks completed in [since, until) (not in test runs), slowest first:
        ``[{"workflow", "stage", "n", "avg_seconds", "max_seconds"}]``."""
        async with self._lock:
            rows = await self._tx.fetch_all(trigger_queries.SLOWEST_STEPS,
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
        self._children: dict[str, FreshRuns] = {}  # ctx.start, by workflow
        self._context_version = -1

    def stream_to(self, stream: SendStream) -> None:
        """Route sends that name no run into batches that ``stream`` writes while the job runs."""
        self._stream = stream
        self._batch = stream.new_batch()

    def send(self, type: str, payload: dict[str, Any] | None = None, *, run_id: str | None = None,
             delay: Any = None, at: dt.datetime | None = None) -> None:
        """Emit a task of ``type``: it starts a run of its own (or joins the run it names)."""
        super().send(type, payload, run_id=run_id, delay=delay, at=at)
        if self._stream is None or self._batch is None or run_id is not None:
            return
        self._batch = self._add(self._batch, self.outcome.sends.pop(), self._stream.new_batch)

    def start(self, workflow: str, payload: dict[str, Any] | None = None) -> None:
        """Start a run of ``workflow`` at its start stage (streamed like the job's sends)."""
        super().start(workflow, payload)
        if self._stream is None:
            return
        child = self.outcome.children.pop()
        batch = self._children.get(child.workflow)
        if batch is None:  # the first start of this workflow: find its start stage once
            [(target, _)] = resolve_children(self._stream.stage, [child])
            batch = self._children[child.workflow] = self._stream.new_child_batch(target)
        self._children[child.workflow] = self._add(batch, Send("start", raw=child.raw), batch.emptied)

    def _add(self, batch: FreshRuns, send: Send, new: Callable[[], FreshRuns]) -> FreshRuns:
        """Add ``send`` to ``batch``; a full batch goes to the stream: the batch to fill next."""
        assert self._stream is not None
        if self.run.version != self._context_version:
            self._context_version = self.run.version
            batch.set_context(self.run.changes()[0])
        batch.add(send)
        if batch.sends % 64 == 0:
            time.sleep(0)  # from a job thread: let the event loop (writing batches) have the GIL
        if batch.sends >= self._stream.chunk:
            full, batch = batch, new()
            batch.set_context(self.run.changes()[0])
            self._stream.offer(full)
        return batch

    def unsent(self) -> FreshRuns | None:
        """The batch not yet handed to the stream (the job has finished sending)."""
        batch, self._batch = self._batch, None
        return batch

    def unsent_children(self) -> list[FreshRuns]:
        """The batches of child runs not yet handed to the stream."""
        batches, self._children = list(self._children.values()), {}
        return batches
