"""What the console's viewer may see and do, and doing it through the engine's own actions.

Every state change goes through ``engine.people.actions`` (one submission of a task wins,
whether it comes from the console, Slack or the API); the console adds no rule of its own here.
"""

from __future__ import annotations

import getpass
from typing import Any

from aiohttp import web

from engine.forms import Form
from engine.people import actions as people
from engine.runtime.app import App
from engine.store.db import Row
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


class Names:
    """``people.actions.Directory`` for the console: an assignee entry is the person it names
    (emails compared without case); teams are Slack's, which the Slack app resolves."""

    def __init__(self, app: App) -> None:
        self.fallback = app.state.get("people.directory")

    async def identity(self, entry: str) -> str:
        """The identity of an assignee entry."""
        return entry.lower() if "@" in entry else entry

    async def is_member(self, team: str, actor: str) -> bool:
        """Whether ``actor`` is in ``team`` (only the Slack app knows teams)."""
        if self.fallback is not None:
            return bool(await self.fallback.is_member(team, actor))
        return False


async def teams_of(app: App, person: str) -> list[str]:
    """The teams whose tasks ``person`` may claim (none known without the engine's team list)."""
    return []


def names_of(person: str) -> list[str]:
    """Every spelling of a person the assignee entries may use."""
    return sorted({person, person.lower()})


async def may_open(app: App, task: Row, person: str, role: str) -> bool:
    """Whether the viewer may open and submit ``task``: an assignee (or a team member), or an admin."""
    if role == "admin":
        return True
    return await people.may_act(task, person.lower() if "@" in person else person, Names(app))


def start_stages(app: App) -> list[Stage]:
    """The start forms a person may fill in the console."""
    out = []
    for wf in app.registry.workflows.values():
        out += [s for s in wf.start_stages() if s.kind is StageKind.FORM]
    return out


def may_start(workflow: Workflow, person: str, role: str) -> bool:
    """Whether the viewer may start ``workflow`` (``starters=`` names them, or names nobody)."""
    if role == "admin" or workflow.starters is None:
        return True
    return any(isinstance(s, str) and s.lower() == person.lower() for s in workflow.starters)


async def submit(app: App, task: Row, answers: dict[str, Any], person: str, role: str, form: Form) -> people.Result:
    """Submit a task's answers as the viewer (an admin acts in the assignee's place)."""
    actor = person.lower() if "@" in person else person
    directory: Any = Names(app)
    if role == "admin" and not await people.may_act(task, actor, directory):
        directory = _Everyone(actor)
    return await people.submit(app.store, int(task["id"]), answers, actor, directory,
                               max_payload_bytes=app.settings.max_payload_bytes, form=form,
                               effect={"via": "web"})


async def start(app: App, stage: Stage, answers: dict[str, Any], person: str, form: Form) -> people.Result:
    """Start a run from a start form, as the viewer."""
    return await people.start(app.store, stage, {}, answers, person, max_payload_bytes=app.settings.max_payload_bytes,
                              trigger={"kind": "form", "user": person, "via": "web"}, form=form)


class _Everyone:
    """The directory of an admin: every task is theirs to act on."""

    def __init__(self, actor: str) -> None:
        self.actor = actor

    async def identity(self, entry: str) -> str:
        return self.actor

    async def is_member(self, team: str, actor: str) -> bool:
        return True
