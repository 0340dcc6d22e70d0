"""Workers: claim script tasks, run their stages, commit the results in batches.

One worker is one asyncio loop with ``concurrency`` task slots. It claims tasks into free slots,
up to ``claim_batch`` per query (two claims in flight while there is a backlog), runs them
concurrently (async stages on the loop, sync ones in a thread pool), and commits whatever
finished in one transaction per batch: completions, the tasks they sent, their events and one
NOTIFY. Up to ``commit_concurrency`` commits are in flight; each takes every result gathered
since the previous one started, so under load batches grow by themselves while under light load
each task commits on its own at once. A commit that fails is retried; one that keeps failing
drops nothing (the leases expire and the tasks run again). LISTEN/NOTIFY wakes idle workers; a
slow poll is the fallback for a lost notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine import logs
from engine.errors import DatabaseError, FlowbotError
from engine.runtime.runner import failure, run_script
from engine.store.db import NOTIFY_CHANNEL, Row
from engine.store.tasks import CommitResult, Failed, Finished, Store

log = logging.getLogger(__name__)


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
        self._pending_commit: set[int] = set()
        self._slot_free = asyncio.Event()
        self._backlog = asyncio.Event()  # the last claim came back full: more claimers may help
        self._reserved = 0  # slots asked for by claims in flight
        self._commits: set[asyncio.Task[None]] = set()
        self._claim_batch = self.options.claim_batch or max(1, min(500, self.options.concurrency // 4))
        threads = max(1, min(self.options.concurrency, self.options.threads))
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stage")
        self.completed = 0
        self.failed = 0

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
                except DatabaseError as exc:
                    log.warning("claim failed: %s", exc, extra={"action": "claim_error"})
                    rows = []
                    await asyncio.sleep(1)
                finally:
                    self._reserved -= want
                for row in rows:
                    self._running[row["id"]] = asyncio.create_task(self._execute(row))
                if len(rows) == want:
                    self._backlog.set()
                    continue
                self._backlog.clear()
                if primary:
                    # Drained: sleep until a NOTIFY, the poll interval, or stop.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wait_any(self._wake.wait(), stopping), self.options.poll_interval)
        finally:
            stopping.cancel()

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
        """Commit one batch in one transaction, retried on database errors."""
        finished = [r for r in batch if isinstance(r, Finished)]
        failed = [r for r in batch if isinstance(r, Failed)]
        result = None
        try:
            for attempt in range(5):
                try:
                    result = await self.store.commit(self.id, finished, failed)
                    break
                except DatabaseError as exc:
                    log.warning("commit failed (attempt %d): %s", attempt + 1, exc, extra={"action": "commit_error"})
                    await asyncio.sleep(min(0.2 * 2**attempt, 5))
            else:
                # The leases will expire and the tasks run again: nothing is lost.
                log.error("giving up committing %d results", len(batch), extra={"action": "commit_gave_up"})
        except Exception:
            # Not the database's fault (a bug): same outcome, the leases expire and the tasks rerun.
            log.exception("committing %d results failed", len(batch), extra={"action": "commit_crashed"})
        finally:
            if result is not None:
                self.completed += len(result.completed)
                self.failed += len(failed)
                self._log_outcomes(batch, result)
            for r in batch:
                self._pending_commit.discard(r.task["id"])
            self._slot_free.set()

    @staticmethod
    def _log_outcomes(batch: list[Finished | Failed], result: CommitResult) -> None:
        """A line per task that failed, will be retried, or lost its lease (with the task's fields)."""
        if not (result.lost or result.retried or result.failed):
            return
        lost, retried, failed = set(result.lost), set(result.retried), set(result.failed)
        for r in batch:
            task_id = r.task["id"]
            fields = logs.task_fields(r.task)
            if task_id in lost:
                log.warning("lease of task %s was lost before completion; its result is dropped", task_id,
                            extra={"action": "lease_lost", **fields})
            elif isinstance(r, Failed) and (task_id in retried or task_id in failed):
                error = r.error.split("\n", 1)[0]
                if task_id in failed:
                    log.warning("task %s (%s/%s) failed for good: %s", task_id, fields["workflow"], fields["stage"],
                                error, extra={"action": "task_failed", **fields})
                else:
                    log.info("task %s (%s/%s) failed, retried in %.0f s: %s", task_id, fields["workflow"],
                             fields["stage"], r.delay, error, extra={"action": "task_retried", **fields})

    async def _heartbeat_loop(self, stop: asyncio.Event) -> None:
        # Renew well before the shortest lease runs out (a stage's lease= may be shorter than
        # the default), including results still waiting for their commit. Runs until shutdown
        # cancels it, after the grace period: stages finishing after stop keep their leases.
        leases = [s.lease for s in self.store.registry.stages() if s.lease] + [self.store.lease_seconds]
        while True:
            await asyncio.sleep(max(0.2, min(leases) / 3))
            ids = [*self._running, *self._pending_commit]
            if not ids:
                continue
            try:
                await self.store.heartbeat(self.id, ids)
            except DatabaseError as exc:
                log.warning("heartbeat failed: %s", exc, extra={"action": "heartbeat_error"})

    async def _reap_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                moved = await self.store.reap_expired(actor=self.id)
                if moved:
                    log.info("%d expired leases reverted", len(moved), extra={"action": "reaped"})
            except DatabaseError as exc:
                log.warning("reaper failed: %s", exc, extra={"action": "reap_error"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.options.reap_interval)

    async def _shutdown(self, flusher: asyncio.Task[None], side: list[asyncio.Task[None]]) -> None:
        heartbeat, *others = side
        for t in others:
            t.cancel()
        running = list(self._running.values())
        if running:
            _done, not_done = await asyncio.wait(running, timeout=self.options.shutdown_grace)
            for t in not_done:
                t.cancel()
        flusher.cancel()
        await self.flush()
        heartbeat.cancel()
        leftover = list(self._running)
        if leftover:
            n = await self.store.release(self.id, leftover)
            log.info("released %d unfinished tasks", n, extra={"action": "released"})
        self._executor.shutdown(wait=False, cancel_futures=True)
