"""The task store: every state change of runs and tasks, each one transaction.

``Store`` turns the engine's intentions (start a run, claim tasks, commit what stages produced)
into the named statements of ``engine.store.queries``. Completions, the tasks they send, run-context
changes and outbox effects commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from engine import metrics
from engine.context import Outcome, Send
from engine.errors import RunNotFound
from engine.loader import Registry
from engine.routing import Arrival, NewTask, Routes, merge_arrivals, new_task, resolve_children, route
from engine.store import children, deadlines, ops_queries, queries, reports, trigger_queries, wait_queries, waits
from engine.store.audit import write as write_audit
from engine.store.db import NOTIFY_CHANNEL, OUTBOX_CHANNEL, Database, Row, Tx, jsonb_array
from engine.store.fanout import FreshRuns
from engine.store.results import CommitResult, Failed, Finished, Started
from engine.workflow import Stage, StageKind

Clock = Callable[[], dt.datetime]

#: Sends per COPY batch when a hook or job starts many runs (all in one transaction).
FANOUT_CHUNK = 20_000


def utcnow() -> dt.datetime:
    """The default clock (freezegun moves it in tests)."""
    return dt.datetime.now(dt.UTC)


class Store:
    """Runs and tasks in Postgres, for one set of loaded workflows."""

    def __init__(self, db: Database, registry: Registry, *, lease_seconds: int = 30,
                 clock: Clock = utcnow, event_lookback: float = 86400.0) -> None:
        self.db = db
        self.registry = registry
        self.lease_seconds = lease_seconds
        self.clock = clock
        #: Seconds an event is kept for waits that begin after it arrived.
        self.event_lookback = event_lookback

    def stage_of(self, row: Row) -> Stage:
        """The loaded stage a task row belongs to."""
        return self.registry.get(row["workflow"]).stage(row["stage"])

    def version_of(self, workflow: str) -> str | None:
        """The version of the loaded code of ``workflow`` (None for a workflow not loaded here)."""
        wf = self.registry.workflows.get(workflow)
        return wf.version if wf is not None else None

    # -- starting runs ------------------------------------------------------------------------

    async def start_run(self, stage: Stage, payload: dict[str, Any], *, type: str = "start",
                        trigger: dict[str, Any] | None = None,
                        context: dict[str, Any] | None = None,
                        within: Callable[[Tx, str], Awaitable[None]] | None = None) -> tuple[str, int]:
        """A new run with one task at ``stage`` (a manual start); returns (run id, task id).

        ``within(tx, run_id)`` runs in the same transaction (an audit record, a rerun link)."""
        now = self.clock()
        async with self.db.transaction() as tx:
            fresh = (stage.workflow.name, trigger or {"kind": "manual"}, context or {})
            [run_id] = await self._insert_runs(tx, [fresh], now)
            created = await self._insert_tasks(tx, [new_task(stage, type, payload, run_id=run_id)], now)
            await tx.execute(queries.REFRESH_RUN_STATUS, {"ids": [run_id], "now": now})
            if within is not None:
                await within(tx, run_id)
        return run_id, created[0]["id"]

    async def emit(self, tx: Tx, stage: Stage, routes: Routes, *, trigger: dict[str, Any],
                   now: dt.datetime) -> list[str]:
        """Start a run for each task a hook or job sent (or add it to the run it names).

        Returns the run ids touched. Runs are created in one statement, tasks in another.
        """
        fresh = [t for t in routes.tasks if t.run_id is None]
        by_send: dict[int, str] = {}
        if fresh:
            ids = await self._insert_runs(tx, [(stage.workflow.name, trigger, {}) for _ in fresh], now)
            for t, run_id in zip(fresh, ids, strict=True):
                t.run_id = run_id
                by_send[id(t)] = run_id
        named = sorted({t.run_id for t in routes.tasks if id(t) not in by_send and t.run_id})
        if named:
            await tx.execute(queries.LOCK_RUNS, {"ids": named})
        await self._insert_tasks(tx, routes.tasks, now)
        run_ids = sorted({str(t.run_id) for t in routes.tasks})
        await tx.execute(queries.REFRESH_RUN_STATUS, {"ids": run_ids, "now": now})
        return run_ids

    async def start_runs(self, tx: Tx, stage: Stage, sends: Sequence[Send], *, trigger: dict[str, Any],
                         now: dt.datetime, context: dict[str, Any] | None = None,
                         actor: str | None = None, chunk: int = FANOUT_CHUNK) -> Started:
        """Start one run per send of a hook or job (or add the send to the run it names).

        Fresh runs and their first tasks go in one statement per ``chunk`` sends, all inside
        ``tx``: 100,000 sends commit together with the job run or hook delivery, or not at all.
        A send no transition takes starts nothing and is returned as unrouted.
        """
        actor = actor or f"{stage.kind.value}:{stage.key}"
        started = Started()
        fresh = [s for s in sends if s.run_id is None]
        named = [s for s in sends if s.run_id is not None]
        if fresh:
            await self._start_fresh(tx, stage, fresh, trigger, context or {}, now, actor, chunk, started)
        if named:
            await self._send_to_named(tx, stage, named, trigger, now, started)
        return started

    async def _start_fresh(self, tx: Tx, stage: Stage, sends: list[Send], trigger: dict[str, Any],
                           context: dict[str, Any], now: dt.datetime, actor: str, chunk: int,
                           started: Started) -> None:
        """New runs for ``sends`` and their first tasks, ``chunk`` sends per batch."""
        for at in range(0, len(sends), chunk):
            batch = self.fresh_runs(stage, trigger=trigger, now=now, actor=actor)
            batch.set_context(context)
            for send in sends[at:at + chunk]:
                batch.add(send)
            started.merge(await self.write_fresh(tx, batch))

    def fresh_runs(self, stage: Stage, *, trigger: dict[str, Any], now: dt.datetime,
                   actor: str | None = None) -> FreshRuns:
        """An empty batch of new runs started by ``stage`` (fill it with ``add``; no I/O)."""
        return FreshRuns(stage, trigger, now, actor or f"{stage.kind.value}:{stage.key}", self.lease_seconds)

    async def write_fresh(self, tx: Tx, batch: FreshRuns) -> Started:
        """Write a batch of new runs and their first tasks in ``tx``: COPY for the runs and their
        script tasks, the ordinary statements for form tasks and join arrivals."""
        started = Started(run_ids=batch.run_ids, unrouted=batch.unrouted)
        if not batch.runs:
            return started
        await tx.copy_binary(trigger_queries.COPY_RUNS, batch.runs)
        if batch.script_tasks:
            await tx.copy_binary(trigger_queries.COPY_TASKS, batch.tasks)
            await tx.notify()
        created = await self._insert_tasks(tx, batch.forms, batch.now, batch.actor)
        if batch.arrivals:
            created += await self._insert_tasks(tx, await self._join(tx, batch.arrivals, batch.now),
                                                batch.now, batch.actor)
        started.tasks = batch.script_tasks + len(created)
        return started

    async def _send_to_named(self, tx: Tx, stage: Stage, sends: list[Send], trigger: dict[str, Any],
                             now: dt.datetime, started: Started) -> None:
        ids = sorted({str(s.run_id) for s in sends})
        try:
            uuids = [uuid.UUID(i) for i in ids]
        except ValueError as exc:
            raise RunNotFound(f"{stage.key}: a send names run {exc}, which is not a run id") from None
        rows = await tx.fetch_all(trigger_queries.RUNS_WORKFLOWS, {"ids": uuids})
        found = {str(r["id"]): r["workflow"] for r in rows}
        for run_id in ids:
            if run_id not in found:
                raise RunNotFound(f"{stage.key}: a send names run {run_id}, which does not exist")
            if found[run_id] != stage.workflow.name:
                raise RunNotFound(f"{stage.key}: run {run_id} belongs to workflow {found[run_id]!r}, "
                                  f"not {stage.workflow.name!r}")
        tasks: list[NewTask] = []
        pairs: list[tuple[str, Arrival]] = []
        per_run: dict[str, list[dict[str, Any]]] = {}
        for send in sends:
            routes = route(stage, [send])
            tasks.extend(routes.tasks)
            pairs.extend((str(send.run_id), a) for a in routes.arrivals)
            for u in routes.unrouted:
                per_run.setdefault(str(send.run_id), []).append({**u, "at": now.isoformat()})
        tasks.extend(await self._join(tx, pairs, now))
        if tasks:
            await self.emit(tx, stage, Routes(tasks=tasks), trigger=trigger, now=now)
            started.tasks += len(tasks)
        if per_run:
            await tx.execute(queries.APPEND_UNROUTED,
                             {"ids": list(per_run), "items": jsonb_array(per_run.values()), "now": now})
            started.unrouted.extend(u for items in per_run.values() for u in items)
        for run_id in ids:
            if run_id not in started.run_ids:
                started.run_ids.append(run_id)

    async def _insert_runs(self, tx: Tx, runs: Sequence[tuple[str, dict[str, Any], dict[str, Any]]],
                           now: dt.datetime) -> list[str]:
        rows = await tx.fetch_all(
            queries.INSERT_RUNS,
            {"workflows": [r[0] for r in runs], "versions": [self.version_of(r[0]) for r in runs],
             "triggers": jsonb_array(r[1] for r in runs),
             "contexts": jsonb_array(r[2] for r in runs), "now": now},
        )
        return [str(r["id"]) for r in rows]

    async def _insert_tasks(self, tx: Tx, tasks: Sequence[NewTask], now: dt.datetime,
                            actor: str = "engine") -> list[Row]:
        """Insert ``tasks``; the same statement queues the assignment of the form tasks and wakes
        the workers for the script tasks. Wait tasks begin waiting (and may complete at once)."""
        if not tasks:
            return []
        created = await tx.fetch_all(
            queries.INSERT_TASKS,
            {
                "run_ids": [uuid.UUID(str(t.run_id)) for t in tasks],
                "workflows": [t.stage.workflow.name for t in tasks],
                "stages": [t.stage.name for t in tasks],
                "kinds": [t.stage.kind.value for t in tasks],
                "types": [t.type for t in tasks],
                "payloads": jsonb_array(t.payload for t in tasks),
                "max_attempts": [t.stage.max_attempts for t in tasks],
                "leases": [t.stage.lease or self.lease_seconds for t in tasks],
                "sources": [t.source_task_id for t in tasks],
                "assignees": jsonb_array(t.assignee for t in tasks),
                "dues": [t.due.resolve(now, t.stage.workflow.timezone) if t.due else None for t in tasks],
                "now": now,
                "actor": actor,
                "channel": NOTIFY_CHANNEL,
                "outbox_channel": OUTBOX_CHANNEL,
            },
        )
        if any(t.stage.kind is StageKind.WAIT for t in tasks):
            await waits.begin(self, tx, tasks, created, now)
        if any(t.stage.kind is StageKind.FORM and t.stage.options.get("deadlines") for t in tasks):
            await deadlines.begin(tx, tasks, created, now)
        return created

    async def add_effects(self, tx: Tx, effects: Iterable[tuple[str, dict[str, Any], int | None, str | None]],
                          now: dt.datetime) -> None:
        """Write outbox rows (kind, payload, task id, run id) in this transaction."""
        effects = list(effects)
        if not effects:
            return
        await tx.execute(
            queries.INSERT_OUTBOX,
            {"kinds": [e[0] for e in effects], "payloads": jsonb_array(e[1] for e in effects),
             "task_ids": [e[2] for e in effects],
             "run_ids": [uuid.UUID(e[3]) if e[3] else None for e in effects], "now": now,
             "outbox_channel": OUTBOX_CHANNEL},
        )

    # -- the lifecycle ------------------------------------------------------------------------

    async def claim(self, worker: str, limit: int, workflows: Sequence[str] | None = None) -> list[Row]:
        """Lock up to ``limit`` due script tasks for ``worker`` (never one task to two workers).

        One statement in its own transaction: one round trip between a NOTIFY and the stages."""
        rows = await self.db.fetch_all(
            queries.CLAIM_TASKS,
            {"worker": worker, "limit": limit, "now": self.clock(),
             "workflows": list(workflows) if workflows else None},
        )
        metrics.tasks_claimed(rows)
        return rows

    async def heartbeat(self, worker: str, task_ids: Sequence[int]) -> set[int]:
        """Extend the leases of running tasks; returns the ids this worker still holds."""
        if not task_ids:
            return set()
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(queries.HEARTBEAT, {"ids": list(task_ids), "worker": worker, "now": self.clock()})
        return {r["id"] for r in rows}

    async def release(self, worker: str, task_ids: Sequence[int], *, delay: float = 0.0,
                      reason: str = "released on shutdown") -> int:
        """Give unfinished tasks back on shutdown (pending again, the attempt not counted), due
        again after ``delay`` seconds."""
        if not task_ids:
            return 0
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(queries.RELEASE_TASKS,
                                      {"ids": list(task_ids), "worker": worker, "now": self.clock(),
                                       "delay": delay, "reason": reason})
            if rows:
                await tx.notify()
        return len(rows)

    async def release_unreceived(self, worker: str, held: Sequence[int], before: dt.datetime) -> int:
        """Give back tasks ``worker`` claimed at or before ``before`` but never received (a claim
        whose answer was lost with its connection), rather than leave them locked until their
        leases expire. ``held``: the tasks it does have."""
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all(queries.RELEASE_UNRECEIVED, {"worker": worker, "held": list(held),
                                                                   "before": before, "now": self.clock()})
            if rows:
                await tx.notify()
        return len(rows)

    async def reap_expired(self, actor: str = "reaper", limit: int = 500) -> list[Row]:
        """Expired leases back to pending (or failed when out of attempts)."""
        now = self.clock()
        async with self.db.transaction() as tx:
            runs = await tx.fetch_all(queries.EXPIRED_LEASE_RUNS, {"now": now, "limit": limit})
            if not runs:
                return []
            run_ids = [str(r["run_id"]) for r in runs]
            await tx.execute(queries.LOCK_RUNS, {"ids": run_ids})
            moved = await tx.fetch_all(queries.REAP_EXPIRED, {"run_ids": run_ids, "now": now, "actor": actor})
            await self.fail_runs(tx, moved, now)
            if any(r["status"] == "pending" for r in moved):
                await tx.notify()
            await tx.execute(queries.REFRESH_RUN_STATUS, {"ids": run_ids, "now": now})
        return moved

    async def fail_runs(self, tx: Tx, moved: list[Row], now: dt.datetime) -> None:
        """The runs of the tasks in ``moved`` that failed for good fail too, with the error."""
        failed = [r for r in moved if r["status"] == "failed"]
        if failed:
            runs = await tx.fetch_all(
                queries.FAIL_RUNS,
                {"ids": [str(r["run_id"]) for r in failed],
                 "errors": [f"task {r['id']} failed: {_first_line(r['error'])}" for r in failed],
                 "now": now},
            )
            if any(r["parent_run_id"] is not None for r in runs):
                await tx.notify()  # a parent waiting for its children may go on

    async def commit(self, worker: str | None, finished: Sequence[Finished], failed: Sequence[Failed] = (),
                     *, actor: str | Sequence[str] | None = None, from_status: str = "locked") -> CommitResult:
        """Complete and fail tasks in one transaction, with everything the finished ones sent
        (and the form sessions they came from closed).

        ``actor`` (who completed them: the worker by default) is one for all, or one per finished
        task (answers of different people committed together).
        """
        now = self.clock()
        result = CommitResult()
        items: list[Finished | Failed] = [*finished, *failed]
        run_ids = sorted({str(f.task["run_id"]) for f in items})
        keys = waits.keys_of(finished)
        async with self.db.transaction() as tx:
            if keys:  # before the runs: the order every path takes them in (engine.store.waits)
                await waits.lock(tx, keys)
            await tx.execute(queries.LOCK_RUNS, {"ids": run_ids})
            if failed:
                moved = await tx.fetch_all(
                    queries.RETRY_OR_FAIL_TASKS,
                    {"ids": [f.task["id"] for f in failed], "errors": [f.error for f in failed],
                     "logs": jsonb_array(f.log for f in failed), "delays": [f.delay for f in failed],
                     "versions": [self.version_of(f.task.get("workflow", "")) for f in failed],
                     "worker": worker, "now": now},
                )
                await self.fail_runs(tx, moved, now)
                if any(r["status"] == "pending" for r in moved):
                    await tx.notify()
                result.retried = [r["id"] for r in moved if r["status"] == "pending"]
                result.failed = [r["id"] for r in moved if r["status"] == "failed"]
            if finished:
                done = await self.complete_rows(tx, finished, worker=worker, from_status=from_status, now=now,
                                                actors=_actors(actor or worker or "engine", len(finished)))
                ok = {r["id"] for r in done}
                result.completed = sorted(ok)
                result.lost = [f.task["id"] for f in finished if f.task["id"] not in ok]
                await write_audit(tx, [f.audit for f in finished if f.audit is not None and f.task["id"] in ok],
                                  now)
                if from_status == "pending" and ok:
                    # A person answered: a form deadline has nothing left to do (the timer pass
                    # would forget it anyway, after waking a worker for nothing).
                    await tx.execute(wait_queries.END_WAITS, {"ids": sorted(ok)})
                await self.apply(tx, [f for f in finished if f.task["id"] in ok], now, result)
            # A run that just got a new due script task is running (the insert saw to it): deriving its
            # status again would change nothing (and is most of the work of a big batch).
            busy = {str(c["run_id"]) for c in result.created
                    if c["kind"] == StageKind.SCRIPT.value and c["available_at"] <= now}
            refresh = [run_id for run_id in run_ids if run_id not in busy]
            if refresh:
                await self.refresh_runs(tx, refresh, now)
        if metrics.enabled:
            self._count(finished, failed, result)
        return result

    @staticmethod
    def _count(finished: Sequence[Finished], failed: Sequence[Failed], result: CommitResult) -> None:
        """Count a commit's outcomes in the metrics (usually: every finished task completed)."""
        lost = set(result.lost)
        metrics.tasks_committed(
            (f.task for f in finished if not lost or f.task["id"] not in lost),
            (f.task for f in failed if f.task["id"] in result.retried),
            (f.task for f in failed if f.task["id"] in result.failed))

    async def complete_rows(self, tx: Tx, finished: Sequence[Finished], *, worker: str | None, actors: list[str],
                            from_status: str, now: dt.datetime) -> list[Row]:
        """Complete tasks (guarded: only from ``from_status``, and held by ``worker`` if given) with
        their effects and the form sessions they close; the rows of those it completed."""
        # What the finished tasks carry is written by the same statement, for those it
        # completes: a task that lost its race (no longer pending) sends nothing.
        effects = [(f.task["id"], e) for f in finished for e in f.outcome.effects]
        sessions = [(f.task["id"], f.session) for f in finished if f.session is not None]
        return await tx.fetch_all(
            queries.COMPLETE_TASKS,
            {"ids": [f.task["id"] for f in finished], "logs": jsonb_array(f.outcome.log for f in finished),
             "worker": worker, "actors": actors, "from_status": from_status, "now": now,
             "versions": [self.version_of(f.task.get("workflow", "")) for f in finished],
             "effect_task_ids": [task_id for task_id, _ in effects],
             "effect_kinds": [e.kind for _, e in effects],
             "effect_payloads": jsonb_array(e.payload for _, e in effects),
             "session_task_ids": [task_id for task_id, _ in sessions],
             "session_ids": [uuid.UUID(sid) for _, sid in sessions], "outbox_channel": OUTBOX_CHANNEL},
        )

    async def refresh_runs(self, tx: Tx, run_ids: Sequence[str], now: dt.datetime) -> None:
        """Derive the status of runs from their tasks; wake the workers when a child run finished
        (its parent may be waiting for it)."""
        changed = await tx.fetch_all(queries.REFRESH_RUN_STATUS, {"ids": list(run_ids), "now": now})
        if any(r["parent_run_id"] is not None and r["status"] == "completed" for r in changed):
            await tx.notify()

    async def apply(self, tx: Tx, finished: list[Finished], now: dt.datetime, result: CommitResult) -> None:
        """Route sends, start child runs, merge contexts, record unrouted sends and publish emitted
        events, for tasks already completed in ``tx`` (effects went with the completion)."""
        tasks: list[NewTask] = []
        arrivals: list[tuple[str, Arrival]] = []
        patches: dict[str, tuple[dict[str, Any], set[str]]] = {}
        unrouted: dict[str, list[dict[str, Any]]] = {}
        for f in finished:
            run_id = str(f.task["run_id"])
            for t in f.routes.tasks:
                t.run_id = run_id
                tasks.append(t)
            arrivals.extend((run_id, a) for a in f.routes.arrivals)
            if f.routes.unrouted:
                unrouted.setdefault(run_id, []).extend({**u, "at": now.isoformat()} for u in f.routes.unrouted)
            o = f.outcome
            if o.context_set or o.context_deleted:
                patch, deleted = patches.setdefault(run_id, ({}, set()))
                for key in o.context_deleted:
                    patch.pop(key, None)
                    deleted.add(key)
                for key, value in o.context_set.items():
                    patch[key] = value
                    deleted.discard(key)
        tasks.extend(await self._join(tx, arrivals, now))
        # Children first: a wait_for_children beginning below sees them.
        await children.start(self, tx, finished, now)
        created = await self._insert_tasks(tx, tasks, now)
        result.created = created
        if any(f.outcome.events for f in finished):
            await waits.publish(self, tx, [(e, f"task:{f.task['id']}") for f in finished for e in f.outcome.events],
                                now)
        if patches:
            await tx.execute(
                queries.PATCH_RUN_CONTEXTS,
                {"ids": list(patches), "patches": jsonb_array(p for p, _ in patches.values()),
                 "deleted": jsonb_array(sorted(d) for _, d in patches.values()), "now": now},
            )
        if unrouted:
            await tx.execute(queries.APPEND_UNROUTED,
                             {"ids": list(unrouted), "items": jsonb_array(unrouted.values()), "now": now})

    async def _join(self, tx: Tx, arrivals: list[tuple[str, Arrival]], now: dt.datetime) -> list[NewTask]:
        """Record join arrivals; a join whose every transition delivered becomes one task."""
        fired: list[NewTask] = []
        for run_id, a in arrivals:
            await tx.execute(
                queries.ADD_JOIN_ARRIVAL,
                {"run_id": uuid.UUID(run_id), "stage": a.stage.name, "source_stage": a.source.name,
                 "type": a.type, "payload": a.payload, "source_task_id": a.source_task_id, "now": now},
            )
            got = await tx.fetch_all(queries.JOIN_ARRIVALS, {"run_id": uuid.UUID(run_id), "stage": a.stage.name})
            task = merge_arrivals(a.stage, [dict(g) for g in got])
            if task is not None:
                task.run_id = run_id
                await tx.execute(queries.CLEAR_JOIN, {"run_id": uuid.UUID(run_id), "stage": a.stage.name})
                fired.append(task)
        return fired

    # -- reading ------------------------------------------------------------------------------

    async def run_ids_by_prefix(self, prefix: str) -> list[str]:
        """Ids of runs starting with ``prefix`` (what a person typed, dashes optional); at most
        two, enough to tell a unique prefix from an ambiguous one. A range of the primary key:
        one index lookup, however many runs there are."""
        bounds = run_id_bounds(prefix)
        if bounds is None:
            return []
        rows = await self.db.fetch_all(ops_queries.RUN_IDS_BY_PREFIX, {"low": bounds[0], "high": bounds[1]})
        return [str(r["id"]) for r in rows]

    async def find_run_id(self, ref: str) -> str | None:
        """The id of the run ``ref`` names: a full run id, or a unique prefix of one (at least
        ``MIN_RUN_PREFIX`` characters, as people copy short ids); None when no run matches.
        Raises RunNotFound when a prefix matches several runs."""
        ref = str(ref).strip().lower()
        try:
            return str(uuid.UUID(ref))
        except ValueError:
            pass
        if len(ref) < MIN_RUN_PREFIX or not _RUN_PREFIX.fullmatch(ref):
            return None
        ids = await self.run_ids_by_prefix(ref)
        if len(ids) > 1:
            raise RunNotFound(f"{ref} is the start of several run ids: give more of it")
        return ids[0] if ids else None

    async def get_run(self, run_id: str) -> Row | None:
        """One run by its id or a unique prefix of it (``find_run_id``), or None."""
        found = await self.find_run_id(run_id)
        if found is None:
            return None
        return await self.db.fetch_one(queries.GET_RUN, {"id": uuid.UUID(found)})

    async def report(self, run_id: str) -> dict[str, Any] | None:
        """The execution report of a run (``engine.store.reports``), or None for no such run."""
        return await reports.report(self, run_id)


#: Shortest run id prefix accepted for a run (``find_run_id``).
MIN_RUN_PREFIX = 4
_RUN_PREFIX = re.compile(r"[0-9a-f-]+")


def run_id_bounds(prefix: str) -> tuple[str, str] | None:
    """The lowest and highest run ids starting with ``prefix`` (None when it is not hex)."""
    digits = prefix.strip().lower().replace("-", "")
    if not digits or len(digits) > 32 or any(c not in "0123456789abcdef" for c in digits):
        return None
    return str(uuid.UUID(digits.ljust(32, "0"))), str(uuid.UUID(digits.ljust(32, "f")))


def _first_line(error: str | None) -> str:
    """The summary of a task's error (``Type: message``), without its traceback."""
    return (error or "").split("\n", 1)[0] or "unknown error"


def plan(stage: Stage, outcome: Outcome, *, task_id: int | None) -> Routes:
    """Route an outcome's sends and find the start stages of the runs it starts (raises
    AssigneeError when a form's rule cannot apply, PayloadError for an unknown workflow)."""
    routes = route(stage, outcome.sends, source_task_id=task_id)
    routes.children = resolve_children(stage, outcome.children)
    return routes


def _actors(actor: str | Sequence[str], n: int) -> list[str]:
    """One actor per completed task."""
    if isinstance(actor, str):
        return [actor] * n
    if len(actor) != n:
        raise ValueError(f"{len(actor)} actors for {n} completed tasks")
    return list(actor)
