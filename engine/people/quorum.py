"""Approvals that need several people (``Approval(approvers=N)``), and self-approval.

Each decision is one transaction: the run's lock, then the task's row lock (the order a
completion takes them), a check that the task is still pending and that the decisions are those
this decision was weighed against, then the decision row (one per person and task: the same
person twice is counted once). A decision that settles the outcome completes the task in that
same transaction, having run the stage's ``run(task, answers, ctx)`` first with every decision in
``answers["decisions"]``. When another decision landed in between, the weighing starts again, so
two people deciding at the same moment are both counted, and exactly one of them completes it.

Outcome, with N = ``approvers``:

- approved once N distinct people approved;
- ``decline="any"`` (default): declined at the first decline;
- ``decline="all"``: declined only when N approvals can no longer happen: when the people who may
  still decide (the listed assignees who have not decided, less the run's starter when
  ``allow_self_approval=False``) are fewer than the approvals missing. A team's size is not known
  to flowbot, so for a team assignee declines alone never end it (give it a ``timeout``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from engine.context import Context, Effect
from engine.forms import Approval
from engine.forms.approval import APPROVED, DECLINED
from engine.runtime.runner import call, task_of
from engine.store import deadlines, queries, wait_queries, waits
from engine.store.audit import Entry as AuditEntry
from engine.store.audit import write as write_audit
from engine.store.db import Row
from engine.store.results import CommitResult, Finished
from engine.store.tasks import Store, plan

#: Outbox kind of a decision that did not complete its task (its cards show who decided so far).
DECIDED = "form.decided"
#: Attempts at weighing a decision against decisions that keep changing under it.
MAX_ROUNDS = 20


class _Changed(Exception):
    """Raised inside a decision's transaction when other decisions landed since it was weighed."""


class _Lost(Exception):
    """Raised inside a decision's transaction when the task is no longer pending."""


class _Again(Exception):
    """Raised inside a decision's transaction when this person's decision is already recorded."""


def verdict(form: Approval, decisions: list[dict[str, Any]], eligible: int | None) -> str | None:
    """The outcome these decisions settle ("approved", "declined"), or None: more are needed.
    ``eligible``: how many people may decide at all (None: unknown, a team)."""
    approvals = sum(1 for d in decisions if d["decision"] == APPROVED)
    declines = sum(1 for d in decisions if d["decision"] == DECLINED)
    if approvals >= form.approvers:
        return APPROVED
    if form.decline != "all":
        return DECLINED if declines else None
    if declines and eligible is not None and eligible - declines < form.approvers:
        return DECLINED
    return None


def progress(form: Approval, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """Where an approval stands: approvals so far, how many are needed, the decisions."""
    return {"approvals": sum(1 for d in decisions if d["decision"] == APPROVED), "needed": form.approvers,
            "decisions": decisions}


async def _same(directory: Any, a: str, b: str) -> bool:
    """Whether two names are one person (the directory knows emails and Slack ids of people)."""
    if a == b or a.lower() == b.lower():
        return True
    same = getattr(directory, "same", None)
    if same is not None:
        return bool(await same(a, b))
    try:
        return bool(await directory.identity(a) == b or await directory.identity(b) == a)
    except Exception:  # a name the directory cannot resolve is nobody else
        return False


async def starters(store: Store, task: Row, run_context: dict[str, Any]) -> list[str]:
    """Who started the task's run: ``started_by`` in its context, and its trigger's user."""
    found = [run_context.get("started_by")]
    run = await store.db.fetch_one(queries.GET_RUN, {"id": task["run_id"]})
    if run is not None:
        found.append((run["trigger"] or {}).get("user"))
    return [s for s in dict.fromkeys(found) if isinstance(s, str) and s]


async def is_starter(store: Store, task: Row, run_context: dict[str, Any], actor: str, directory: Any) -> bool:
    """Whether ``actor`` started the task's run (``allow_self_approval=False`` refuses them)."""
    for who in await starters(store, task, run_context):
        if await _same(directory, who, actor):
            return True
    return False


async def eligible(store: Store, task: Row, form: Approval, run_context: dict[str, Any], directory: Any) -> int | None:
    """How many people may decide on ``task`` (None for a team: its size is not known here)."""
    assignee = task.get("assignee") or {}
    if assignee.get("team") and not assignee.get("claimed_by"):
        return None
    users = [u for u in assignee.get("users") or [] if isinstance(u, str)]
    if not form.allow_self_approval:
        kept = []
        for u in users:
            if not await is_starter(store, task, run_context, u, directory):
                kept.append(u)
        users = kept
    return len(users)


async def decide(store: Store, task: Row, form: Approval, answers: dict[str, Any], actor: str, directory: Any, *,
                 run_context: dict[str, Any], max_payload_bytes: int, record: AuditEntry,
                 effect: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Record ``actor``'s decision on an approval needing several people; complete the task when
    it settles the outcome. Returns (what happened, detail): ("recorded" | "completed",
    progress), ("already", {}) when ``actor`` decided before, ("lost", {}) when the task is no
    longer pending, ("failed", {"message"}) when the stage's ``run`` raised."""
    task_id = task["id"]
    count = await eligible(store, task, form, run_context, directory)
    for _ in range(MAX_ROUNDS):
        now = store.clock()
        before = (await deadlines.decisions_of(store.db, [task_id])).get(task_id, [])
        for d in before:
            if await _same(directory, d["by"], actor):
                return "already", {"decision": d}
        mine = {"by": actor, "decision": answers["decision"], "comment": answers.get("comment"),
                "at": now.isoformat()}
        weighed = [*before, mine]
        outcome = verdict(form, weighed, count)
        audit = replace(record, action=record.action or ("approve" if mine["decision"] == APPROVED else "decline"))
        audit = audit.on(workflow=task["workflow"], run_id=str(task["run_id"]), task_id=task_id, answers=answers,
                         **{k: v for k, v in progress(form, weighed).items() if k != "decisions"})
        try:
            if outcome is None:
                await _record(store, task, mine, before, audit, form, weighed, now)
                return "recorded", progress(form, weighed)
            final = {"decision": outcome, "comment": answers.get("comment"), "decisions": weighed}
            stage = store.stage_of(task)
            ctx = Context(stage_key=stage.key, run_context=run_context, attempt=1,
                          max_payload_bytes=max_payload_bytes, task_id=task_id, run_id=str(task["run_id"]))
            try:
                await call(stage.entry("run"), task_of(task), dict(final), ctx)
                result = ctx.finish()
                routes = plan(stage, result, task_id=task_id)
            except Exception as exc:
                return "failed", {"message": f"{type(exc).__name__}: {exc}"}
            result.log.append({"at": now.isoformat(), "message": f"decided by {actor}: {outcome}", "answers": final})
            result.effects.append(Effect("form.completed", {"task_id": task_id, "by": actor, "answers": final,
                                                            **(effect or {})}))
            won = await _complete(store, Finished(task, result, routes, audit=audit), mine, before, now)
            return ("completed", progress(form, weighed)) if won else ("lost", {})
        except _Changed:
            continue
        except _Lost:
            return "lost", {}
        except _Again:
            return "already", {}
    return "failed", {"message": "too many decisions at once: try again"}


async def _guard(tx: Any, task: Row, before: list[dict[str, Any]], mine: dict[str, Any]) -> None:
    """In ``tx`` (the run locked): lock the task, check it is pending and its decisions are still
    ``before``, then record ``mine``."""
    row = await tx.fetch_one(queries.LOCK_TASK, {"id": task["id"]})
    if row is None or row["status"] != "pending":
        raise _Lost()
    now_there = [r["person"] for r in await tx.fetch_all(queries.TASK_DECISIONS, {"ids": [task["id"]]})]
    if now_there != [d["by"] for d in before]:
        raise _Changed()
    inserted = await tx.fetch_one(queries.INSERT_DECISION, {
        "id": task["id"], "person": mine["by"], "decision": mine["decision"], "comment": mine["comment"],
        "now": dt.datetime.fromisoformat(mine["at"])})
    if inserted is None:
        raise _Again()


async def _record(store: Store, task: Row, mine: dict[str, Any], before: list[dict[str, Any]], audit: AuditEntry,
                  form: Approval, weighed: list[dict[str, Any]], now: dt.datetime) -> None:
    """A decision that does not settle the outcome: kept, audited, and the cards told."""
    async with store.db.transaction() as tx:
        await tx.execute(queries.LOCK_RUNS, {"ids": [str(task["run_id"])]})
        await _guard(tx, task, before, mine)
        await tx.execute(queries.ADD_TASK_EVENT, {
            "id": task["id"], "status": "pending", "actor": mine["by"], "now": now,
            "reason": f"{mine['decision']} ({progress(form, weighed)['approvals']} of {form.approvers} approvals)"})
        await write_audit(tx, [audit], now)
        await store.add_effects(tx, [(DECIDED, {"task_id": task["id"], "by": mine["by"], "decision": mine["decision"],
                                                "comment": mine["comment"], **progress(form, weighed)},
                                      task["id"], str(task["run_id"]))], now)


async def _complete(store: Store, finished: Finished, mine: dict[str, Any], before: list[dict[str, Any]],
                    now: dt.datetime) -> bool:
    """The deciding decision: recorded and the task completed with what ``run`` produced, in one
    transaction (locks in the order a completion takes them)."""
    task = finished.task
    async with store.db.transaction() as tx:
        keys = waits.keys_of([finished])
        if keys:
            await waits.lock(tx, keys)
        await tx.execute(queries.LOCK_RUNS, {"ids": [str(task["run_id"])]})
        await _guard(tx, task, before, mine)
        done = await store.complete_rows(tx, [finished], worker=None, actors=[mine["by"]], from_status="pending",
                                         now=now)
        if not done:
            raise _Lost()
        if finished.audit is not None:
            await write_audit(tx, [finished.audit], now)
        await tx.execute(wait_queries.END_WAITS, {"ids": [task["id"]]})
        await store.apply(tx, [finished], now, CommitResult())
        await store.refresh_runs(tx, [str(task["run_id"])], now)
    return True
