"""Workers: claim script tasks, run their stages, commit the results in batches.

One worker is one asyncio loop with ``concurrency`` task slots. It claims tasks into free slots,
up to ``claim_batch`` per query (two claims in flight while there is a backlog), runs them
concurrently (async stages on the loop, sync ones in a thread pool), and commits whatever
finished in one transaction per batch: completions, the tasks they sent, their events and one
NOTIFY. Up to ``commit_concurrency`` commits are in flight; each takes every result gathered
since the previous one started, so under load batches grow by themselves while under light load
each task commits on its own at once. A commit that fails is retried (through a database outage,
for as long as the leases last); one that keeps failing drops nothing (the leases expire and the
tasks run again). LISTEN/NOTIFY wakes idle workers; a drained worker also sleeps no longer than
until the next timed task or wait deadline is due (ending due waits on the way:
``engine.store.waits.expire``); a slow poll is the fallback for a lost notification and while the
LISTEN connection is being re-established. While the database is unavailable, claims back off
(up to a second) and are tried again at once when LISTEN is back; the database logs the outage
once, not every loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from engine import logs
from engine.errors import DatabaseError, DatabaseUnavailable, FlowbotError
from engine.runtime.runner import StageThreads, failure, run_script
from engine.store import waits
from engine.store.db import NOTIFY_CHANNEL, Row, outage_backoff
from engine.store.tasks import Failed, Finished, Store

log = logging.getLogger(__name__)

#: Waits ended per timer pass (a full pass is followed by another at once).
TIMER_BATCH = 100
#: Seconds between timer passes while every claim comes back full (idle workers pass when drained).
TIMER_PASS_UNDER_LOAD = 1.0


@dataclass
class WorkerOptions:
    """How one worker behaves."""

    #: Tasks one worker holds at once (claimed and not yet committed).
    concurrency: int = 200
    #: Threads for sync stage functions (async stages need none); more sync stages than this
    #: wait for a thread while keeping their slot and lease.
    threads: int = 32
    #: Most tasks claimed in one query; by default a quarter of ``concurrency`` (at most 500), so
    #: that one batch is being claimed while others run and commit.
    claim_batch: int | None = None
    #: Commits in flight at once: while one waits on the database, the next batch gathers.
    commit_concurrency: int = 3
    #: Claims in flight at once while there is a backlog (an idle worker polls with one).
    claim_concurrency: int = 2
    poll_interval: float = 5.0
    #: How long shutdown waits for running stages before releasing their tasks.
    shutdown_grace: float = 20.0
    reap_interval: float = 5.0
    max_payload_bytes: int = 256 * 1024
    workflows: tuple[str, ...] | None = None
    #: Awaited before each claim (``App.background_gate``: answers to people go first).
    before_claim: Callable[[], Awaitable[None]] | None = None


def worker_id() -> str:
    """A unique, readable id: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def log_failure(failed: Failed) -> None:
    """Log a failed attempt once it is committed: a WARNING with the traceback while retries are
    left, an ERROR when it was the last one (the task and its run have failed)."""
    row = failed.task
    where = logs.task_fields(row)
    stage = f"{row['workflow']}/{row['stage']}"
    attempts, most = row["attempts"], row.get("max_attempts") or row["attempts"]
    if attempts < most:
        log.warning("stage %s failed (attempt %d of %d; task %s, run %s), retrying in %.0f s:\n%s",
                    stage, attempts, most, row["id"], where["run_id"], failed.delay, failed.error,
                    extra={"action": "stage_failed", **where})
    else:
        log.error("stage %s failed after %d attempt(s) (task %s, run %s): the task and its run have failed:\n%s",
                  stage, attempts, row["id"], where["run_id"], failed.error,
                  extra={"action": "stage_gave_up", **where})


class Worker:
    """Runs script tasks until told to stop."""

    def __init__(self, store: Store, options: WorkerOptions | None = None, *, name: str | None = None) -> None:
        self.store = store
        self.options = options or WorkerOptions()
        self.id = name or worker_id()
        self._wake = asyncio.Event()
        self._results: list[Finished | Failed] = []
        self._result_ready = asyncio.Event()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._names: dict[int, str] = {}  # "workflow/stage (task id)" of the running tasks, for people
        self._pending_commit: set[int] = set()
        self._slot_free = asyncio.Event()
        self._backlog = asyncio.Event()  # the last claim came back full: more claimers may help
        self._reserved = 0  # slots asked for by claims in flight
        self._commits: set[asyncio.Task[None]] = set()
        self._claim_batch = self.options.claim_batch or max(1, min(500, self.options.concurrency // 4))
        threads = max(1, min(self.options.concurrency, self.options.threads))
        self._executor = StageThreads(threads)
        self.completed = 0
        self.failed = 0
        #: Set when a claim failed with the database unavailable: it may have locked tasks whose
        #: answer never arrived (their claim time is at or before this).
        self._unreceived_before: dt.datetime | None = None
        self._timers_at = 0.0

    @property
    def busy(self) -> int:
        """Tasks claimed and not yet committed."""
        return len(self._running) + len(self._pending_commit)

    def wake(self, _payload: str = "") -> None:
        """Something new may be claimable (NOTIFY arrived)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then shut down gracefully (never losing a task)."""
        log.info("worker started", extra={"action": "worker_start", "worker": self.id})
        flusher = asyncio.create_task(self._flush_loop())
        side = [asyncio.create_task(self._heartbeat_loop(stop)), asyncio.create_task(self._reap_loop(stop))]
        try:
            async with self.store.db.listen(NOTIFY_CHANNEL, self.wake), asyncio.TaskGroup() as claimers:
                for n in range(max(1, self.options.claim_concurrency)):
                    claimers.create_task(self._claim_loop(stop, primary=n == 0))
        finally:
            await self._shutdown(flusher, side)
        log.info("worker stopped", extra={"action": "worker_stop", "worker": self.id})

    async def _claim_loop(self, stop: asyncio.Event, *, primary: bool) -> None:
        """Claim tasks into free slots. The primary claimer also waits for NOTIFY and polls; the
        others only help while claims come back full (a backlog), so an idle worker sends one
        query per poll interval."""
        stopping = asyncio.create_task(stop.wait())
        failures = 0
        try:
            while not stop.is_set():
                if not primary and not self._backlog.is_set():
                    await self._wait_any(self._backlog.wait(), stopping)
                    continue
                if self.options.before_claim is not None:
                    await self.options.before_claim()
                free = self.options.concurrency - self.busy - self._reserved
                if free <= 0:
                    await self._wait_any(self._slot_free.wait(), stopping)
                    self._slot_free.clear()
                    continue
                if primary:
                    self._wake.clear()
                want = min(free, self._claim_batch)
                self._reserved += want
                try:
                    rows = await self.store.claim(self.id, want, self.options.workflows)
                    failures = 0
                except DatabaseError as exc:
                    if isinstance(exc, DatabaseUnavailable):  # an outage is logged once, by the database
                        self._unreceived_before = self.store.clock()
                    else:
                        log.warning("claim failed: %s", exc, extra={"action": "claim_error"})
                    rows = []
                    failures += 1
                finally:
                    self._reserved -= want
                if failures:
                    # Cut short when LISTEN is back (the database is too) or on stop.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_any(self._wake.wait(), stopping), outage_backoff(failures))
                    self._wake.clear()
                    continue
                for row in rows:
                    self._names[row["id"]] = f"{row['workflow']}/{row['stage']} (task {row['id']})"
                    self._running[row["id"]] = asyncio.create_task(self._execute(row))
                if not failures and self._unreceived_before is not None and not self._reserved:
                    await self._release_unreceived()
                if len(rows) == want:
                    self._backlog.set()
                    if primary and time.monotonic() - self._timers_at > TIMER_PASS_UNDER_LOAD:
                        await self._timers()  # deadlines still end while claims come back full
                    continue
                self._backlog.clear()
                if primary:
                    # Drained: sleep until a NOTIFY, the next timer, the poll interval, or stop.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_any(self._wake.wait(), stopping), await self._timers())
        finally:
            stopping.cancel()

    async def _release_unreceived(self) -> None:
        """After an outage: tasks a lost claim locked for this worker go back to pending now, not
        when their leases expire. (Only while no other claim is in flight: its tasks are not
        held yet; claims sent from now on lock with a later time.)"""
        before, self._unreceived_before = self._unreceived_before, None
        assert before is not None
        try:
            n = await self.store.release_unreceived(self.id, [*self._running, *self._pending_commit], before)
        except DatabaseError:
            self._unreceived_before = before  # the next successful claim tries again
            return
        if n:
            log.info("%d tasks claimed as the database went away released", n,
                     extra={"action": "released_unreceived", "worker": self.id})

    async def _timers(self) -> float:
        """End the waits that are due (timeouts, finished children); how long to sleep until the
        next timed task or deadline (at most the poll interval)."""
        self._timers_at = time.monotonic()
        sleep = self.options.poll_interval
        try:
            ended, due = await waits.timer_pass(self.store, limit=TIMER_BATCH)
        except DatabaseError as exc:
            if not isinstance(exc, DatabaseUnavailable):  # an outage is logged once, by the database
                log.warning("timer pass failed: %s", exc, extra={"action": "timer_error"})
            return sleep
        if ended >= TIMER_BATCH:
            return 0.0  # more are due
        if due is not None:
            until = (due - self.store.clock()).total_seconds()
            # Past due yet not ended here (another deployment's workflow): look again in a while.
            sleep = min(sleep, until if until > 0 else 1.0)
        return sleep

    @staticmethod
    async def _wait_any(*aws: Any) -> None:
        """Wait until the first of ``aws`` is done; cancel the waiters this call created."""
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t, a in zip(tasks, aws, strict=True):
                if t is not a and not t.done():
                    t.cancel()

    async def _execute(self, row: Row) -> None:
        result: Finished | Failed
        try:
            stage = self.store.stage_of(row)
        except FlowbotError as exc:
            # A task for a workflow or stage this worker's code does not have (renamed, removed,
            # or another deployment's): fail it with retries rather than hold its lease forever.
            result = failure(row, exc)
        else:
            result = await run_script(stage, row, max_payload_bytes=self.options.max_payload_bytes,
                                      executor=self._executor)
        self._running.pop(row["id"], None)
        self._names.pop(row["id"], None)
        self._pending_commit.add(row["id"])
        self._results.append(result)
        self._result_ready.set()

    async def _flush_loop(self) -> None:
        # Up to ``commit_concurrency`` commits in flight; each takes every result gathered since
        # the previous one started. Light load: one task per commit, at once. Heavy load: the
        # batches grow by themselves while earlier commits wait on the database.
        slots = asyncio.Semaphore(self.options.commit_concurrency)
        while True:
            await self._result_ready.wait()
            await slots.acquire()
            self._result_ready.clear()
            batch, self._results = self._results, []
            if not batch:
                slots.release()
                continue
            commit = asyncio.create_task(self._commit(batch))
            self._commits.add(commit)

            def done(t: asyncio.Task[None]) -> None:
                self._commits.discard(t)
                slots.release()

            commit.add_done_callback(done)

    async def flush(self) -> None:
        """Commit every result gathered so far and wait for the commits already in flight."""
        # Shutdown's final flush: commits in flight are awaited, never cancelled (cancelling one
        # would roll back stages that already ran).
        while self._results or self._commits:
            if self._results:
                batch, self._results = self._results, []
                await self._commit(batch)
            if self._commits:
                await asyncio.wait(list(self._commits))

    async def _commit(self, batch: list[Finished | Failed]) -> None:
        """Commit one batch in one transaction, retried on database errors: through an outage for
        as long as the leases last (a commit that took effect before its answer was lost finds
        its leases gone on the retry and drops its duplicate: nothing is committed twice)."""
        finished = [r for r in batch if isinstance(r, Finished)]
        failed = [r for r in batch if isinstance(r, Failed)]
        result = None
        errors = outages = 0
        give_up_at = time.monotonic() + self._shortest_lease()
        try:
            while True:
                try:
                    result = await self.store.commit(self.id, finished, failed)
                    break
                except DatabaseUnavailable:
                    outages += 1
                    if time.monotonic() + outage_backoff(outages) > give_up_at:
                        break
                    await asyncio.sleep(outage_backoff(outages))
                except DatabaseError as exc:
                    errors += 1
                    log.warning("commit failed (attempt %d): %s", errors, exc, extra={"action": "commit_error"})
                    if errors >= 5:
                        break
                    await asyncio.sleep(min(0.2 * 2 ** (errors - 1), 5))
            if result is None:
                # The leases will expire and the tasks run again: nothing is lost.
                log.error("giving up committing %d results", len(batch), extra={"action": "commit_gave_up"})
        except Exception:
            # Not the database's fault (a bug): same outcome, the leases expire and the tasks rerun.
            log.exception("committing %d results failed", len(batch), extra={"action": "commit_crashed"})
        finally:
            if result is not None:
                self.completed += len(result.completed)
                self.failed += len(failed)
                for f in failed:
                    log_failure(f)
                for lost in result.lost:
                    log.warning("lease of task %s was lost before completion; its result is dropped",
                                lost, extra={"action": "lease_lost", "task_id": lost})
            for r in batch:
                self._pending_commit.discard(r.task["id"])
            self._slot_free.set()

    def _shortest_lease(self) -> float:
        """Seconds of the shortest lease a task of this worker may hold."""
        return min([s.lease for s in self.store.registry.stages() if s.lease] + [self.store.lease_seconds])

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        # Renew well before the shortest lease runs out (a stage's lease= may be shorter than
        # the default), including results still waiting for their commit. Runs until shutdown
        # cancels it, after the grace period: stages finishing after stop keep their leases.
        while True:
            await asyncio.sleep(max(0.2, self._shortest_lease() / 3))
            ids = [*self._running, *self._pending_commit]
            if not ids:
                continue
            try:
                await self.store.heartbeat(self.id, ids)
            except DatabaseUnavailable:
                pass  # logged once by the database; the next beat tries again
            except DatabaseError as exc:
                log.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat_error"})

    async def _reap_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                moved = await self.store.reap_expired(actor=self.id)
                if moved:
                    log.info("%d expired leases reverted", len(moved), extra={"action": "reaped"})
            except DatabaseUnavailable:
                pass  # logged once by the database
            except DatabaseError as exc:
                log.warning("reaper failed: %s", exc, extra={"action": "reap_error"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.reap_interval)

    async def _shutdown(self, flusher: asyncio.Task[None], side: list[asyncio.Task[None]]) -> None:
        heartbeat, *others = side
        for t in others:
            t.cancel()
        running = dict(self._running)
        if running:
            grace = self.options.shutdown_grace
            log.warning("stopping: waiting up to %g s for %d running stage(s): %s", grace, len(running),
                        self._describe(running), extra={"action": "worker_stopping", "worker": self.id})
            _done, not_done = await asyncio.wait(running.values(), timeout=grace)
            for t in not_done:
                t.cancel()
            if not_done:
                await asyncio.wait(not_done, timeout=1)
        flusher.cancel()
        await self.flush()
        heartbeat.cancel()
        # Queued sync stages never start now; those already in a thread cannot be stopped.
        self._executor.shutdown(wait=False, cancel_futures=True)
        leftover = list(self._running)
        stuck = sorted(self._executor.busy & set(leftover))
        free = [task_id for task_id in leftover if task_id not in stuck]
        try:
            if free:
                n = await self.store.release(self.id, free)
                log.info("released %d unfinished tasks", n, extra={"action": "released"})
            if stuck:
                # Their stages still run in this process's threads until it exits (``flowbot``
                # exits without waiting for them): due again only after a lease, as if this worker
                # crashed, so that no other worker starts one beside the thread still running it.
                delay = float(self.store.lease_seconds)
                n = await self.store.release(self.id, stuck, delay=delay,
                                             reason="released on shutdown, its stage still running")
                log.warning("%d stage(s) still running after %g s: %s; their tasks run again in %g s, after "
                            "this process has exited", n, self.options.shutdown_grace,
                            self._describe({i: self._running[i] for i in stuck}), delay,
                            extra={"action": "released_running", "task_ids": stuck})
        except DatabaseError as exc:  # their leases expire instead
            log.warning("could not release %d unfinished tasks: %s", len(leftover), exc,
                        extra={"action": "release_error"})

    def _describe(self, running: dict[int, asyncio.Task[None]]) -> str:
        names = [self._names.get(task_id, f"task {task_id}") for task_id in sorted(running)]
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
