"""Committing a hook delivery: the record, the runs its sends start, and their first tasks.

Two paths with the same effect. The common case (every send starts a fresh run whose first tasks
are plain script tasks, no Slack effects) is ONE statement in its own implicit transaction
(``queries.DELIVER_HOOK``): one round trip to Postgres per request. Anything else (a send into a
named run, a form or join target, ``ctx.slack``) goes through ``Store.start_runs`` in a
transaction. Either way the response is stored with the delivery, so a redelivery replays it.
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

from engine import queries
from engine.context import Outcome, Send
from engine.db import NOTIFY_CHANNEL, Database
from engine.hooks.request import HookRequest
from engine.store import Store
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
    if outcome.effects:
        return None
    plan = []
    for send in outcome.sends:
        if send.run_id is not None:
            return None
        targets = [t.target for t in stage.outgoing if t.matches(send.type)]
        for target in targets:
            if not isinstance(target, Stage) or target.kind is not StageKind.SCRIPT or target.join is not None:
                return None
        plan.append((send, [t for t in targets if isinstance(t, Stage)]))
    return plan


def _unrouted(stage: Stage, send: Send, now: dt.datetime) -> dict[str, Any]:
    return {"stage": stage.name, "type": send.type, "task_id": None, "payload_keys": sorted(send.payload)[:20],
            "run_id": None, "at": now.isoformat()}


async def deliver(store: Store, stage: Stage, request: HookRequest, outcome: Outcome,
                  rendered: Rendered | None, waker: Waker) -> Delivered:
    """Commit what a hook's stage produced with the delivery record (``rendered`` None: the stage
    returned None and the response lists the runs started)."""
    plan = _fast_plan(stage, outcome)
    if plan is None:
        return await _deliver_in_transaction(store, stage, request, outcome, rendered)
    now = store.clock()
    run_ids: list[uuid.UUID] = []
    unrouted: list[dict[str, Any]] = []
    cols: dict[str, list[Any]] = {k: [] for k in ("task_run_ids", "stages", "types", "payloads",
                                                   "max_attempts", "leases")}
    for send, targets in plan:
        if not targets:
            unrouted.append(_unrouted(stage, send, now))
            continue
        run_id = uuid.uuid4()
        run_ids.append(run_id)
        payload = json.dumps(send.payload, separators=(",", ":"))
        for target in targets:
            cols["task_run_ids"].append(run_id)
            cols["stages"].append(target.name)
            cols["types"].append(send.type)
            cols["payloads"].append(payload)
            cols["max_attempts"].append(target.max_attempts)
            cols["leases"].append(target.lease or store.lease_seconds)
    ids = [str(r) for r in run_ids]
    status, headers, body = rendered or ok_response(ids)
    row = await store.db.fetch_one_autocommit(queries.DELIVER_HOOK, {
        "hook": stage.key, "delivery_id": request.delivery_id, "method": request.method, "status": status,
        "headers": headers, "body": body, "run_ids_json": ids, "unrouted": unrouted, "log": outcome.log,
        "now": now, "workflow": stage.workflow.name, "trigger": trigger_of(stage, request),
        "context": outcome.context_set, "run_ids": run_ids, **cols, "actor": f"hook:{stage.key}",
    })
    if row is None or row["delivery"] is None:
        return Delivered(None)
    if run_ids:
        waker.wake()
    return Delivered((status, headers, body), ids, unrouted)


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
        started = await store.start_runs(tx, stage, outcome.sends, trigger=trigger_of(stage, request), now=now,
                                         context=outcome.context_set or None)
        if outcome.effects:
            await store.add_effects(tx, [(e.kind, e.payload, None, None) for e in outcome.effects], now)
        status, headers, body = rendered or ok_response(started.run_ids)
        row = await tx.fetch_one(queries.INSERT_HOOK_DELIVERY, {
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
                await self.db.fetch_one_autocommit(queries.NOTIFY, {"channel": NOTIFY_CHANNEL})
            except Exception as exc:  # the workers' poll picks the tasks up anyway
                log.warning("could not wake the workers: %s", exc, extra={"action": "hook_wake_failed"})
                return
            await asyncio.sleep(self.min_interval)

