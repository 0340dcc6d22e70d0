"""Operations on tasks as a person: submit (approve, decline), claim, reassign, retry; and
starting a run from a start form. Answers are validated exactly as the Slack modal validates
them (``engine.forms``), then one completion wins (``engine.people.actions``)."""

from __future__ import annotations

from typing import Any

from engine.errors import Conflict, Invalid, NotFound, UnknownWorkflow
from engine.forms import Approval, Form
from engine.ops import runs
from engine.ops.access import Action, Grant, describe
from engine.ops.actor import Actor, is_person
from engine.ops.base import Ops, find_task, payload_or_invalid, refuse
from engine.ops.directory import is_team_ref
from engine.people import actions as people
from engine.runtime.runner import task_of
from engine.store import queries
from engine.store.audit import Entry as AuditEntry
from engine.store.db import Row
from engine.workflow import StageKind

#: A member's task listing reads at most MEMBER_PAGES pages of MEMBER_PAGE tasks, newest first.
MEMBER_PAGE, MEMBER_PAGES = 500, 20

#: The error of an answer that names no field of the form.
NOT_A_FIELD = "This form has no such field."


def clean_answers(form: Form, answers: Any) -> dict[str, Any]:
    """Answers given as JSON, coerced to each field's type as far as that is safe; Invalid
    names every key that is not a field of the form."""
    if not isinstance(answers, dict):
        raise Invalid("answers must be a JSON object: {field: value, ...}", {"answers": "not an object"})
    fields = {f.name: f for f in form.fields()}
    unknown = {key: NOT_A_FIELD for key in answers if key not in fields}
    if unknown:
        raise Invalid(f"answers name no field of the form: {', '.join(sorted(unknown))}", unknown)
    return {key: fields[key].coerce(value) for key, value in answers.items()}


def validated(form: Form, answers: Any) -> dict[str, Any]:
    """``clean_answers``, then the form's own validation (Invalid with per-field errors)."""
    cleaned = clean_answers(form, answers)
    errors = form.validate(cleaned)
    if errors:
        raise Invalid("invalid answers: " + "; ".join(f"{k}: {v}" for k, v in errors.items()), errors)
    return cleaned


async def _open_form_task(ops: Ops, ref: Any, actor: Actor, action: Action) -> tuple[Row, dict[str, Any], Grant]:
    task, context = await find_task(ops, ref)
    if task["kind"] != StageKind.FORM.value:
        raise Conflict(f"task {task['id']} is a {task['kind']} task: only form tasks wait on a person")
    grant = await ops.require(actor, action, workflow=task["workflow"], task=task)
    if task["status"] != "pending":
        refuse(await people.check(ops.store, task["id"], actor.person, ops.people, task=task, authorized=True),
               task["id"])
    return task, context, grant


async def authorize(ops: Ops, task_id: int, actor: Actor, action: Action, *,
                    task: Row | None = None) -> tuple[people.Result, AuditEntry | None]:
    """Whether ``actor`` may do ``action`` on form task ``task_id`` now, for an edge that acts
    through ``engine.people`` itself (the Slack app's buttons and modals): the task's state first
    (a completed task names who won, whoever asks), then the one access rule. COMPLETED means yes:
    the task is attached, with the audit record of the grant to write with the action."""
    state = await people.check(ops.store, task_id, actor.person, ops.people, task=task, authorized=True)
    if not state.ok or state.task is None:
        return state, None
    grant = await ops.require_or_none(actor, action, workflow=state.task["workflow"], task=state.task)
    if grant is None:
        return people.Result(people.FORBIDDEN, task=state.task), None
    return state, actor.record("", grant.relation, grant.on_behalf_of)


async def submit(ops: Ops, ref: Any, answers: Any, actor: Actor, *, decision: str | None = None,
                 comment: str | None = None) -> dict[str, Any]:
    """Submit a form task's answers as ``actor`` (or, with ``decision``, approve or decline an
    approval). Of two racing submissions (Slack, the API, the CLI) one completes the task; the
    other is a Conflict naming who won."""
    task, context, grant = await _open_form_task(ops, ref, actor, Action.SUBMIT)
    stage = ops.stage(task["workflow"], task["stage"])
    form = await people.load_form(stage, task_of(task))
    if decision is not None:
        if not isinstance(form, Approval):
            raise Conflict(f"task {task['id']} is not an approval: submit its answers instead")
        answers = {"decision": decision, **({"comment": comment} if comment else {})}
    cleaned = validated(form, answers)
    if isinstance(form, Approval):
        # The same answers as the Slack buttons give: {"decision", "comment"}.
        cleaned = form.answers(cleaned["decision"], cleaned.get("comment"))
    record = actor.record("", grant.relation, grant.on_behalf_of)
    result = await people.submit(ops.store, task["id"], cleaned, actor.person, ops.people,
                                 max_payload_bytes=ops.max_payload_bytes, task=task, run_context=context,
                                 form=form, authorized=True, audit=record)
    refuse(result, task["id"])
    done = {"task_id": task["id"], "run_id": str(task["run_id"]), "status": result.status, "by": actor.person,
            "action": people.action_of(form, cleaned)}
    if result.progress is not None:
        # An approval needing several people: who has decided so far, and how many approvals it needs.
        done.update(result.progress)
    return done


async def claim(ops: Ops, ref: Any, actor: Actor) -> dict[str, Any]:
    """Claim a team task: it becomes ``actor``'s alone (the first claim wins)."""
    task, _, grant = await _open_form_task(ops, ref, actor, Action.CLAIM)
    assignee = task.get("assignee") or {}
    if not assignee.get("team"):
        raise Conflict(f"task {task['id']} is assigned to {describe(assignee)}, not to a team: nothing to claim")
    form = await people.load_form(ops.stage(task["workflow"], task["stage"]), task_of(task))
    if isinstance(form, Approval) and form.quorum:
        raise Conflict(f"task {task['id']} needs {form.approvers} approvals from {describe(assignee)}: nobody claims "
                       "it, each member decides")
    result = await people.claim(ops.store, task["id"], actor.person, ops.people, authorized=True,
                                audit=actor.record("claim", grant.relation, grant.on_behalf_of))
    refuse(result, task["id"])
    return {"task_id": task["id"], "run_id": str(task["run_id"]), "claimed_by": actor.person}


def assignee_of(target: Any) -> dict[str, Any]:
    """What ``reassign`` gives a task to: a person (email or Slack user id) or a team."""
    value = str(target or "").strip()
    if value.startswith("<@") and value.endswith(">"):
        value = value[2:-1].split("|", 1)[0]
    if is_person(value):
        return {"users": [value]}
    if value and is_team_ref(value):
        return {"team": value}
    raise Invalid(f"{target!r} is not a person (an email or a Slack user id) or a team (@handle)",
                  {"to": "Give an email, a Slack user id or a team."})


async def reassign(ops: Ops, ref: Any, target: Any, actor: Actor) -> dict[str, Any]:
    """Give a pending form task to someone else (its assignee, an operator or an admin may)."""
    new = assignee_of(target)
    task, _, grant = await _open_form_task(ops, ref, actor, Action.REASSIGN)
    result = await people.reassign(ops.store, task["id"], new, actor.person,
                                   audit=actor.record("reassign", grant.relation, grant.on_behalf_of))
    refuse(result, task["id"])
    return {"task_id": task["id"], "run_id": str(task["run_id"]), "assignee": new}


async def retry(ops: Ops, ref: Any, actor: Actor) -> dict[str, Any]:
    """A failed task runs again with fresh attempts (``runs.retry_task``)."""
    task, _ = await find_task(ops, ref)
    return await runs.retry_task(ops, task, actor)


async def list_tasks(ops: Ops, actor: Actor, *, stage: str | None = None, status: str | None = None,
                     run: str | None = None, workflow: str | None = None, limit: int = 100) -> list[Row]:
    """Tasks newest first: of one run (whoever may read it), or every task for an admin; others
    see the tasks assigned to them and those of workflows they operate or view."""
    run_id = None
    if run:
        run_id = (await runs.report(ops, run, actor))["id"]
    query = {"stage": stage, "status": status, "run": run_id, "workflow": workflow, "now": ops.store.clock(),
             "before": None}
    if actor.is_admin or run_id:
        return await ops.store.db.fetch_all(queries.LIST_TASKS, {**query, "limit": limit})
    visible = {wf.name for wf in ops.store.registry.workflows.values()
               if await ops.people.is_one_of(actor.person, (*wf.operators, *wf.viewers))}
    # Whether a task is someone's takes the people directory (teams), so rows are filtered here,
    # a page at a time (newest first, keyset on the id), until ``limit`` of them are found.
    found: list[Row] = []
    before = None
    for _ in range(MEMBER_PAGES):
        rows = await ops.store.db.fetch_all(queries.LIST_TASKS, {**query, "limit": MEMBER_PAGE, "before": before})
        for r in rows:
            if r["workflow"] in visible or await ops.people.is_assignee(r["assignee"], actor.person):
                found.append(r)
                if len(found) == limit:
                    return found
        if len(rows) < MEMBER_PAGE:
            break
        before = rows[-1]["id"]
    return found


async def start(ops: Ops, workflow: str, answers: Any, actor: Actor,
                payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """Submit a workflow's start form as ``actor`` (its starters, operators and admins may): a
    new run, whose id is returned."""
    try:
        wf = ops.store.registry.get(workflow)
    except UnknownWorkflow as exc:
        raise NotFound(str(exc)) from None
    forms = [s for s in wf.start_stages() if s.kind is StageKind.FORM]
    if not forms:
        raise Conflict(f"workflow {wf.name} has no start form: start it with `flowbot trigger {wf.name}` "
                       f"or POST /api/workflows/{wf.name}/runs")
    grant = await ops.require(actor, Action.START, workflow=wf.name)
    stage = forms[0]
    prefill = payload_or_invalid(payload or {}, limit=ops.max_payload_bytes, where="payload")
    form = await people.load_form(stage, task_of({"id": None, "type": "start", "payload": prefill,
                                                  "run_id": None, "stage": stage.name}))
    cleaned = validated(form, answers)
    trigger = {"kind": "form", "user": actor.person, "edge": actor.edge.value}
    result = await people.start(ops.store, stage, prefill, cleaned, actor.person,
                                max_payload_bytes=ops.max_payload_bytes, trigger=trigger, form=form,
                                audit=actor.record("start", grant.relation))
    refuse(result)
    return {"run_id": str(result.run_id), "workflow": wf.name}
