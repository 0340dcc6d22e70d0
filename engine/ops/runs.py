"""Operations on runs: start (trigger), read, list, cancel, retry, rerun."""

from __future__ import annotations

import uuid
from typing import Any

from engine.context import check_payload
from engine.errors import Conflict, Invalid, NotFound, UnknownStage, UnknownWorkflow
from engine.loader import check_triggerable, find_stage
from engine.ops.access import Action, Resource, decide
from engine.ops.actor import Actor, is_person
from engine.ops.base import Ops, find_run, payload_or_invalid, refuse
from engine.people import actions as people
from engine.store import ops_queries, queries
from engine.store.audit import write as write_audit
from engine.store.db import Row, Tx
from engine.workflow import StageKind

#: Outbox kind of a cancelled form task: the Slack app updates its cards ("cancelled by X").
CANCELLED = "form.cancelled"

OPEN = ("running", "waiting")


async def trigger(ops: Ops, workflow: str, payload: Any, actor: Actor, *, stage: str | None = None,
                  trigger: dict[str, Any] | None = None, context: dict[str, Any] | None = None,
                  test: bool = False) -> dict[str, Any]:
    """Start a run of ``workflow`` with ``payload`` at ``stage`` (or its only start stage) as
    ``actor`` (its starters, operators and admins may), the way ``flowbot trigger``,
    ``POST /api/workflows/<name>/runs`` and a Slack command start one: the run, its first task
    and the audit record in one transaction. ``trigger`` adds to what the run records of how it
    began; ``context`` is its first run context; ``test`` makes it a test run (``flowbot trigger
    --test``, the API's ``"test": true``). Returns the run and first task ids."""
    try:
        first = find_stage(ops.store.registry, workflow, stage)
    except (UnknownWorkflow, UnknownStage) as exc:
        raise NotFound(str(exc)) from None
    check_triggerable(first)
    name = first.workflow.name
    grant = await ops.require(actor, Action.START, workflow=name)
    payload = check_payload(payload, limit=ops.max_payload_bytes, where="payload")  # 400, or 413 when too large
    began: dict[str, Any] = {"kind": actor.edge.value, "stage": first.name}
    if is_person(actor.person):  # not the API's admin token nor the local admin
        began["user"] = actor.person
    began.update(trigger or {})

    async def record(tx: Tx, run_id: str) -> None:
        await write_audit(tx, [actor.record("start", grant.relation).on(workflow=name, run_id=run_id,
                                                                        stage=first.name)], ops.store.clock())
        if test:  # a test run: shown as such, out of success rates, gone with `runs purge --test`
            await tx.execute(queries.MARK_TEST_RUNS, {"ids": [run_id]})

    run_id, task_id = await ops.store.start_run(first, payload, trigger=began, context=context, within=record)
    return {"run_id": run_id, "task_id": task_id, "workflow": name}


async def report(ops: Ops, ref: str, actor: Actor) -> dict[str, Any]:
    """A run's execution report (with its audit trail and rerun links), if ``actor`` may read it."""
    run = await find_run(ops, ref)
    data = await ops.store.report(str(run["id"]))
    assert data is not None
    await ops.require(actor, Action.READ_RUN, workflow=run["workflow"], run=run,
                      assignees=[s["assignee"] for s in data["steps"] if s.get("assignee")])
    return data


async def list_runs(ops: Ops, actor: Actor, *, workflow: str | None = None, status: str | None = None,
                    limit: int = 100) -> list[Row]:
    """Runs newest first: every run for an admin; for others, runs of the workflows they operate
    or view, and the runs they started."""
    seen: list[str] = []
    if not actor.is_admin:
        for wf in ops.store.registry.workflows.values():
            resource = Resource(workflow=wf)
            if any([await decide(actor, Action.RETRY_RUN, resource, ops.people) is not None,
                    wf.viewers and await ops.people.is_one_of(actor.person, wf.viewers)]):
                seen.append(wf.name)
    return await ops.store.db.fetch_all(ops_queries.LIST_RUNS_VISIBLE, {
        "workflow": workflow, "status": status, "limit": limit, "all": actor.is_admin, "workflows": seen,
        "people": sorted(await ops.people.aliases(actor.person)),
    })


async def cancel(ops: Ops, ref: str, actor: Actor, reason: str | None = None) -> dict[str, Any]:
    """Cancel a running or waiting run and the open runs it started (``ctx.start``, down the
    tree): their open tasks are cancelled, their waiting joins and waits dropped, and the Slack
    cards of their form tasks say who cancelled them (an outbox effect each); each run's audit
    trail has the cancel. A run that finished is a Conflict. Serialised with completions by the
    runs' locks: a task that completes first routes its sends, which are then cancelled; one
    that completes after finds its task cancelled and sends nothing."""
    run = await find_run(ops, ref)
    grant = await ops.require(actor, Action.CANCEL_RUN, workflow=run["workflow"], run=run)
    reason = (reason or "").strip() or None
    run_id = str(run["id"])
    now = ops.store.clock()
    why = f"cancelled by {actor.person}" + (f": {reason}" if reason else "")
    async with ops.store.db.transaction() as tx:
        tree = await tx.fetch_all(ops_queries.LOCK_RUN_TREE, {"id": run["id"]})
        status = next(r["status"] for r in tree if r["id"] == run["id"])
        if status not in OPEN:
            raise Conflict(f"run {run_id} is already {status}: nothing to cancel", state=status)
        forms = await tx.fetch_all(ops_queries.OPEN_FORM_TASKS, {"id": run["id"]})
        counts = await tx.fetch_one(ops_queries.CANCEL_RUN_TASKS, {
            "id": run["id"], "actor": actor.person, "reason": why, "now": now,
            "child_reason": f"{why} (its parent run {run_id} was cancelled)"})
        assert counts is not None
        children = counts["children"]
        await ops.store.add_effects(tx, [
            (CANCELLED, {"task_id": f["id"], "by": actor.person, "reason": reason}, f["id"], str(f["run_id"]))
            for f in forms
        ], now)
        record = actor.record("cancel", grant.relation)
        await write_audit(tx, [
            record.on(workflow=run["workflow"], run_id=run_id, reason=reason, tasks_cancelled=counts["tasks"],
                      children_cancelled=[c["id"] for c in children]),
            *(record.on(workflow=c["workflow"], run_id=c["id"], reason=reason, parent_run_id=run_id)
              for c in children),
        ], now)
    return {"run_id": run_id, "status": "cancelled", "tasks_cancelled": counts["tasks"], "by": actor.person,
            "reason": reason, "children_cancelled": [c["id"] for c in children]}


async def _retry(ops: Ops, tx: Tx, run: Row, tasks: list[Row], actor: Actor) -> list[int]:
    fresh = [ops.stage(t["workflow"], t["stage"]).max_attempts for t in tasks]
    now = ops.store.clock()
    moved = await tx.fetch_all(ops_queries.RETRY_TASKS, {"ids": [t["id"] for t in tasks], "fresh": fresh,
                                                         "actor": actor.person, "now": now})
    await tx.execute(ops_queries.REOPEN_RUN, {"id": run["id"], "now": now})
    await tx.execute(queries.REFRESH_RUN_STATUS, {"ids": [str(run["id"])], "now": now})
    await tx.notify()
    return [r["id"] for r in moved]


async def retry(ops: Ops, ref: str, actor: Actor) -> dict[str, Any]:
    """A failed run runs again: each failed task from its step, with fresh attempts, on the code
    deployed now (earlier attempts stay in its history). Conflict when nothing failed."""
    run = await find_run(ops, ref)
    grant = await ops.require(actor, Action.RETRY_RUN, workflow=run["workflow"], run=run)
    run_id = str(run["id"])
    async with ops.store.db.transaction() as tx:
        locked = await tx.fetch_one(ops_queries.LOCK_RUN, {"id": run["id"]})
        assert locked is not None
        failed = await tx.fetch_all(ops_queries.FAILED_TASKS_OF_RUN, {"id": run["id"]})
        if locked["status"] != "failed" or not failed:
            raise Conflict(f"run {run_id} is {locked['status']}: nothing failed to retry", state=locked["status"])
        retried = await _retry(ops, tx, locked, failed, actor)
        await write_audit(tx, [actor.record("retry", grant.relation).on(
            workflow=run["workflow"], run_id=run_id, tasks=retried)], ops.store.clock())
    return {"run_id": run_id, "status": "running", "retried": retried}


async def retry_task(ops: Ops, task: Row, actor: Actor) -> dict[str, Any]:
    """One failed task runs again with fresh attempts; its run is running again."""
    grant = await ops.require(actor, Action.RETRY_TASK, workflow=task["workflow"], task=task)
    run_id = str(task["run_id"])
    async with ops.store.db.transaction() as tx:
        locked = await tx.fetch_one(ops_queries.LOCK_RUN, {"id": task["run_id"]})
        assert locked is not None
        row = await tx.fetch_one(queries.LOCK_TASK, {"id": task["id"]})
        if row is None or row["status"] != "failed":
            status = row["status"] if row else "gone"
            raise Conflict(f"task {task['id']} is {status}: only a failed task is retried", state=status)
        if locked["status"] in ("cancelled", "completed"):
            raise Conflict(f"run {run_id} is {locked['status']}: its tasks are not retried", state=locked["status"])
        retried = await _retry(ops, tx, locked, [row], actor)
        await write_audit(tx, [actor.record("retry", grant.relation).on(
            workflow=task["workflow"], run_id=run_id, task_id=task["id"])], ops.store.clock())
    return {"task_id": task["id"], "run_id": run_id, "status": "pending", "retried": retried}


async def rerun(ops: Ops, ref: str, actor: Actor, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new run of the same workflow and start stage, with the same payload or ``payload``,
    linked to the original (both reports show it). A run that began with a start form is
    submitted again with the same answers (or ``payload`` as the answers), validated as ever."""
    run = await find_run(ops, ref)
    grant = await ops.require(actor, Action.RERUN, workflow=run["workflow"], run=run)
    original = str(run["id"])
    first = await ops.store.db.fetch_one(ops_queries.FIRST_TASK_OF_RUN, {"id": run["id"]})
    if first is None:
        raise Conflict(f"run {original} has no task to start again")
    stage = ops.stage(first["workflow"], first["stage"])
    if payload is not None:
        payload = payload_or_invalid(payload, limit=ops.max_payload_bytes, where="payload")
    trigger = {"kind": "rerun", "of": original, "user": actor.person, "stage": stage.name}
    record = actor.record("rerun", grant.relation)

    async def link(tx: Tx, new: str) -> None:
        await tx.execute(ops_queries.SET_RERUN_OF, {"id": uuid.UUID(new), "of": run["id"]})
        now = ops.store.clock()
        await write_audit(tx, [record.on(workflow=run["workflow"], run_id=original, rerun=new),
                               record.on(workflow=run["workflow"], run_id=new, rerun_of=original)], now)

    if stage.kind is StageKind.FORM and stage.is_start and first["status"] == "completed":
        answers = payload if payload is not None else _answers_of(first)
        result = await people.start(ops.store, stage, first["payload"], answers, actor.person,
                                    max_payload_bytes=ops.max_payload_bytes, trigger=trigger,
                                    audit=actor.record("start", grant.relation), within=link)
        refuse(result)
        new_id = str(result.run_id)
    else:
        if stage.kind not in (StageKind.SCRIPT, StageKind.FORM):
            raise Conflict(f"run {original} began at {stage.kind.value} {stage.name}: it cannot start again")
        new_id, _ = await ops.store.start_run(stage, first["payload"] if payload is None else payload,
                                              type=first["type"], trigger=trigger, within=link)
    return {"run_id": new_id, "rerun_of": original}


def _answers_of(task: Row) -> dict[str, Any]:
    for entry in reversed(task.get("log") or []):
        if isinstance(entry, dict) and isinstance(entry.get("answers"), dict):
            return dict(entry["answers"])
    raise Invalid(f"the start form answers of task {task['id']} were not kept: give them as the payload")

