"""Deadlines of form tasks (``workflow.form(..., timeout=, on_timeout=)``): kept and fired.

A form task whose stage declares a timeout gets its deadline in the transaction that creates it:
an ``event_waits`` row under the reserved event ``flowbot.form.timeout`` (no event carries it),
keyed by the task id and the step it is at (``engine.deadlines.deadline_key``). So the workers'
timer pass (``engine.store.waits.timer_pass``) fires it, ``NEXT_TIMER`` wakes a worker at the
deadline, cancelling the run forgets it, and nothing polls.

Firing is guarded as a person's answer is: the completion moves the task from ``pending`` only
(``COMPLETE_TASKS`` / ``FAIL_WAITS``), and an escalation holds the task's row lock while it
checks the task is still pending. Of an answer and a timeout landing together, exactly one wins;
the other finds the task no longer pending (``completed_by`` names the winner).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine import assignees
from engine.context import Effect, Send, Task
from engine.deadlines import FORM_TIMEOUT_EVENT, TIMEOUT_ACTOR, Escalate, Step, deadline_key, level_of
from engine.errors import FlowbotError
from engine.routing import NewTask
from engine.store import queries, wait_queries
from engine.store.audit import Entry
from engine.store.audit import write as write_audit
from engine.store.db import Row, Tx
from engine.store.ports import StoreView
from engine.store.results import Completion
from engine.workflow import Stage, StageKind

#: Outbox kinds: a task handed to another assignee (also written by reminders' escalation); a task
#: closed by its timeout (its cards say so).
ESCALATED = "form.escalated"
TIMED_OUT = "form.timed_out"


def steps_of(stage: Stage) -> list[Step]:
    """The deadline steps a form stage declares (none: no timeout)."""
    steps: list[Step] = stage.options.get("deadlines") or []
    return steps


async def begin(tx: Tx, tasks: Sequence[NewTask], created: Sequence[Row], now: dt.datetime) -> None:
    """Give the new form tasks among ``created`` (the rows of ``tasks``) their first deadline."""
    rows = []
    for t, row in zip(tasks, created, strict=True):
        if t.stage.kind is StageKind.FORM and (steps := steps_of(t.stage)):
            rows.append((row, steps[0].after.after(now, t.stage.workflow.timezone)))
    if not rows:
        return
    await tx.execute(wait_queries.INSERT_WAITS, {
        "task_ids": [r["id"] for r, _ in rows], "run_ids": [r["run_id"] for r, _ in rows],
        "events": [FORM_TIMEOUT_EVENT] * len(rows), "keys": [deadline_key(r["id"], 0) for r, _ in rows],
        "deadlines": [d for _, d in rows], "now": now,
    })
    # Idle workers sleep until the next deadline they know of: this one may come sooner.
    await tx.notify()


async def deadlines_of(db: Any, task_ids: Sequence[int]) -> dict[int, dt.datetime]:
    """The open deadline of each of these form tasks that has one (``db``: a Database or a Tx)."""
    if not task_ids:
        return {}
    rows = await db.fetch_all(queries.TASK_DEADLINES, {"ids": list(task_ids), "event": FORM_TIMEOUT_EVENT})
    return {r["task_id"]: r["deadline"] for r in rows}


async def decisions_of(db: Any, task_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """The decisions made so far on approvals that need several people, per task: ``{"by",
    "decision", "comment", "at"}`` in the order they were made."""
    found: dict[int, list[dict[str, Any]]] = {}
    if not task_ids:
        return found
    for r in await db.fetch_all(queries.TASK_DECISIONS, {"ids": list(task_ids)}):
        found.setdefault(r["task_id"], []).append(
            {"by": r["person"], "decision": r["decision"], "comment": r["comment"], "at": r["decided_at"].isoformat()})
    return found


@dataclass
class Handover:
    """A form task to hand to another assignee on timeout, and its next deadline (or none)."""

    task: Row
    stage: Stage
    step: Step
    to: dict[str, Any]
    level: int


def plan(store: StoreView, rows: Sequence[Row], decisions: dict[int, list[dict[str, Any]]]
         ) -> tuple[list[Completion], list[Handover]]:
    """What each timed-out form task (live, of a loaded workflow) becomes: a completion (a task
    sent, or failed) or a handover."""
    ended: list[Completion] = []
    handed: list[Handover] = []
    for row in rows:
        try:
            stage = store.stage_of(row)
            level = level_of(row["key"])
            step = steps_of(stage)[level]
        except (FlowbotError, IndexError, ValueError) as exc:  # its stage changed since it began
            ended.append(_ended(row, None, "", f"the timeout cannot apply: {exc}", "failed"))
            continue
        outcome = step.outcome
        if isinstance(outcome, Escalate):
            try:
                to = assignees.evaluate(outcome.to, Task(row["id"], row["type"], row["payload"], row["run_id"],
                                                         row["stage"]))
            except FlowbotError as exc:
                ended.append(_ended(row, None, str(step.after),
                                    f"no answer after {step.after}, and the escalation failed: {exc}", "failed"))
                continue
            handed.append(Handover(row, stage, step, to, level))
            continue
        message = f"no answer after {step.after}: timed out ({step.describe()})"
        if outcome is None:
            ended.append(_ended(row, None, str(step.after), message, "failed"))
            continue
        payload = {**row["payload"], "timed_out": True, "timeout": str(step.after)}
        if row["id"] in decisions:
            payload["decisions"] = decisions[row["id"]]
        send = Send(outcome, raw=json.dumps(payload, separators=(",", ":"), default=str))
        ended.append(_ended(row, send, str(step.after), message, outcome))
    return ended, handed


def _ended(row: Row, send: Send | None, after: str, message: str, outcome: str) -> Completion:
    detail = {"after": after, "outcome": outcome}
    return Completion(
        row, send, TIMEOUT_ACTOR, message,
        effects=[Effect(TIMED_OUT, {"task_id": row["id"], **detail})],
        audit=Entry(actor=TIMEOUT_ACTOR, action="timeout", edge="engine", workflow=row["workflow"],
                    run_id=str(row["run_id"]), task_id=row["id"], detail=detail))


async def hand_over(store: StoreView, tx: Tx, items: Sequence[Handover], now: dt.datetime) -> int:
    """Hand timed-out tasks to their escalation assignee (each under its row lock, if still
    pending), with the next deadline when the escalation has one; how many were handed over."""
    done = 0
    for item in items:
        task = await tx.fetch_one(queries.LOCK_TASK, {"id": item.task["id"]})
        if task is None or task["status"] != "pending":
            await tx.execute(wait_queries.END_WAITS, {"ids": [item.task["id"]]})
            continue
        reason = f"no answer after {item.step.after}: escalated to {describe(item.to)}"
        await escalate(store, tx, task, item.to, now, actor=TIMEOUT_ACTOR, reason=reason,
                       after=str(item.step.after))
        following = steps_of(item.stage)[item.level + 1:]
        if following:
            await tx.execute(queries.MOVE_DEADLINE, {
                "id": task["id"], "key": deadline_key(task["id"], item.level + 1),
                "deadline": following[0].after.after(now, item.stage.workflow.timezone)})
        else:
            await tx.execute(wait_queries.END_WAITS, {"ids": [task["id"]]})
        done += 1
    return done


async def escalate(store: StoreView, tx: Tx, task: Row, to: dict[str, Any], now: dt.datetime, *, actor: str,
                   reason: str, after: Any) -> None:
    """Give a pending form task to ``to`` in ``tx``: the assignee, a task event, an audit record
    and the ``form.escalated`` effect (its cards resolved, the new assignee told)."""
    old = task.get("assignee") or {}
    await tx.execute(queries.SET_TASK_ASSIGNEE, {"id": task["id"], "assignee": to})
    await tx.execute(queries.ADD_TASK_EVENT, {"id": task["id"], "status": "pending", "actor": actor, "now": now,
                                              "reason": reason})
    await write_audit(tx, [Entry(actor=actor, action="escalate", edge="engine", workflow=task["workflow"],
                                 run_id=str(task["run_id"]), task_id=task["id"],
                                 detail={"to": to, "previous": old, "after": after})], now)
    await store.add_effects(tx, [(ESCALATED, {"task_id": task["id"], "from": old, "to": to, "after": after},
                                  task["id"], str(task["run_id"]))], now)


def describe(assignee: dict[str, Any]) -> str:
    """An assignee in plain words (a task event's reason): the team, or the people."""
    if assignee.get("team"):
        return str(assignee["team"])
    return ", ".join(str(u) for u in assignee.get("users") or [])
