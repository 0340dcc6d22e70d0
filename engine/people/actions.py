"""What a person's action does to the engine: submit a form, claim a team task, reassign.

No Slack here: the Slack app (and later the web console) calls these with a user identity and a
``Directory`` that knows how assignee entries (emails, ids, teams) map to that identity.
Exactly one submission of a task wins: the completion is guarded on ``status = 'pending'``, and
the loser learns who won from ``tasks.completed_by``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from engine.context import Context, Effect, Outcome
from engine.deadlines import TIMEOUT_ACTOR
from engine.errors import FlowbotError, TaskNotFound
from engine.forms import Approval, Form
from engine.people import quorum
from engine.runtime.runner import call, task_of
from engine.store import queries
from engine.store.audit import Entry as AuditEntry
from engine.store.audit import write as write_audit
from engine.store.db import Database, Row, Tx
from engine.store.tasks import Finished, Store, plan
from engine.workflow import Stage, StageKind

#: Outbox kind of a reassignment (by a person or an escalation): one effect whose handler
#: resolves the old cards, then notifies the new assignee.
HANDOVER = "form.handover"

COMPLETED = "completed"
#: A decision on an approval that needs several people, kept; the task waits for more.
RECORDED = "recorded"
ALREADY = "already"
FORBIDDEN = "forbidden"
INVALID = "invalid"
FAILED = "failed"
GONE = "gone"


class Directory(Protocol):
    """Maps assignee entries to actor identities (the Slack app resolves emails and teams)."""

    async def identity(self, entry: str) -> str:
        """The identity (e.g. Slack user id) of an assignee entry (an email or id)."""
        ...

    async def is_member(self, team: str, actor: str) -> bool:
        """Whether ``actor`` belongs to the team ``team`` (user group or channel)."""
        ...


@dataclass
class Result:
    """What a person's action did: ``status`` is one of the module constants.

    ``by``/``at`` name the winner when another person completed the task first; ``errors``
    are per-field messages for INVALID; ``message`` explains FORBIDDEN, FAILED and GONE.
    """

    status: str
    task: Row | None = None
    by: str | None = None
    at: dt.datetime | None = None
    errors: dict[str, str] = field(default_factory=dict)
    message: str | None = None
    run_id: str | None = None

    #: Where an approval needing several people stands (``engine.people.quorum.progress``).
    progress: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Whether the action took effect (for an approval needing several people: the decision
        was kept, whether or not it completed the task)."""
        return self.status in (COMPLETED, RECORDED)


async def load_form(stage: Stage, task: Any) -> Form:
    """The Form of a form stage for ``task`` (``form(task)`` or a module-level ``form``)."""
    spec = getattr(stage.module, "form", None)
    if isinstance(spec, Form):
        return spec
    if callable(spec):
        result = spec(task)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, Form):
            return result
        raise FlowbotError(f"form stage {stage.key}: form(task) returned {type(result).__name__}, not a Form")
    raise FlowbotError(f"form stage {stage.key} defines no form")


async def get_task(db: Database, task_id: int) -> Row:
    """One task row (TaskNotFound when there is none)."""
    row = await db.fetch_one(queries.GET_TASK, {"id": task_id})
    if row is None:
        raise TaskNotFound(f"task {task_id} does not exist")
    return row


async def get_task_in_run(db: Database, task_id: int) -> tuple[Row | None, dict[str, Any]]:
    """One task row and its run's context, in one read ((None, {}) when there is no task)."""
    row = await db.fetch_one(queries.TASK_WITH_RUN_CONTEXT, {"id": task_id})
    if row is None:
        return None, {}
    task = dict(row)
    return task, task.pop("run_context", None) or {}


async def may_act(task: Row, actor: str, directory: Directory) -> bool:
    """Whether ``actor`` may open or submit ``task``: an assignee, or a member of its team."""
    assignee = task.get("assignee") or {}
    for entry in assignee.get("users") or []:
        if entry == actor or await directory.identity(entry) == actor:
            return True
    team = assignee.get("team")
    if team and not assignee.get("claimed_by"):
        return await directory.is_member(team, actor)
    return False


async def _winner(db: Database, task_id: int) -> Result:
    row = await db.fetch_one(queries.TASK_COMPLETER, {"id": task_id})
    if row is None:
        return Result(GONE, message="the task no longer exists")
    if row["completed_by"] == TIMEOUT_ACTOR:
        return Result(ALREADY, by=TIMEOUT_ACTOR, at=row["finished_at"], message=TIMED_OUT)
    if row["status"] == "completed":
        return Result(ALREADY, by=row["completed_by"], at=row["finished_at"])
    if row["status"] == "cancelled" and row["completed_by"]:
        return Result(GONE, by=row["completed_by"], at=row["finished_at"],
                      message=f"the task was cancelled by {row['completed_by']}")
    return Result(GONE, message=f"the task is {row['status']}")


#: ``Result.message`` of ALREADY when the task's timeout closed it, and when the person had
#: decided already (an approval needing several people).
TIMED_OUT = "timed out"
DECIDED = "decided"
#: ``Result.message`` of FORBIDDEN when the person started the run and the approval refuses them.
SELF_APPROVAL = "you started this run, so you cannot decide on its approval: someone else must"


def action_of(form: Form, answers: dict[str, Any]) -> str:
    """What a submission is called in the audit trail: approve, decline, or submit."""
    if isinstance(form, Approval) and answers.get("decision") in ("approved", "declined"):
        return "approve" if answers["decision"] == "approved" else "decline"
    return "submit"


async def check(store: Store, task_id: int, actor: str, directory: Directory, *,
                task: Row | None = None, authorized: bool = False) -> Result:
    """Whether ``actor`` may act on ``task_id`` now (COMPLETED means yes; the task is attached).

    ``task`` is the task's row when the caller just read it (saves a read); ``authorized``
    when the caller checked the actor's rights already (``engine.ops.access``): only the task's
    state is checked then."""
    if task is None:
        try:
            task = await get_task(store.db, task_id)
        except TaskNotFound:
            return Result(GONE, message="the task no longer exists")
    if task["kind"] != StageKind.FORM.value:
        return Result(GONE, task=task, message="the task is not a form")
    if task["status"] != "pending":
        return await _winner(store.db, task_id)
    if not authorized and not await may_act(task, actor, directory):
        return Result(FORBIDDEN, task=task)
    return Result(COMPLETED, task=task)


async def submit(store: Store, task_id: int, answers: dict[str, Any], actor: str, directory: Directory,
                 *, max_payload_bytes: int, effect: dict[str, Any] | None = None, task: Row | None = None,
                 run_context: dict[str, Any] | None = None, form: Form | None = None,
                 commit: Callable[[Finished], Awaitable[bool]] | None = None,
                 authorized: bool = False, audit: AuditEntry | None = None) -> Result:
    """Validate ``answers``, run the form stage's ``run(task, answers, ctx)`` and complete the task.

    The completion is guarded (``from_status='pending'``): of two racing submissions exactly one
    completes; the other gets ALREADY with the winner. A ``form.completed`` effect (with
    ``effect`` merged in) is committed with the completion so cards update in place.

    A caller that just read the task (with its run's context) and its form passes them to save
    the reads; the guard makes a stale row harmless (the loser still learns who won). ``commit``
    replaces the commit of the completion (a group commit: it commits the Finished as completed
    by ``actor``, guarded on 'pending', and returns whether it won).

    The winning completion writes its audit record in its transaction: ``audit`` (what the
    operation names: edge, role), or else a record of the Slack edge, the one caller that
    passes none. ``authorized``: see ``check``.
    """
    if task is None:
        task, run_context = await get_task_in_run(store.db, task_id)
        if task is None:
            return Result(GONE, message="the task no longer exists")
    allowed = await check(store, task_id, actor, directory, task=task, authorized=authorized)
    if not allowed.ok:
        return allowed
    if run_context is None:
        run = await store.get_run(str(task["run_id"]))
        run_context = run["context"] if run else {}
    stage = store.stage_of(task)
    t = task_of(task)
    if form is None:
        form = await load_form(stage, t)
    if isinstance(form, Approval) and not form.allow_self_approval and await quorum.is_starter(
            store, task, run_context or {}, actor, directory):
        return Result(FORBIDDEN, task=task, message=SELF_APPROVAL)
    errors = form.validate(answers)
    if errors:
        return Result(INVALID, task=task, errors=errors)
    if isinstance(form, Approval) and form.quorum:
        return await _decide(store, task, form, answers, actor, directory, run_context=run_context or {},
                             max_payload_bytes=max_payload_bytes, audit=audit, effect=effect)
    ctx = Context(stage_key=stage.key, run_context=run_context or {}, attempt=1,
                  max_payload_bytes=max_payload_bytes, task_id=task["id"], run_id=str(task["run_id"]))
    try:
        await call(stage.entry("run"), t, dict(answers), ctx)
        outcome = ctx.finish()
        routes = plan(stage, outcome, task_id=task["id"])
    except Exception as exc:
        return Result(FAILED, task=task, message=f"{type(exc).__name__}: {exc}")
    outcome.log.append({"at": store.clock().isoformat(), "message": f"submitted by {actor}", "answers": answers})
    outcome.effects.append(Effect("form.completed", {
        "task_id": task["id"], "by": actor, "answers": answers, **(effect or {}),
    }))
    record = (audit or AuditEntry(actor=actor, action="", edge="slack", acting_as="assignee")).on(
        workflow=task["workflow"], run_id=str(task["run_id"]), task_id=task["id"], answers=answers)
    finished = Finished(task, outcome, routes, audit=replace(record, action=record.action or action_of(form, answers)))
    if commit is not None:
        won = await commit(finished)
    else:
        won = not (await store.commit(None, [finished], from_status="pending", actor=actor)).lost
    if not won:
        return await _winner(store.db, task_id)
    return Result(COMPLETED, task=task, by=actor, at=store.clock(), run_id=str(task["run_id"]))


async def _decide(store: Store, task: Row, form: Approval, answers: dict[str, Any], actor: str, directory: Directory,
                  *, run_context: dict[str, Any], max_payload_bytes: int, audit: AuditEntry | None,
                  effect: dict[str, Any] | None) -> Result:
    """A decision on an approval that needs several people (``engine.people.quorum``)."""
    record = audit or AuditEntry(actor=actor, action="", edge="slack", acting_as="assignee")
    what, detail = await quorum.decide(store, task, form, answers, actor, directory, run_context=run_context,
                                       max_payload_bytes=max_payload_bytes, record=record, effect=effect)
    if what == "already":
        return Result(ALREADY, task=task, by=actor, message=DECIDED)
    if what == "lost":
        return await _winner(store.db, task["id"])
    if what == "failed":
        return Result(FAILED, task=task, message=detail.get("message"))
    status = RECORDED if what == "recorded" else COMPLETED
    return Result(status, task=task, by=actor, at=store.clock(), run_id=str(task["run_id"]), progress=detail)


async def start(store: Store, stage: Stage, payload: dict[str, Any], answers: dict[str, Any], actor: str,
                *, max_payload_bytes: int, trigger: dict[str, Any] | None = None, form: Form | None = None,
                audit: AuditEntry | None = None, within: Callable[[Tx, str], Awaitable[None]] | None = None
                ) -> Result:
    """A person submitted a start form: a new run whose first task (at ``stage``) is completed
    by them, with what ``run(task, answers, ctx)`` sent — all in one transaction. ``form`` is
    the start form when the caller has it already; ``audit`` is recorded (else a record of the
    Slack edge) and ``within(tx, run_id)`` runs in the same transaction."""
    t = task_of({"id": None, "type": "start", "payload": payload, "run_id": None, "stage": stage.name})
    if form is None:
        form = await load_form(stage, t)
    errors = form.validate(answers)
    if errors:
        return Result(INVALID, errors=errors)
    # Who started the run is part of its context: later stages DM them ("started_by").
    started = {"started_by": actor}
    ctx = Context(stage_key=stage.key, run_context=started, attempt=1, max_payload_bytes=max_payload_bytes)
    try:
        await call(stage.entry("run"), t, dict(answers), ctx)
        outcome: Outcome = ctx.finish()
    except Exception as exc:
        return Result(FAILED, message=f"{type(exc).__name__}: {exc}")
    now = store.clock()
    outcome.log.append({"at": now.isoformat(), "message": f"started by {actor}", "answers": answers})
    trig = trigger or {"kind": "form", "user": actor}
    async with store.db.transaction() as tx:
        [run_id] = await store._insert_runs(tx, [(stage.workflow.name, trig, started)], now)
        row = await tx.fetch_one(queries.INSERT_COMPLETED_TASK, {
            "run_id": uuid.UUID(run_id), "workflow": stage.workflow.name, "stage": stage.name, "type": "start",
            "payload": payload, "assignee": {"users": [actor]}, "actor": actor, "now": now, "log": outcome.log,
            "version": stage.workflow.version,
        })
        assert row is not None
        routes = plan(stage, outcome, task_id=row["id"])
        done = {"id": row["id"], "run_id": row["run_id"]}
        from engine.store.tasks import CommitResult

        await store.apply(tx, [Finished(done, outcome, routes)], now, CommitResult())
        await store.add_effects(tx, [(e.kind, e.payload, row["id"], run_id) for e in outcome.effects], now)
        await tx.execute(queries.REFRESH_RUN_STATUS, {"ids": [run_id], "now": now})
        record = audit or AuditEntry(actor=actor, action="start", edge="slack", acting_as="starter")
        await write_audit(tx, [record.on(workflow=stage.workflow.name, run_id=run_id, task_id=row["id"],
                                         answers=answers)], now)
        if within is not None:
            await within(tx, run_id)
    return Result(COMPLETED, by=actor, at=now, run_id=run_id)


async def claim(store: Store, task_id: int, actor: str, directory: Directory, *, authorized: bool = False,
                audit: AuditEntry | None = None) -> Result:
    """A team member takes a team task: it becomes theirs alone (first claim wins). With
    ``authorized`` (the caller checked the actor's rights) the actor need not be a member; the
    claim is recorded in the audit trail (``audit``, else a record of the Slack edge)."""
    now = store.clock()
    async with store.db.transaction() as tx:
        task = await tx.fetch_one(queries.LOCK_TASK, {"id": task_id})
        if task is None:
            return Result(GONE, message="the task no longer exists")
        assignee = dict(task.get("assignee") or {})
        if task["status"] != "pending":
            winner = Result(ALREADY if task["status"] == "completed" else GONE, task=task,
                            by=task["completed_by"], at=task["finished_at"])
            return winner
        if assignee.get("claimed_by"):
            if assignee["claimed_by"] == actor:
                return Result(COMPLETED, task=task, by=actor)
            return Result(ALREADY, task=task, by=assignee["claimed_by"], message="claimed")
        team = assignee.get("team")
        if not team or (not authorized and not await directory.is_member(team, actor)):
            return Result(FORBIDDEN, task=task)
        new = {**assignee, "users": [actor], "claimed_by": actor, "claimed_at": now.isoformat()}
        await tx.execute(queries.SET_TASK_ASSIGNEE, {"id": task_id, "assignee": new})
        record = audit or AuditEntry(actor=actor, action="claim", edge="slack", acting_as="assignee")
        await write_audit(tx, [record.on(workflow=task["workflow"], run_id=str(task["run_id"]), task_id=task_id,
                                         team=team)], now)
        await store.add_effects(tx, [
            ("form.claimed", {"task_id": task_id, "by": actor}, task_id, str(task["run_id"])),
            ("form.assigned", {"task_id": task_id}, task_id, str(task["run_id"])),
        ], now)
    return Result(COMPLETED, task={**task, "assignee": new}, by=actor, at=now)


async def reassign(store: Store, task_id: int, assignee: dict[str, Any], actor: str, *,
                   audit: AuditEntry | None = None) -> Result:
    """Give a pending form task to someone else (``{"users": [...]}`` or ``{"team": ref}``).

    One ``form.handover`` outbox effect is committed with the change: its handler resolves the
    old cards, then sends the new assignee theirs, in that order (two effects delivered
    concurrently could let the old cards' cleanup forget the new ones). A bad ``assignee`` is
    INVALID and changes nothing. The change is recorded in the audit trail (``audit``, else a
    record of the Slack edge)."""
    problem = _assignee_problem(assignee)
    if problem:
        return Result(INVALID, message=problem)
    now = store.clock()
    async with store.db.transaction() as tx:
        task = await tx.fetch_one(queries.LOCK_TASK, {"id": task_id})
        if task is None:
            return Result(GONE, message="the task no longer exists")
        if task["kind"] != StageKind.FORM.value:
            return Result(GONE, task=task, message="the task is not a form")
        if task["status"] != "pending":
            return Result(ALREADY if task["status"] == "completed" else GONE, task=task, by=task["completed_by"],
                          at=task["finished_at"], message=f"the task is {task['status']}")
        old = task.get("assignee") or {}
        await tx.execute(queries.SET_TASK_ASSIGNEE, {"id": task_id, "assignee": assignee})
        to = assignee.get("team") or ", ".join(str(u) for u in assignee.get("users") or [])
        await tx.execute(queries.ADD_TASK_EVENT, {"id": task_id, "status": "pending", "actor": actor, "now": now,
                                                  "reason": f"reassigned to {to}"})
        await store.add_effects(tx, [(HANDOVER, {"task_id": task_id, "by": actor, "from": old, "to": assignee},
                                      task_id, str(task["run_id"]))], now)
        record = audit or AuditEntry(actor=actor, action="reassign", edge="slack", acting_as="assignee")
        await write_audit(tx, [record.on(workflow=task["workflow"], run_id=str(task["run_id"]), task_id=task_id,
                                         to=assignee, previous=old)], now)
        await tx.notify()
    return Result(COMPLETED, task={**task, "assignee": assignee}, by=actor, at=now)


def _assignee_problem(assignee: Any) -> str | None:
    if not isinstance(assignee, dict):
        return f"an assignee is {{'users': [...]}} or {{'team': ref}}, not {assignee!r}"
    users, team = assignee.get("users"), assignee.get("team")
    if team is not None:
        return None if isinstance(team, str) and team.strip() else f"the team must be a name, not {team!r}"
    if (not isinstance(users, list) or not users
            or not all(isinstance(u, str) and u.strip() for u in users)):
        return f"an assignee needs users (a non-empty list of emails or ids) or a team, got {assignee!r}"
    return None


# --- load-time checks --------------------------------------------------------------------------


def check_form_stage(stage: Stage) -> list[str]:
    """Problems of a form stage's module-level ``Form`` (Slack's limits, duplicates, bad options),
    for the workflow loader; a ``form(task)`` function is checked when it renders."""
    if stage.kind is not StageKind.FORM:
        return []
    problems = _timeout_routes(stage)
    spec = getattr(stage.module, "form", None) if getattr(stage, "module", None) is not None else None
    if not isinstance(spec, Form):
        return problems
    problems += [f'form "{stage.name}": {problem}' for problem in spec.check()]
    if isinstance(spec, Approval) and spec.quorum and isinstance(spec.approvers, int):
        rule = stage.assignee
        if isinstance(rule, str) and "{" not in rule:
            problems.append(f'form "{stage.name}": approvers={spec.approvers} needs a list or team assignee, '
                            f"not the one person {rule!r}")
        elif isinstance(rule, list | tuple) and all(isinstance(r, str) and "{" not in r for r in rule) \
                and len(rule) < spec.approvers:
            problems.append(f'form "{stage.name}": approvers={spec.approvers} but the assignee lists only '
                            f"{len(rule)} people")
    return problems


def _timeout_routes(stage: Stage) -> list[str]:
    """A timeout's task type that no transition from the form takes is a mistake of the
    declaration (it would only ever be recorded as unrouted)."""
    from engine.store.deadlines import steps_of

    problems = []
    for step in steps_of(stage):
        kind = step.outcome
        if isinstance(kind, str) and not any(t.matches(kind) for t in stage.outgoing):
            problems.append(f'form "{stage.name}": on_timeout="{kind}" is taken by no transition from it '
                            f'(add workflow.transition({stage.name.replace("-", "_")}, ..., on="{kind}"))')
    return problems


def register_checks() -> None:
    """Plug ``check_form_stage`` into the loader (once, however often this is called)."""
    from engine.loader import STAGE_CHECKS

    if check_form_stage not in STAGE_CHECKS:
        STAGE_CHECKS.append(check_form_stage)


register_checks()
