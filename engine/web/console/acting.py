"""What the console's viewer may see and do, through the engine's operations (``engine.ops``):
the same access rule and audit trail as the CLI, the API and Slack. The console adds no rule of
its own; a refusal comes back as a ``people.Result`` the pages show."""

from __future__ import annotations

import datetime as dt
import getpass
from typing import Any

from aiohttp import web

from engine.errors import Conflict, Forbidden, Invalid, NotFound, Refused
from engine.forms import Form
from engine.ops import tasks as ops_tasks
from engine.ops.access import Action, Resource, decide
from engine.ops.actor import Actor, Edge, Role
from engine.ops.base import Ops, ops_of
from engine.people import actions as people
from engine.runtime.app import App
from engine.store.db import Row
from engine.web.console.session import viewer_of
from engine.workflow import Stage, StageKind, Workflow

#: The open flowbot, on the console's sub-application.
APP_KEY: web.AppKey[App] = web.AppKey("console.app", App)


def local_admin() -> str:
    """The person at the machine running flowbot: ``local:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return f"local:{user}"


def actor(person: str, role: str) -> Actor:
    """The engine's actor for a console viewer."""
    return Actor(person, Role.ADMIN if role == "admin" else Role.MEMBER, Edge.WEB)


def ops_for(request: web.Request) -> Ops:
    """The engine's operations for the app serving ``request``."""
    return ops_of(request.config_dict[APP_KEY])


def actor_of(request: web.Request) -> Actor:
    """The actor of a signed-in request."""
    viewer = viewer_of(request)
    assert viewer.person is not None
    return actor(viewer.person, viewer.role)


async def teams_of(app: App, person: str) -> list[str]:
    """The team handles (as assignees spell them) whose tasks ``person`` may claim, from the
    teams file beside the workflows."""
    ops = ops_of(app)
    names = {n.lower() for n in await ops.people.aliases(person)}
    found = []
    for handle, members in ops.people.teams.items():
        if names & {m.lower() for m in members}:
            found += [handle, "@" + handle, "#" + handle]
    return found


def names_of(person: str) -> list[str]:
    """Every spelling of a person the assignee entries may use."""
    return sorted({person, person.lower()})


async def may_open(app: App, task: Row, person: str, role: str) -> bool:
    """Whether the viewer may open and submit ``task`` (its assignees, a team member, an admin)."""
    grant = await ops_of(app).require_or_none(actor(person, role), Action.SUBMIT, workflow=task["workflow"], task=task)
    return grant is not None


def start_stages(app: App) -> list[Stage]:
    """The start forms a person may fill in the console."""
    out = []
    for wf in app.registry.workflows.values():
        out += [s for s in wf.start_stages() if s.kind is StageKind.FORM]
    return out


async def may_start(app: App, workflow: Workflow, person: str, role: str) -> bool:
    """Whether the viewer may start ``workflow`` (its starters, operators, admins)."""
    ops = ops_of(app)
    return await decide(actor(person, role), Action.START, Resource(workflow=workflow), ops.people) is not None


def _result(exc: Refused) -> people.Result:
    reason = exc.extra.get("reason")  # a refusal a timeout or an approval's rules explain
    if isinstance(exc, Forbidden) and reason == people.SELF_APPROVAL:
        return people.Result(people.FORBIDDEN, message=people.SELF_APPROVAL)
    if isinstance(exc, Conflict) and reason in (people.TIMED_OUT, people.DECIDED):
        at = exc.extra.get("at")
        return people.Result(people.ALREADY, by=str(exc.extra.get("by")), message=str(reason),
                             at=dt.datetime.fromisoformat(str(at)) if at else None)
    if isinstance(exc, Invalid):
        return people.Result(people.INVALID, errors=dict(exc.errors or {}), message=str(exc))
    if isinstance(exc, Forbidden):
        return people.Result(people.FORBIDDEN, message=str(exc))
    if isinstance(exc, Conflict) and exc.extra.get("by"):
        return people.Result(people.ALREADY, by=str(exc.extra["by"]), message=str(exc))
    if isinstance(exc, NotFound):
        return people.Result(people.GONE, message=str(exc))
    return people.Result(people.GONE, message=str(exc))


async def submit(app: App, task: Row, answers: dict[str, Any], person: str, role: str, form: Form) -> people.Result:
    """Submit a task's answers as the viewer (``engine.ops.tasks.submit``: checked, audited)."""
    try:
        done = await ops_tasks.submit(ops_of(app), task["id"], answers, actor(person, role))
    except Refused as exc:
        return _result(exc)
    if done["status"] == people.RECORDED:  # an approval needing several people: a decision kept
        return people.Result(people.RECORDED, by=person, run_id=done["run_id"],
                             progress={k: done[k] for k in ("approvals", "needed", "decisions")})
    return people.Result(people.COMPLETED, by=person, run_id=done["run_id"])


async def start(app: App, stage: Stage, answers: dict[str, Any], person: str, role: str,
                form: Form) -> people.Result:
    """Start a run from a start form as the viewer (``engine.ops.tasks.start``)."""
    try:
        done = await ops_tasks.start(ops_of(app), stage.workflow.name, answers, actor(person, role))
    except Refused as exc:
        return _result(exc)
    return people.Result(people.COMPLETED, by=person, run_id=done["run_id"])
