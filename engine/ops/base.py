"""What every operation needs: the store, the people directory, limits; finding runs and tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.errors import Conflict, FlowbotError, Forbidden, Invalid, NotFound, Refused
from engine.ops.access import Action, Grant, Resource, decide, require
from engine.ops.actor import Actor
from engine.ops.directory import People, load_teams
from engine.people import actions as people
from engine.runtime.app import App
from engine.store.db import Row
from engine.store.tasks import Store, run_id_bounds
from engine.workflow import Stage, Workflow

#: Shortest run id prefix accepted (shorter ones name too many runs to be useful).
MIN_PREFIX = 4


@dataclass
class Ops:
    """The dependencies of operations: one per open app (``engine.ops.of(app)``)."""

    store: Store
    people: People
    max_payload_bytes: int

    def workflow(self, name: str) -> Workflow | None:
        """A deployed workflow by name (None when it is no longer deployed)."""
        return self.store.registry.workflows.get(name)

    def stage(self, workflow: str, name: str) -> Stage:
        """A deployed stage (Conflict when the code deployed now has no such stage)."""
        wf = self.workflow(workflow)
        if wf is None or name not in wf.stages:
            raise Conflict(f"stage {workflow}/{name} is not deployed any more")
        return wf.stages[name]

    def resource(self, *, workflow: str | None = None, run: Row | None = None, task: Row | None = None,
                 assignees: list[dict[str, Any]] | None = None) -> Resource:
        """The resource these name (a workflow by name: None when it is no longer deployed)."""
        return Resource(workflow=self.workflow(workflow) if workflow else None, run=run, task=task,
                        assignees=assignees or [])

    async def require(self, actor: Actor, action: Action, *, workflow: str | None = None, run: Row | None = None,
                      task: Row | None = None, assignees: list[dict[str, Any]] | None = None) -> Grant:
        """``access.require`` on the resource these name."""
        resource = self.resource(workflow=workflow, run=run, task=task, assignees=assignees)
        return await require(actor, action, resource, self.people)

    async def require_or_none(self, actor: Actor, action: Action, *, workflow: str | None = None,
                              run: Row | None = None, task: Row | None = None,
                              assignees: list[dict[str, Any]] | None = None) -> Grant | None:
        """``require`` answering None instead of raising (for edges that explain a refusal their way)."""
        resource = self.resource(workflow=workflow, run=run, task=task, assignees=assignees)
        return await decide(actor, action, resource, self.people)


async def find_run(ops: Ops, ref: str) -> Row:
    """The run a full id or a unique prefix (at least MIN_PREFIX characters) names."""
    ref = str(ref).strip()
    bounds = run_id_bounds(ref)
    if bounds is None or len(ref.replace("-", "")) < MIN_PREFIX:
        raise NotFound(f"no run {ref}")
    ids = await ops.store.run_ids_by_prefix(ref)
    if not ids:
        raise NotFound(f"no run {ref}")
    if len(ids) > 1:
        raise Refused(f"{ref} is the start of several run ids: give more of it")
    run = await ops.store.get_run(ids[0])
    if run is None:  # deleted in between
        raise NotFound(f"no run {ref}")
    return run


def task_number(ref: Any) -> int:
    """A task id from what a person typed (NotFound when it is not a number)."""
    try:
        value = int(str(ref).strip())
    except ValueError:
        raise NotFound(f"no task {ref} (task ids are numbers)") from None
    if value <= 0 or value >= 2**63:
        raise NotFound(f"no task {ref}")
    return value


async def find_task(ops: Ops, ref: Any) -> tuple[Row, dict[str, Any]]:
    """A task and its run's context."""
    task_id = task_number(ref)
    task, context = await people.get_task_in_run(ops.store.db, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    return task, context


def refuse(result: people.Result, task_id: int | None = None) -> None:
    """Raise what a person's action that did not take effect means (nothing if it did)."""
    what = f"task {task_id}" if task_id is not None else "the task"
    if result.ok:
        return
    if result.status == people.ALREADY:
        if result.message == "claimed":
            raise Conflict(f"{what} was already claimed by {result.by}", by=result.by)
        if result.message == people.DECIDED:
            raise Conflict(f"{result.by} already decided on {what}: a person's decision counts once", by=result.by,
                           reason=people.DECIDED)
        if result.message == people.TIMED_OUT:
            at = result.at.isoformat() if result.at else None
            raise Conflict(f"{what} timed out" + (f" at {at}" if at else "") + ": it was closed by its timeout",
                           by=result.by, at=at, reason=people.TIMED_OUT)
        at = result.at.isoformat() if result.at else None
        raise Conflict(f"{what} was already completed by {result.by}" + (f" at {at}" if at else ""),
                       by=result.by, at=at)
    if result.status == people.INVALID:
        raise Invalid(result.message or "invalid answers", result.errors)
    if result.status == people.FORBIDDEN and result.message == people.SELF_APPROVAL:
        raise Forbidden(f"{what}: {result.message}", reason=people.SELF_APPROVAL)
    if result.status == people.FORBIDDEN:
        from engine.ops.access import describe

        raise Conflict(f"{what} is not open to claims (assigned to {describe((result.task or {}).get('assignee'))})")
    if result.status == people.FAILED:
        raise Invalid(f"the form's stage raised, nothing was recorded: {result.message}")
    if result.by:
        raise Conflict(f"{what}: {result.message}", by=result.by)
    raise Conflict(f"{what}: {result.message}" if result.message else f"{what} is not open")


def payload_or_invalid(value: Any, *, limit: int, where: str) -> dict[str, Any]:
    """A checked payload (a JSON object under the size limit), else Invalid."""
    from engine.context import check_payload

    try:
        return check_payload(value, limit=limit, where=where)
    except FlowbotError as exc:
        raise Invalid(str(exc), {where: str(exc)}) from None


#: ``App.state`` key under which a plugin (the Slack app) puts its ``Directory``: teams it
#: resolves count for access checks on every edge of this process.
DIRECTORY_STATE = "people.directory"


def ops_of(app: App) -> Ops:
    """The Ops of an open app (made once; the teams file beside its workflows is read then)."""
    found = app.state.get("ops")
    if found is None:
        directory = People(app.db, load_teams(app.settings.stages_dir), app.state.get(DIRECTORY_STATE))
        found = app.state["ops"] = Ops(app.store, directory, app.settings.max_payload_bytes)
    assert isinstance(found, Ops)
    return found
