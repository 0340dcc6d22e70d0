"""The one access rule: may this actor do this action on this resource?

``RULES`` is the whole policy, as a table: for each action, the relations to the resource that
allow it. A relation is what the actor is to the resource: ``admin`` (a role), ``operator`` or
``viewer`` (named by its workflow), ``starter`` (may start the workflow: named in ``starters=``,
or everyone when it names none), ``started`` (started this run), ``assignee`` (the task is
assigned to them or to a team they are in, or one of the run's tasks is). Every edge calls
``require`` before it changes anything, so the rule lives here only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Forbidden
from engine.ops.actor import Actor
from engine.ops.directory import People
from engine.store.db import Row
from engine.workflow import Workflow


class Action(enum.StrEnum):
    """What may be done."""

    READ_RUN = "read runs"
    CANCEL_RUN = "cancel runs"
    RETRY_RUN = "retry runs"
    RERUN = "rerun runs"
    START = "start runs"
    FIRE_JOB = "fire jobs"
    SUBMIT = "submit tasks"
    CLAIM = "claim tasks"
    REASSIGN = "reassign tasks"
    RETRY_TASK = "retry tasks"
    READ_OUTBOX = "read the outbox"
    MANAGE_OUTBOX = "retry or discard outbox effects"
    MANAGE_TOKENS = "manage API tokens"
    READ_AUDIT = "read the audit trail"


ADMIN = "admin"
OPERATOR = "operator"
VIEWER = "viewer"
STARTER = "starter"
STARTED = "started"
ASSIGNEE = "assignee"

#: Who may do what. Relations are tried in order: the first that holds is recorded as what the
#: actor acted as (an admin who is also the assignee acts as the assignee).
RULES: dict[Action, tuple[str, ...]] = {
    Action.READ_RUN: (OPERATOR, VIEWER, STARTED, ASSIGNEE, ADMIN),
    Action.CANCEL_RUN: (OPERATOR, ADMIN),
    Action.RETRY_RUN: (OPERATOR, ADMIN),
    Action.RERUN: (OPERATOR, ADMIN),
    Action.START: (STARTER, OPERATOR, ADMIN),
    Action.FIRE_JOB: (OPERATOR, ADMIN),
    Action.SUBMIT: (ASSIGNEE, ADMIN),
    Action.CLAIM: (ASSIGNEE, ADMIN),
    Action.REASSIGN: (ASSIGNEE, OPERATOR, ADMIN),
    Action.RETRY_TASK: (OPERATOR, ADMIN),
    Action.READ_OUTBOX: (ADMIN,),
    Action.MANAGE_OUTBOX: (ADMIN,),
    Action.MANAGE_TOKENS: (ADMIN,),
    Action.READ_AUDIT: (ADMIN,),
}


@dataclass
class Resource:
    """What an action is on: a workflow (None when it is no longer deployed), a run, a task, and
    for reading a run the assignees of its tasks."""

    workflow: Workflow | None = None
    run: Row | None = None
    task: Row | None = None
    assignees: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Grant:
    """Why an action was allowed: the relation that held, and for an admin acting on someone
    else's task, whose place they took."""

    relation: str
    on_behalf_of: str | None = None


async def holds(relation: str, actor: Actor, resource: Resource, people: People) -> bool:
    """Whether ``actor`` stands in ``relation`` to ``resource``."""
    wf, person = resource.workflow, actor.person
    if relation == ADMIN:
        return actor.is_admin
    if relation == OPERATOR:
        return wf is not None and await people.is_one_of(person, wf.operators)
    if relation == VIEWER:
        return wf is not None and await people.is_one_of(person, wf.viewers)
    if relation == STARTER:
        return wf is not None and (wf.starters is None or await people.is_one_of(person, wf.starters))
    if relation == STARTED:
        user = ((resource.run or {}).get("trigger") or {}).get("user")
        return isinstance(user, str) and await people.same(user, person)
    if relation == ASSIGNEE:
        if resource.task is not None:
            return await people.is_assignee(resource.task.get("assignee"), person)
        for assignee in resource.assignees:
            if await people.is_assignee(assignee, person):
                return True
        return False
    raise ValueError(f"unknown relation {relation!r}")


async def decide(actor: Actor, action: Action, resource: Resource, people: People) -> Grant | None:
    """The grant of ``action`` to ``actor`` on ``resource``, or None when it is not allowed."""
    for relation in RULES[action]:
        if await holds(relation, actor, resource, people):
            behalf = None
            if relation == ADMIN and resource.task is not None:
                behalf = describe(resource.task.get("assignee"))
            return Grant(relation, behalf)
    return None


async def require(actor: Actor, action: Action, resource: Resource, people: People) -> Grant:
    """``decide``, raising Forbidden (which changes nothing) when it is not allowed."""
    grant = await decide(actor, action, resource, people)
    if grant is None:
        raise Forbidden(refusal(actor, action, resource))
    return grant


def refusal(actor: Actor, action: Action, resource: Resource) -> str:
    """Why ``actor`` may not do ``action``: who may."""
    who = " or ".join(_relation_names(RULES[action]))
    where = f" of {resource.workflow.name}" if resource.workflow is not None else ""
    if resource.task is not None:
        where = f" (task {resource.task['id']}{where}, assigned to {describe(resource.task.get('assignee'))})"
    return f"{actor.person} may not {action.value}{where}: only {who} may"


def _relation_names(relations: tuple[str, ...]) -> list[str]:
    names = {ADMIN: "admins", OPERATOR: "its operators", VIEWER: "its viewers", STARTER: "its starters",
             STARTED: "the person who started it", ASSIGNEE: "its assignees"}
    return [names[r] for r in relations]


def describe(assignee: dict[str, Any] | None) -> str:
    """An assignee for people: the team, the claimer, or the users."""
    assignee = assignee or {}
    if assignee.get("claimed_by"):
        return str(assignee["claimed_by"])
    if assignee.get("team"):
        return str(assignee["team"])
    return ", ".join(str(u) for u in assignee.get("users") or []) or "nobody"
