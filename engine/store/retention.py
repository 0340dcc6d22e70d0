"""Retention: finished runs and old trigger records deleted in small batches, one purger at a time.

A pass deletes, oldest first:

- runs finished (completed, failed, cancelled) before the retention period, with their tasks, task
  events, outbox rows, audit records, join arrivals, form sessions and Slack cards, ``batch`` runs per
  transaction. Open runs (running, waiting) are never touched, however old.
- outbox rows tied to no run, delivered or failed before the same period;
- hook delivery records older than their idempotency window (a redelivery after it starts new
  runs);
- job fire records older than their period, except each job's latest;
- events older than the event lookback (no wait that begins can match them any more).

Every batch is its own short transaction that skips (never waits for) rows another transaction
holds, so workers claiming and committing are not held up, and a pass rests between batches as
long as it worked (``DEFAULT_DUTY``), so its disk and WAL work leaves room for theirs.

One process purges at a time: a pass holds a session-level advisory lock on a connection of its
own for its whole length, outside any transaction (an open one would keep vacuum from reclaiming
what the pass deletes); another process that finds it taken does nothing (``Purger.purge``
returns None). Behind a pooler in transaction mode a session lock needs a direct connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass, fields

from sqlalchemy import TextClause

from engine import metrics
from engine.settings import Settings
from engine.store import retention_queries as q
from engine.store.db import Database
from engine.store.tasks import Clock, utcnow

log = logging.getLogger(__name__)

#: Runs per batch: a batch of runs of a few tasks each deletes a few thousand rows in tens of ms.
DEFAULT_BATCH = 500
#: Share of its time a pass spends deleting: after a batch that took t seconds it rests
#: t * (1 / duty - 1). Deleting millions of rows is disk and WAL work that competes with the
#: workers' commits; resting as long as it worked left workers most of their throughput (bench/scale.py).
DEFAULT_DUTY = 0.5


@dataclass(frozen=True)
class Policy:
    """How long each kind of record is kept; None keeps it forever."""

    runs: dt.timedelta | None = dt.timedelta(days=30)
    hook_deliveries: dt.timedelta | None = dt.timedelta(days=7)
    job_fires: dt.timedelta | None = dt.timedelta(days=90)
    #: Events, kept for waits that begin after them (``FLOWBOT_EVENT_LOOKBACK``).
    events: dt.timedelta | None = dt.timedelta(days=1)

    @classmethod
    def from_settings(cls, settings: Settings, *, runs: dt.timedelta | None = None) -> Policy:
        """The periods configured (``FLOWBOT_RETENTION_DAYS`` and siblings); ``runs``, when given,
        replaces the runs' period (`flowbot purge --older-than`)."""
        def keep(days: int | None) -> dt.timedelta | None:
            return None if days is None else dt.timedelta(days=days)

        return cls(runs=runs if runs is not None else keep(settings.retention_days),
                   hook_deliveries=keep(settings.hook_delivery_days), job_fires=keep(settings.job_fire_days),
                   events=dt.timedelta(seconds=settings.event_lookback))


@dataclass
class Purged:
    """Rows deleted (or, for a dry run, that would be) by kind."""

    runs: int = 0
    tasks: int = 0
    task_events: int = 0
    outbox: int = 0
    audit: int = 0
    events: int = 0
    hook_deliveries: int = 0
    job_fires: int = 0

    def add(self, **counts: int) -> None:
        """Add batch counts."""
        for name, n in counts.items():
            setattr(self, name, getattr(self, name) + int(n))

    @property
    def total(self) -> int:
        """Rows of every kind."""
        return sum(getattr(self, f.name) for f in fields(self))

    def describe(self, kinds: tuple[str, ...] | None = None) -> str:
        """``3 runs, 12 tasks, ...`` for people (only ``kinds``, when given)."""
        names = {"outbox": "outbox rows", "audit": "audit records"}
        return ", ".join(f"{getattr(self, f.name)} {names.get(f.name, f.name.replace('_', ' '))}"
                         for f in fields(self) if kinds is None or f.name in kinds)


class Purger:
    """Deletes what a ``Policy`` no longer keeps."""

    def __init__(self, db: Database, policy: Policy, *, batch: int = DEFAULT_BATCH, duty: float = DEFAULT_DUTY,
                 pause: float = 0.0, clock: Clock = utcnow) -> None:
        if not 0 < duty <= 1:
            raise ValueError(f"duty must be in (0, 1], got {duty}")
        self.db = db
        self.policy = policy
        self.batch = batch
        #: Share of the pass's time spent in batches (1: no rest between them).
        self.duty = duty
        #: Least rest between batches (seconds).
        self.pause = pause
        self.clock = clock

    def cutoffs(self) -> tuple[dt.datetime | None, dt.datetime | None, dt.datetime | None, dt.datetime | None]:
        """(runs, hook deliveries, job fires, events): records before these instants go."""
        now = self.clock()
        p = self.policy
        return tuple(None if keep is None else now - keep  # type: ignore[return-value]
                     for keep in (p.runs, p.hook_deliveries, p.job_fires, p.events))

    async def count(self) -> Purged:
        """What a pass would delete now (nothing is deleted)."""
        runs, hooks, jobs, events = self.cutoffs()
        row = await self.db.fetch_one(q.COUNT_PURGEABLE, {"runs_before": runs, "hooks_before": hooks,
                                                                "jobs_before": jobs, "events_before": events})
        assert row is not None
        return Purged(**{k: int(v) for k, v in row.items()})

    async def purge(self, stop: asyncio.Event | None = None) -> Purged | None:
        """One pass; None when another process is purging (nothing done). ``stop`` ends it between
        batches (what was deleted stays deleted)."""
        runs, hooks, jobs, events = self.cutoffs()
        done = Purged()
        async with self.db.session_lock(q.TRY_LOCK_RETENTION, q.UNLOCK_RETENTION) as taken:
            if not taken:
                return None
            if runs is not None:
                await self._batches(q.PURGE_RUNS, runs, done, stop, counted="runs")
                await self._batches(q.PURGE_ORPHAN_OUTBOX, runs, done, stop, counted="outbox")
            if hooks is not None:
                await self._batches(q.PURGE_HOOK_DELIVERIES, hooks, done, stop, counted="hook_deliveries")
            if jobs is not None:
                await self._batches(q.PURGE_JOB_FIRES, jobs, done, stop, counted="job_fires")
            if events is not None:
                await self._batches(q.PURGE_EVENTS, events, done, stop, counted="events")
        return done

    async def count_tests(self) -> Purged:
        """What ``purge_tests`` would delete now (nothing is deleted)."""
        row = await self.db.fetch_one(q.COUNT_TEST_RUNS, {"before": self.clock()})
        assert row is not None
        return Purged(**{k: int(v) for k, v in row.items()})

    async def purge_tests(self, stop: asyncio.Event | None = None) -> Purged | None:
        """Delete every test run created until now, open or finished (``flowbot runs purge --test``),
        with its tasks, task events, effects and audit records, in the same batches as a pass;
        None when another process is purging (nothing done)."""
        done = Purged()
        async with self.db.session_lock(q.TRY_LOCK_RETENTION, q.UNLOCK_RETENTION) as taken:
            if not taken:
                return None
            await self._batches(q.PURGE_TEST_RUNS, self.clock(), done, stop, counted="runs")
        return done

    async def _batches(self, query: TextClause, before: dt.datetime, done: Purged, stop: asyncio.Event | None,
                       *, counted: str) -> None:
        """Run one batch statement until it deletes fewer than a batch."""
        while stop is None or not stop.is_set():
            started = time.monotonic()
            row = await self.db.fetch_one(query, {"before": before, "limit": self.batch})
            took = time.monotonic() - started
            assert row is not None
            counts = {counted: row["n"]} if "n" in row else dict(row)
            done.add(**counts)
            metrics.purged(counts)
            if counts[counted] < self.batch:
                return
            rest = max(self.pause, took * (1 / self.duty - 1))
            if rest > 0:
                if stop is None:
                    await asyncio.sleep(rest)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rest)
