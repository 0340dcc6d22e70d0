"""Events and the wait stages waiting for them: beginning a wait, publishing an event, timeouts.

A wait stage's task stays ``pending`` (workers never claim it) with an ``event_waits`` row saying
what it waits for. It completes exactly once, by whichever comes first:

- an event with its name and key: published by ``ctx.emit`` (with the emitting stage's
  completion), ``POST /api/events`` or ``flowbot events send``; or one that arrived before the
  wait began, within the lookback (``FLOWBOT_EVENT_LOOKBACK``);
- its deadline: the workers' timer pass sends the ``on_timeout`` task, or fails the run;
- for ``wait_for_children``: the timer pass finding no child of its run still open.

Races: every path takes the advisory lock of the wait's (event, key) before any run lock, then
reads. An event and a wait beginning at once serialise on it, so the later one sees the earlier
(no lost wake-up); an event and a timeout at once serialise too, and the later finds the wait
gone. The completion itself is guarded (pending -> completed), as a person's answer is.

A commit takes the keys it can know beforehand (events its stages emit, waits its sends route to)
first. Keys met later in the same transaction (a wait completed at once sending to another wait)
are taken after run locks; two such transactions crossing may deadlock, which Postgres detects and
the worker's commit retries.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.context import EventSend, Outcome, Send
from engine.deadlines import FORM_TIMEOUT_EVENT
from engine.errors import FlowbotError
from engine.routing import NewTask, route
from engine.store import deadlines, queries, wait_queries
from engine.store.audit import write as write_audit
from engine.store.db import Row, Tx
from engine.store.ports import StoreView
from engine.store.results import CommitResult, Completion, Finished
from engine.waiting import CHILDREN_EVENT, CHILDREN_FINISHED
from engine.workflow import StageKind

log = logging.getLogger(__name__)

#: Children listed in a ``children.finished`` payload (all are counted).
MAX_CHILDREN_LISTED = 1000


def lock_key(event: str, key: str) -> str:
    """The advisory lock name of an (event, key) pair."""
    return f"{event}\x1f{key}"


def keys_of(finished: Sequence[Finished]) -> list[str]:
    """The (event, key) locks a commit of ``finished`` will need: events they emit, waits they
    route to (taken before the runs' locks, the order every path uses)."""
    keys = []
    for f in finished:
        keys += [lock_key(e.name, e.key) for e in f.outcome.events]
        for t in f.routes.tasks:
            if t.stage.kind is StageKind.WAIT:
                keys.append(lock_key(t.stage.options["event"], t.wait_key or str(f.task["run_id"])))
    return keys


async def lock(tx: Tx, keys: Sequence[str]) -> None:
    """Hold the locks of these (event, key) pairs until the transaction ends."""
    if keys:
        await tx.fetch_value(wait_queries.LOCK_EVENT_KEYS, {"keys": list(keys)})


# -- beginning ------------------------------------------------------------------------------------


async def begin(store: StoreView, tx: Tx, tasks: Sequence[NewTask], created: Sequence[Row], now: dt.datetime) -> None:
    """Register the waits among ``created`` (the rows of ``tasks``, in order) and complete at once
    those an early event (or, for children, no open child) already satisfies."""
    rows = []
    for t, row in zip(tasks, created, strict=True):
        if t.stage.kind is not StageKind.WAIT:
            continue
        timeout = t.stage.options.get("timeout")
        rows.append((row, t.stage.options["event"], t.wait_key or str(row["run_id"]),
                     timeout.after(now, t.stage.workflow.timezone) if timeout else None))
    await lock(tx, [lock_key(event, key) for _, event, key, _ in rows])
    await tx.execute(wait_queries.INSERT_WAITS, {
        "task_ids": [r["id"] for r, *_ in rows], "run_ids": [r["run_id"] for r, *_ in rows],
        "events": [e for _, e, _, _ in rows], "keys": [k for _, _, k, _ in rows],
        "deadlines": [d for *_, d in rows], "now": now,
    })
    done: list[Completion] = []
    plain = [(r, e, k) for r, e, k, _ in rows if e != CHILDREN_EVENT]
    if plain:
        early = await tx.fetch_all(wait_queries.EARLY_EVENTS, {
            "task_ids": [r["id"] for r, _, _ in plain], "run_ids": [r["run_id"] for r, _, _ in plain],
            "stages": [r["stage"] for r, _, _ in plain], "events": [e for _, e, _ in plain],
            "keys": [k for _, _, k in plain], "since": now - dt.timedelta(seconds=store.event_lookback),
        })
        by_task = {e["task_id"]: e for e in early}
        for row, event, key in plain:
            if (found := by_task.get(row["id"])) is not None:
                done.append(_arrived(row, event, key, found["id"], found["payload"]))
    for row, event, _key, _ in rows:
        if event == CHILDREN_EVENT and not await tx.fetch_value(wait_queries.OPEN_CHILDREN, {"id": row["run_id"]}):
            done.append(await _children_done(tx, row))
    if done:
        await complete(store, tx, done, now)


def _arrived(row: Row, event: str, key: str, event_id: int, payload: dict[str, Any]) -> Completion:
    merged = {**row["payload"], **payload}
    return Completion(row, Send(event, raw=json.dumps(merged, separators=(",", ":"))), f"event:{event_id}",
                      f"event {event} (key {key}) #{event_id} arrived")


async def _children_done(tx: Tx, row: Row) -> Completion:
    kids = await tx.fetch_all(wait_queries.CHILDREN_OF, {"id": row["run_id"], "limit": MAX_CHILDREN_LISTED})
    counts = {r["status"]: int(r["n"]) for r in await tx.fetch_all(wait_queries.CHILDREN_COUNTS, {"id": row["run_id"]})}
    payload = {**row["payload"], "children": [
        {"run_id": str(k["id"]), "workflow": k["workflow"], "status": k["status"], "error": k["error"],
         "context": k["context"]} for k in kids], "children_counts": counts}
    total = sum(counts.values())
    return Completion(row, Send(CHILDREN_FINISHED, raw=json.dumps(payload, separators=(",", ":"), default=str)),
                      "children", f"{total} child run(s) finished: "
                      + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


# -- completing -----------------------------------------------------------------------------------


async def complete(store: StoreView, tx: Tx, items: Sequence[Completion], now: dt.datetime) -> set[int]:
    """End waits in ``tx`` (their keys held): each sends its task, or fails with its run. Guarded:
    a wait some other path already ended is left alone. Returns the ids of the tasks this call ended."""
    if not items:
        return set()
    run_ids = sorted({str(i.task["run_id"]) for i in items})
    await tx.execute(queries.LOCK_RUNS, {"ids": run_ids})
    finished: list[Finished] = []
    failing: list[Completion] = []
    for item in items:
        if item.send is None:
            failing.append(item)
            continue
        try:
            routes = route(store.stage_of(item.task), [item.send], source_task_id=item.task["id"])
        except FlowbotError as exc:
            failing.append(Completion(item.task, None, item.actor, f"{item.message}, but: {exc}"))
            continue
        line = {"at": now.isoformat(), "message": item.message}
        finished.append(Finished(item.task, Outcome(sends=[item.send], log=[line], effects=list(item.effects)),
                                 routes, audit=item.audit))
    ended: set[int] = set()
    if finished:
        done = await store.complete_rows(tx, finished, worker=None, from_status="pending", now=now,
                                         actors=[_actor(items, f.task["id"]) for f in finished])
        ok = {r["id"] for r in done}
        ended |= ok
        await write_audit(tx, [f.audit for f in finished if f.audit is not None and f.task["id"] in ok], now)
        await store.apply(tx, [f for f in finished if f.task["id"] in ok], now, CommitResult())
    if failing:
        for actor in sorted({i.actor for i in failing}):
            group = [i for i in failing if i.actor == actor]
            moved = await tx.fetch_all(wait_queries.FAIL_WAITS, {
                "ids": [i.task["id"] for i in group], "errors": [i.message for i in group], "actor": actor,
                "now": now})
            failed_ids = {r["id"] for r in moved}
            ended |= failed_ids
            kept = [i for i in group if i.task["id"] in failed_ids]
            await write_audit(tx, [i.audit for i in kept if i.audit is not None], now)
            await store.add_effects(tx, [(e.kind, e.payload, i.task["id"], str(i.task["run_id"]))
                                         for i in kept for e in i.effects], now)
            await store.fail_runs(tx, moved, now)
    await tx.execute(wait_queries.END_WAITS, {"ids": [i.task["id"] for i in items]})
    await store.refresh_runs(tx, run_ids, now)
    return ended


def _actor(items: Sequence[Completion], task_id: int) -> str:
    return next(i.actor for i in items if i.task["id"] == task_id)


# -- events ---------------------------------------------------------------------------------------


@dataclass
class Published:
    """An event stored, and how many waits it completed."""

    id: int
    name: str
    key: str
    matched: int


async def publish(store: StoreView, tx: Tx, events: Sequence[tuple[EventSend, str]],
                  now: dt.datetime) -> list[Published]:
    """Store events (with who sent them) and complete every open wait on their (event, key), once
    each: the first of the events on a key completes its waits."""
    if not events:
        return []
    await lock(tx, [lock_key(e.name, e.key) for e, _ in events])
    rows = await tx.fetch_all(wait_queries.INSERT_EVENTS, {
        "names": [e.name for e, _ in events], "keys": [e.key for e, _ in events],
        "payloads": [e.raw for e, _ in events], "sources": [source for _, source in events], "now": now,
    })
    first: dict[tuple[str, str], Row] = {}
    for r in rows:
        first.setdefault((r["name"], r["key"]), r)
    open_waits = await tx.fetch_all(wait_queries.OPEN_WAITS_FOR, {
        "names": [n for n, _ in first], "keys": [k for _, k in first]})
    items = []
    for w in open_waits:
        event = first[(w["event"], w["key"])]
        items.append(_arrived(w, w["event"], w["key"], event["id"], event["payload"]))
    ended = await complete(store, tx, items, now)
    matched: dict[int, int] = {}
    for item in items:
        if item.task["id"] not in ended:
            continue
        event_id = int(item.actor.removeprefix("event:"))
        matched[event_id] = matched.get(event_id, 0) + 1
    return [Published(r["id"], r["name"], r["key"], matched.get(r["id"], 0)) for r in rows]


async def send_event(store: StoreView, name: str, key: str, payload: dict[str, Any], *, source: str) -> Published:
    """Publish one event in its own transaction (``POST /api/events``, ``flowbot events send``)."""
    raw = json.dumps(payload, separators=(",", ":"))
    async with store.db.transaction() as tx:
        [published] = await publish(store, tx, [(EventSend(name, key, raw), source)], store.clock())
    log.info("event %s (key %s) #%d: %d wait(s) completed", name, key, published.id, published.matched,
             extra={"action": "event", "event": name, "matched": published.matched})
    return published


# -- the timer pass -------------------------------------------------------------------------------


async def next_timer(store: StoreView) -> dt.datetime | None:
    """When the next timed task or wait deadline falls due (None: none pending)."""
    async with store.db.transaction() as tx:
        due: dt.datetime | None = await tx.fetch_value(wait_queries.NEXT_TIMER, {"now": store.clock()})
    return due


async def expire(store: StoreView, *, limit: int = 100) -> int:
    """End the waits past their deadline (on_timeout task, or the run fails) and the children waits
    whose children have all finished; how many ended. Any number of workers may run it: each wait
    ends once."""
    return (await timer_pass(store, limit=limit))[0]


async def timer_pass(store: StoreView, *, limit: int = 100) -> tuple[int, dt.datetime | None]:
    """``expire``, and when the next timed task or deadline falls due after it (a worker's
    wake-up): one transaction when nothing is due."""
    now = store.clock()
    async with store.db.transaction() as tx:
        due = await tx.fetch_all(wait_queries.DUE_WAITS, {"now": now, "limit": limit})
        children = await tx.fetch_all(wait_queries.FINISHED_CHILDREN_WAITS, {"event": CHILDREN_EVENT, "limit": limit})
        upcoming: dt.datetime | None = await tx.fetch_value(wait_queries.NEXT_TIMER, {"now": now})
    ended = 0
    if due:
        async with store.db.transaction() as tx:
            await lock(tx, [lock_key(r["event"], r["key"]) for r in due])
            rows = await tx.fetch_all(wait_queries.LOCK_DUE_WAITS, {"ids": [r["task_id"] for r in due], "now": now})
            forms = [r for r in rows if r["event"] == FORM_TIMEOUT_EVENT]
            ended += await _finish(store, tx, [r for r in rows if r["event"] != FORM_TIMEOUT_EVENT], now, _timed_out)
            ended += await _form_timeouts(store, tx, forms, now)
    if children:
        async with store.db.transaction() as tx:
            await lock(tx, [lock_key(r["event"], r["key"]) for r in children])
            rows = await tx.fetch_all(wait_queries.LOCK_WAITS, {"ids": [r["task_id"] for r in children]})
            rows = [r for r in rows if r["workflow"] in store.registry.workflows
                    and not await tx.fetch_value(wait_queries.OPEN_CHILDREN, {"id": r["run_id"]})]
            items = [await _children_done(tx, r) for r in rows if _live(r)]
            ended += len(await complete(store, tx, items, now))
            await tx.execute(wait_queries.END_WAITS, {"ids": [r["id"] for r in rows if not _live(r)]})
    if ended:  # the waits that ended (and what they sent) move the next timer
        upcoming = await next_timer(store)
    return ended, upcoming


async def _form_timeouts(store: StoreView, tx: Tx, rows: Sequence[Row], now: dt.datetime) -> int:
    """Fire the deadlines of form tasks (``engine.store.deadlines``): completions first, then
    handovers, so this transaction takes run locks before task row locks, as a person's answer
    does."""
    if not rows:
        return 0
    live = [r for r in rows if _live(r) and r["workflow"] in store.registry.workflows]
    await tx.execute(wait_queries.END_WAITS, {"ids": [r["id"] for r in rows if not _live(r)]})
    found = await deadlines.decisions_of(tx, [r["id"] for r in live])
    items, handovers = deadlines.plan(store, live, found)
    ended = len(await complete(store, tx, items, now))
    return ended + await deadlines.hand_over(store, tx, handovers, now)


def _live(row: Row) -> bool:
    return row["status"] == "pending" and row["run_status"] in ("running", "waiting")


def _timed_out(store: StoreView, row: Row) -> Completion:
    stage = store.stage_of(row)
    after = stage.options.get("timeout")
    on_timeout = stage.options.get("on_timeout")
    message = f"wait {stage.name} timed out after {after}"
    if on_timeout is None:
        return Completion(row, None, "timeout", message)
    return Completion(row, Send(on_timeout, raw=json.dumps(row["payload"], separators=(",", ":"))), "timeout", message)


async def _finish(store: StoreView, tx: Tx, rows: Sequence[Row], now: dt.datetime,
                  outcome: Callable[[StoreView, Row], Completion]) -> int:
    """Complete the live waits among ``rows`` with ``outcome(store, row)``; forget the others."""
    items = []
    for row in rows:
        if not _live(row):
            continue
        if row["workflow"] not in store.registry.workflows:
            continue  # another deployment's workflow: its own workers end it
        try:
            items.append(outcome(store, row))
        except FlowbotError as exc:  # its workflow or stage is gone from this deployment
            items.append(Completion(row, None, "timeout", f"wait cannot end: {exc}"))
    ended = await complete(store, tx, items, now)
    await tx.execute(wait_queries.END_WAITS, {"ids": [r["id"] for r in rows if not _live(r)]})
    return len(ended)
