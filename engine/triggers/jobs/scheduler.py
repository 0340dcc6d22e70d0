"""The scheduler: sleeps until the next fire time of any job, then fires what is due.

Every flowbot process may run one (`flowbot run`, `flowbot scheduler`); they share nothing but
the database. APScheduler 3.x triggers (through ``engine.triggers.schedules``) say *when*; the
``job_fires`` row says *who*: each scheduler tries each fire and one wins (``engine.triggers.jobs.firing``).
No APScheduler job store is shared between processes (its FAQ warns against that).

Missed fires: a scheduler starting up looks at each job's most recent fire time. If nobody
recorded it and the job has fired before (a job deployed after that time has nothing to catch
up), it runs it once when it is at most ``grace`` seconds late, else records it as skipped.
Several missed fire times of one job are coalesced into the most recent one. The same rule
applies to a running scheduler that wakes up late (a suspended machine).

Idle cost: one timer until the next fire time (capped at ``max_sleep`` so that a wall clock
that jumps is noticed), no polling of the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from engine.store import trigger_queries
from engine.store.tasks import Clock, Store
from engine.triggers.jobs.firing import FireResult, Job, default_owner, fire, jobs_of, skip

if TYPE_CHECKING:
    from engine.runtime.app import App, Part

log = logging.getLogger("flowbot.scheduler")

#: Longest single sleep: the wall clock is looked at again at least this often (seconds).
MAX_SLEEP = 300.0
#: How long a stopping scheduler lets running jobs finish before cancelling them (seconds);
#: a cancelled job's transaction rolls back, so a peer or the next start fires it again.
SHUTDOWN_GRACE = 30.0

Sleep = Callable[[float, asyncio.Event], Awaitable[None]]


async def wait_or_stop(seconds: float, stop: asyncio.Event) -> None:
    """The default sleep: ``seconds`` of real time, cut short when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(seconds, 0.0))


class Timetable:
    """Which fire times are due, per job: pure bookkeeping, no I/O.

    Each job has a cursor, the instant up to which its fire times have been handed out;
    ``due(now)`` hands out those in (cursor, now] and moves the cursors to ``now``.
    """

    def __init__(self, jobs: Sequence[Job], start: dt.datetime) -> None:
        self.jobs = list(jobs)
        self.cursor = {j.key: start for j in self.jobs}

    def due(self, now: dt.datetime) -> list[tuple[Job, dt.datetime]]:
        """Fire times that came due since the last call, oldest first."""
        out: list[tuple[Job, dt.datetime]] = []
        for job in self.jobs:
            if now > self.cursor[job.key]:
                out.extend((job, t) for t in job.schedule.fire_times_between(self.cursor[job.key], now))
                self.cursor[job.key] = now
        return sorted(out, key=lambda x: x[1])

    def next_fire_time(self) -> dt.datetime | None:
        """The earliest fire time still to hand out, across all jobs."""
        times = [j.schedule.next_fire_time(self.cursor[j.key]) for j in self.jobs]
        return min(times) if times else None

    def delay(self, now: dt.datetime, max_sleep: float = MAX_SLEEP) -> float:
        """Seconds to sleep from ``now`` until the next fire time (at most ``max_sleep``)."""
        nxt = self.next_fire_time()
        if nxt is None:
            return max_sleep
        return min(max((nxt - now).total_seconds(), 0.0), max_sleep)


def missed_action(fire_time: dt.datetime, now: dt.datetime, grace: float) -> str:
    """"fire" when a missed fire time is at most ``grace`` seconds late, else "skip"."""
    return "fire" if (now - fire_time).total_seconds() <= grace else "skip"


def skip_reason(fire_time: dt.datetime, now: dt.datetime, grace: float) -> str:
    """Why a missed fire was skipped, for job_fires.reason."""
    late = (now - fire_time).total_seconds()
    return (f"missed: no scheduler was running at {fire_time.isoformat()}; noticed {late:.0f} s late, "
            f"beyond the {grace:g} s grace period (FLOWBOT_JOB_MISFIRE_GRACE)")


class Scheduler:
    """Fires the jobs of one store's workflows, on time, once across all processes."""

    def __init__(self, store: Store, jobs: Sequence[Job] | None = None, *, grace: float = 3600.0,
                 owner: str | None = None, clock: Clock | None = None, sleep: Sleep = wait_or_stop,
                 max_sleep: float = MAX_SLEEP, max_payload_bytes: int = 256 * 1024) -> None:
        self.store = store
        self.jobs = list(jobs) if jobs is not None else jobs_of(store.registry)
        self.grace = grace
        self.owner = owner or default_owner()
        self.clock = clock or store.clock
        self.sleep = sleep
        self.max_sleep = max_sleep
        self.max_payload_bytes = max_payload_bytes
        self.timetable: Timetable | None = None
        self._running: set[asyncio.Task[FireResult]] = set()

    async def start(self) -> list[FireResult]:
        """Begin at the clock's now: catch up each job's most recent missed fire (see module doc)."""
        now = self.clock()
        self.timetable = Timetable(self.jobs, now)
        results = await asyncio.gather(*(self._catch_up(job, now) for job in self.jobs))
        return [r for r in results if r is not None]

    async def _catch_up(self, job: Job, now: dt.datetime) -> FireResult | None:
        latest = job.schedule.latest_fire_time(now)
        if latest is None:
            return None
        async with self.store.db.transaction() as tx:
            if await tx.fetch_one(trigger_queries.JOB_FIRE_AT, {"job": job.key, "fire_time": latest}) is not None:
                return None
            known = await tx.fetch_value(trigger_queries.JOB_KNOWN_BEFORE, {"job": job.key, "before": latest})
        if not known:
            return None  # a new job: its past fire times were never its to run
        return await self._handle(job, latest, now)

    async def _handle(self, job: Job, fire_time: dt.datetime, now: dt.datetime) -> FireResult:
        if missed_action(fire_time, now, self.grace) == "skip":
            return await skip(self.store, job, fire_time, skip_reason(fire_time, now, self.grace), owner=self.owner)
        return await fire(self.store, job, fire_time, owner=self.owner, max_payload_bytes=self.max_payload_bytes)

    def _due(self, now: dt.datetime) -> list[tuple[Job, dt.datetime]]:
        """Due fire times, a job that missed several keeping only its latest (coalesced)."""
        assert self.timetable is not None, "call start() first"
        latest: dict[str, tuple[Job, dt.datetime]] = {}
        for job, t in self.timetable.due(now):
            latest[job.key] = (job, t)
        return sorted(latest.values(), key=lambda x: x[1])

    async def tick(self) -> list[FireResult]:
        """Fire (or skip) everything due at the clock's now and wait for it; returns the results."""
        now = self.clock()
        return list(await asyncio.gather(*(self._handle(j, t, now) for j, t in self._due(now))))

    def delay(self) -> float:
        """Seconds until the next fire time (capped)."""
        assert self.timetable is not None, "call start() first"
        return self.timetable.delay(self.clock(), self.max_sleep)

    async def run(self, stop: asyncio.Event) -> None:
        """Fire jobs until ``stop`` is set. Each fire runs as its own task, so a long job does not
        hold up the others."""
        await self.start()
        log.info("scheduler %s started: %d job(s), misfire grace %g s", self.owner, len(self.jobs), self.grace,
                 extra={"action": "scheduler_start"})
        try:
            while not stop.is_set():
                now = self.clock()
                for job, t in self._due(now):
                    task = asyncio.create_task(self._handle(job, t, now))
                    self._running.add(task)
                    task.add_done_callback(self._finished)
                await self.sleep(self.delay(), stop)
        finally:
            await self._drain()

    def _finished(self, task: asyncio.Task[FireResult]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler: firing failed: %s", task.exception(), extra={"action": "scheduler_error"})

    async def _drain(self) -> None:
        if not self._running:
            return
        pending = set(self._running)
        _, still = await asyncio.wait(pending, timeout=SHUTDOWN_GRACE)
        for task in still:
            task.cancel()
        await asyncio.gather(*still, return_exceptions=True)


def scheduler_part(app: App) -> Part:
    """The scheduler as a part of `flowbot run` / `flowbot scheduler` (settings from ``app``)."""
    scheduler = Scheduler(app.store, grace=app.settings.job_misfire_grace,
                          max_payload_bytes=app.settings.max_payload_bytes)
    return scheduler.run
