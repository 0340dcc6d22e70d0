"""Committing a hook delivery: the record, the runs its sends start, and their first tasks.

Two paths with the same effect. The common case (every send starts a fresh run whose first tasks
are plain script tasks, no Slack effects) goes through the ``Committer``: group commit. The
deliveries that arrive while earlier ones are being committed are gathered and committed together
by ONE statement in its own implicit transaction (``trigger_queries.DELIVER_HOOKS``): one round trip and
one commit (one WAL flush) per batch, not per request, and no added wait when the server is idle
(a lone delivery is sent at once). Each request is answered only after the statement that holds
it committed. Anything else (a send into a named run, a form or join target, ``ctx.slack``) goes
through ``Store.start_runs`` in a transaction. Either way the response is stored with the
delivery, so a redelivery replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from engine import routing
from engine.context import Outcome, Send
from engine.routing import resolve_children
from engine.store import children, queries, trigger_queries, waits
from engine.store.db import NOTIFY_CHANNEL, Database, json_text
from engine.store.groupcommit import GroupCommit
from engine.store.tasks import Store
from engine.triggers.hooks.request import HookRequest
from engine.workflow import Stage, StageKind

log = logging.getLogger(__name__)

#: (status, headers, body) of a response.
Rendered = tuple[int, dict[str, str], bytes]


@dataclass
class Delivered:
    """What committing a delivery did; ``rendered`` is None when a twin with the same delivery id
    committed first (nothing of this one was kept: replay the twin's response)."""

    rendered: Rendered | None
    run_ids: list[str] = field(default_factory=list)
    unrouted: list[dict[str, Any]] = field(default_factory=list)


def ok_response(run_ids: list[str]) -> Rendered:
    """The response of a stage that returned None."""
    body = json.dumps({"ok": True, "run_ids": run_ids}, separators=(",", ":")).encode()
    return 200, {"Content-Type": "application/json"}, body


def trigger_of(stage: Stage, request: HookRequest) -> dict[str, Any]:
    """The ``trigger`` recorded on each run a delivery starts."""
    return {"kind": "hook", "hook": stage.key, "path": stage.path, "method": request.method,
            "delivery_id": request.delivery_id}


def _fast_plan(stage: Stage, outcome: Outcome) -> list[tuple[Send, list[Stage]]] | None:
    """Each send with its target stages, if all of it fits the one-statement path; else None."""
    if outcome.effects or outcome.events or outcome.children:
        return None
    plan = []
    for send in outcome.sends:
        if send.run_id is not None or send.due is not None:
            return None
        targets = [t.target for t in stage.outgoing if t.matches(send.type)]
        for target in targets:
            if not isinstance(target, Stage) or target.kind is not StageKind.SCRIPT or target.join is not None:
                return None
        plan.append((send, [t for t in targets if isinstance(t, Stage)]))
    return plan


async def deliver(store: Store, stage: Stage, request: HookRequest, outcome: Outcome,
                  rendered: Rendered | None, committer: Committer, slots: asyncio.Semaphore) -> Delivered:
    """Commit what a hook's stage produced with the delivery record (``rendered`` None: the stage
    returned None and the response lists the runs started). ``slots`` bounds the transactions
    (the group-commit path needs none: it holds at most ``committer.max_in_flight`` connections)."""
    plan = _fast_plan(stage, outcome)
    if plan is None:
        async with slots:
            return await _deliver_in_transaction(store, stage, request, outcome, rendered)
    now = store.clock()
    run_ids: list[uuid.UUID] = []
    unrouted: list[dict[str, Any]] = []
    tasks: list[tuple[uuid.UUID, str, str, str, int, int]] = []
    for send, targets in plan:
        if not targets:
            unrouted.append(routing.unrouted(stage, send, at=now.isoformat()))
            continue
        run_id = uuid.uuid4()
        run_ids.append(run_id)
        payload = send.raw  # the JSON text ctx.send checked
        for target in targets:
            tasks.append((run_id, target.name, send.type, payload, target.max_attempts,
                          target.lease or store.lease_seconds))
    ids = [str(r) for r in run_ids]
    status, headers, body = rendered or ok_response(ids)
    item = Item(hook=stage.key, delivery_id=request.delivery_id, method=request.method, status=status,
                headers=headers, body=body, run_ids=run_ids, unrouted=unrouted, log=outcome.log, now=now,
                workflow=stage.workflow.name, version=stage.workflow.version, trigger=trigger_of(stage, request),
                context=outcome.context_set, tasks=tasks)
    if not await committer.commit(item):
        return Delivered(None)
    return Delivered((status, headers, body), ids, unrouted)


@dataclass
class Item:
    """One delivery on the group-commit path, as the statement inserts it."""

    hook: str
    delivery_id: str | None
    method: str
    status: int
    headers: dict[str, str]
    body: bytes
    run_ids: list[uuid.UUID]
    unrouted: list[dict[str, Any]]
    log: list[Any]
    now: dt.datetime
    workflow: str
    trigger: dict[str, Any]
    context: dict[str, Any] | None
    #: (run id, stage, type, payload JSON, max attempts, lease seconds) of each first task.
    tasks: list[tuple[uuid.UUID, str, str, str, int, int]]
    #: The workflow's version (``Workflow.version``), recorded on the runs the delivery starts.
    version: str | None = None


def batch_params(items: list[Item]) -> dict[str, Any]:
    """The parameters of ``trigger_queries.DELIVER_HOOKS`` for ``items`` (numbered by position)."""
    p: dict[str, list[Any]] = {k: [] for k in (
        "items", "hooks", "delivery_ids", "methods", "statuses", "headers", "bodies", "run_ids_json",
        "unrouted", "logs", "nows", "run_items", "run_ids", "workflows", "versions", "triggers", "contexts", "actors",
        "run_nows", "task_run_ids", "stages", "types", "payloads", "max_attempts", "leases")}
    for n, item in enumerate(items):
        p["items"].append(n)
        p["hooks"].append(item.hook)
        p["delivery_ids"].append(item.delivery_id)
        p["methods"].append(item.method)
        p["statuses"].append(item.status)
        p["headers"].append(json_text(item.headers))
        p["bodies"].append(item.body)
        p["run_ids_json"].append(json_text([str(r) for r in item.run_ids]))
        p["unrouted"].append(json_text(item.unrouted))
        p["logs"].append(json_text(item.log))
        p["nows"].append(item.now)
        if item.run_ids:
            trigger, context = json_text(item.trigger), json_text(item.context)
            for run_id in item.run_ids:
                p["run_items"].append(n)
                p["run_ids"].append(run_id)
                p["workflows"].append(item.workflow)
                p["versions"].append(item.version)
                p["triggers"].append(trigger)
                p["contexts"].append(context)
                p["actors"].append(f"hook:{item.hook}")
                p["run_nows"].append(item.now)
        for run_id, stage, type_, payload, max_attempts, lease in item.tasks:
            p["task_run_ids"].append(run_id)
            p["stages"].append(stage)
            p["types"].append(type_)
            p["payloads"].append(payload)
            p["max_attempts"].append(max_attempts)
            p["leases"].append(lease)
    return p


class Committer(GroupCommit[Item]):
    """Group commit for hook deliveries (``engine.store.groupcommit``): one statement commits every
    delivery that was waiting when it started.

    Two items with the same (hook, delivery id) never share a statement: the later one goes to
    the next, where it finds the first committed and is told it lost (the caller replays the
    first response). A statement of several items that fails is retried item by item.
    """

    def __init__(self, db: Database, waker: Waker, *, max_batch: int = 100, max_in_flight: int = 1) -> None:
        super().__init__(self._execute, what="hook deliveries", key=_delivery_key, max_batch=max_batch,
                         max_in_flight=max_in_flight)
        self.db = db
        self.waker = waker

    async def _execute(self, items: list[Item]) -> set[int]:
        row = await self.db.fetch_one(trigger_queries.DELIVER_HOOKS, batch_params(items))
        kept = set(row["kept"]) if row is not None else set()
        if any(items[n].run_ids for n in kept):
            self.waker.wake()
        return kept


def _delivery_key(item: Item) -> tuple[str, str] | None:
    return (item.hook, item.delivery_id) if item.delivery_id is not None else None


async def _deliver_in_transaction(store: Store, stage: Stage, request: HookRequest, outcome: Outcome,
                                  rendered: Rendered | None) -> Delivered:
    now = store.clock()
    try:
        return await _transaction(store, stage, request, outcome, rendered, now)
    except _Twin:
        return Delivered(None)


class _Twin(Exception):
    """A concurrent request with the same delivery id committed first (rolls this one back)."""


async def _transaction(store: Store, stage: Stage, request: HookRequest, outcome: Outcome,
                       rendered: Rendered | None, now: dt.datetime) -> Delivered:
    async with store.db.transaction() as tx:
        trigger = trigger_of(stage, request)
        started = await store.start_runs(tx, stage, outcome.sends, trigger=trigger, now=now,
                                         context=outcome.context_set or None)
        for start, child in resolve_children(stage, outcome.children):
            batch = children.batch(store, stage, start, trigger=trigger, now=now, parent=None)
            batch.set_context(outcome.context_set)
            batch.add(Send("start", raw=child.raw))
            started.merge(await store.write_fresh(tx, batch))
        await waits.publish(store, tx, [(e, f"hook:{stage.key}") for e in outcome.events], now)
        if outcome.effects:
            await store.add_effects(tx, [(e.kind, e.payload, None, None) for e in outcome.effects], now)
        status, headers, body = rendered or ok_response(started.run_ids)
        row = await tx.fetch_one(trigger_queries.INSERT_HOOK_DELIVERY, {
            "hook": stage.key, "delivery_id": request.delivery_id, "method": request.method,
            "status": status, "headers": headers, "body": body, "run_ids": started.run_ids,
            "unrouted": started.unrouted, "log": outcome.log, "now": now,
        })
        if row is None:
            raise _Twin()
    return Delivered((status, headers, body), started.run_ids, started.unrouted)


class Waker:
    """Wakes the workers after hook deliveries: at most one NOTIFY in flight, the rest coalesced.

    Why not NOTIFY inside the delivery's statement: Postgres serialises the commits of every
    transaction that issued a NOTIFY (a database-wide lock held through the WAL flush), which caps
    hook throughput at one fsync per request. The tasks are committed before the NOTIFY either way;
    a lost wake-up (crash in between) only delays them to the workers' next poll.
    """

    def __init__(self, db: Database, *, min_interval: float = 0.01) -> None:
        self.db = db
        #: Seconds between two NOTIFYs: under load, one wake-up per interval, not per request.
        self.min_interval = min_interval
        self._pending = False
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Ask for a NOTIFY after this point (returns at once)."""
        self._pending = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._notify())

    async def close(self) -> None:
        """Cancel a pending wake-up (shutdown)."""
        self._pending = False
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _notify(self) -> None:
        while self._pending:
            self._pending = False
            try:
                await self.db.fetch_one(queries.NOTIFY, {"channel": NOTIFY_CHANNEL})
            except Exception as exc:  # the workers' poll picks the tasks up anyway
                log.warning("could not wake the workers: %s", exc, extra={"action": "hook_wake_failed"})
                return
            await asyncio.sleep(self.min_interval)

