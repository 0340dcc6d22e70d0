"""Firing one job at one fire time: the same path for the schedule and `flowbot jobs run`.

A fire is one transaction. It starts by inserting the (job, fire_time) row; a scheduler in
another process that tries the same fire waits on the unique index and, once the winner commits,
gets no row and does nothing. If the winner dies before committing, its row vanishes with its
transaction and the waiting peer fires instead. The job's ``run(ctx)`` runs inside that
transaction; its sends start their runs while it runs (``engine.triggers.jobs.stream``: COPY in chunks,
inside a savepoint) and its Slack effects go to the outbox, committed with the fire row, or not
at all: a job that raises commits only the fire row, marked failed with the error.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import traceback
from dataclasses import dataclass, field
from typing import Any

from engine import metrics
from engine.errors import UnknownStage
from engine.loader import Registry
from engine.runtime.runner import call
from engine.store import trigger_queries, waits
from engine.store.audit import Entry
from engine.store.audit import write as write_audit
from engine.store.tasks import Store
from engine.triggers.jobs.context import JobContext, JobStats
from engine.triggers.jobs.stream import SendStream
from engine.triggers.schedules import Schedule, parse_schedule
from engine.workflow import Stage, StageKind

log = logging.getLogger("flowbot.jobs")


class UnknownJob(UnknownStage):
    """Raised when a job name matches no job stage (the message lists the jobs there are)."""


@dataclass(frozen=True)
class Job:
    """A job stage with its parsed schedule."""

    stage: Stage
    schedule: Schedule

    @property
    def key(self) -> str:
        """``workflow/stage``: the job's name in job_fires and on the command line."""
        return self.stage.key


def jobs_of(registry: Registry) -> list[Job]:
    """Every job of the loaded workflows (schedules were validated when they loaded)."""
    return [Job(s, parse_schedule(s.schedule or "", s.timezone))
            for s in registry.stages(StageKind.JOB)]


def find_job(registry: Registry, name: str) -> Job:
    """The job called ``workflow/stage``, or a stage or workflow name that names one job."""
    jobs = jobs_of(registry)
    exact = [j for j in jobs if j.key == name]
    if not exact:
        exact = [j for j in jobs if j.stage.name == name] or [j for j in jobs if j.stage.workflow.name == name]
    if len(exact) == 1:
        return exact[0]
    known = ", ".join(j.key for j in jobs) or "none"
    if exact:
        raise UnknownJob(f'"{name}" matches several jobs ({", ".join(j.key for j in exact)}): '
                         "name one as workflow/stage")
    raise UnknownJob(f'no job named "{name}" (jobs: {known})')


def default_owner() -> str:
    """This process, as recorded on the fires it wins."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class FireResult:
    """What became of one (job, fire time): fired, failed, skipped, or lost to another process."""

    job: str
    fire_time: dt.datetime
    status: str
    fire_id: int | None = None
    runs_created: int = 0
    tasks: int = 0
    error: str | None = None
    reason: str | None = None
    unrouted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def won(self) -> bool:
        """Whether this process recorded the fire (anything but lost)."""
        return self.status != "lost"


async def fire(store: Store, job: Job, fire_time: dt.datetime, *, manual: bool = False,
               owner: str | None = None, max_payload_bytes: int = 256 * 1024,
               audit: Entry | None = None) -> FireResult:
    """Run ``job`` for ``fire_time`` unless another process already did (then status "lost").
    ``audit`` (a person firing it by hand) is recorded with the fire row, in its transaction."""
    owner = owner or default_owner()
    fire_time = fire_time.astimezone(dt.UTC)
    async with store.db.transaction() as tx:
        fire_id = await tx.fetch_value(
            trigger_queries.CLAIM_JOB_FIRE,
            {"job": job.key, "fire_time": fire_time, "manual": manual, "owner": owner, "now": store.clock()},
        )
        if fire_id is None:
            log.info("job %s at %s: already fired by another process", job.key, fire_time.isoformat(),
                     extra={"action": "job_lost", "job": job.key})
            return FireResult(job.key, fire_time, "lost")
        result = FireResult(job.key, fire_time, "fired", fire_id=int(fire_id))
        if audit is not None:
            await write_audit(tx, [audit.on(workflow=job.stage.workflow.name, job=job.key, fire_id=int(fire_id))],
                              store.clock())
        lock = asyncio.Lock()
        ctx = JobContext(job_key=job.key, fire_time=fire_time, manual=manual, stats=JobStats(tx, lock),
                         previous_fire_time=job.schedule.latest_fire_time(fire_time - dt.timedelta(microseconds=1)),
                         max_payload_bytes=max_payload_bytes)
        now = store.clock()
        trigger = {"kind": "job", "job": job.key, "fire_time": fire_time.isoformat(),
                   "fire_id": result.fire_id, "manual": manual}
        # A savepoint: a job that raises, or a send that cannot start (it names an unknown
        # run...), fails the job without undoing the fire row. Its sends are written while it
        # runs (engine.jobs.stream), inside the savepoint.
        savepoint = await tx.savepoint()
        stream = SendStream(store, tx, job.stage, trigger=trigger, now=now, lock=lock)
        ctx.stream_to(stream)
        try:
            await call(job.stage.entry("run"), ctx)
            outcome = ctx.finish()
            for batch in ctx.unsent_children():
                stream.offer(batch)
            started = await stream.close(ctx.unsent() or stream.new_batch(), outcome.sends, outcome.context_set)
            await waits.publish(store, tx, [(e, f"job:{job.key}") for e in outcome.events], now)
            if outcome.effects:
                await store.add_effects(tx, [(e.kind, e.payload, None, None) for e in outcome.effects], now)
                await tx.notify()
            await savepoint.commit()
            result.runs_created, result.tasks = len(started.run_ids), started.tasks
            result.unrouted = started.unrouted
        except Exception as exc:
            await stream.abort()
            await savepoint.rollback()
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}"
            log.error("job %s at %s failed: %s", job.key, fire_time.isoformat(), exc,
                      extra={"action": "job_failed", "job": job.key})
        finally:
            await stream.abort()  # cancelled: a job thread still sending is told to stop
        await tx.execute(
            trigger_queries.FINISH_JOB_FIRE,
            {"id": result.fire_id, "status": result.status, "error": result.error, "now": store.clock(),
             "runs_created": result.runs_created, "log": ctx.outcome.log, "unrouted": result.unrouted},
        )
    metrics.job_fire(job.key, result.status)
    if result.status == "fired":
        log.info("job %s at %s fired: %d run(s) started", job.key, fire_time.isoformat(), result.runs_created,
                 extra={"action": "job_fired", "job": job.key, "runs": result.runs_created})
    return result


async def skip(store: Store, job: Job, fire_time: dt.datetime, reason: str, *,
               owner: str | None = None) -> FireResult:
    """Record that a missed fire time was not run (unless another process recorded it first)."""
    fire_time = fire_time.astimezone(dt.UTC)
    async with store.db.transaction() as tx:
        fire_id = await tx.fetch_value(
            trigger_queries.SKIP_JOB_FIRE,
            {"job": job.key, "fire_time": fire_time, "reason": reason, "owner": owner or default_owner(),
             "now": store.clock()},
        )
    if fire_id is None:
        return FireResult(job.key, fire_time, "lost")
    metrics.job_fire(job.key, "skipped")
    log.warning("job %s at %s skipped: %s", job.key, fire_time.isoformat(), reason,
                extra={"action": "job_skipped", "job": job.key})
    return FireResult(job.key, fire_time, "skipped", fire_id=int(fire_id), reason=reason)
