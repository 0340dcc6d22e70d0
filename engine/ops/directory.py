"""People and teams as the engine knows them, with or without Slack.

A person is an email or a Slack user id, and a Slack user is the same person as their email (as
the Slack app knows them, when it runs). A team is a Slack user group or channel, or a handle of
the teams file beside the workflows (``teams.toml``: ``handle = ["ann@example.com", ...]``), which is what
teams are made of when Slack is off.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.assignees import Team
from engine.errors import ConfigError
from engine.ops.actor import USER_ID_RE
from engine.people.actions import Directory
from engine.store.db import Database

TEAMS_FILE = "teams.toml"


def team_key(ref: str) -> str:
    """A team handle as the teams file keys it (``@it-helpdesk`` and ``it-helpdesk`` alike)."""
    return ref.strip().lstrip("@#").lower()


def load_teams(stages_dir: Path) -> dict[str, list[str]]:
    """The teams file beside the workflows (empty when there is none); ConfigError names a bad one."""
    path = stages_dir / TEAMS_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    teams: dict[str, list[str]] = {}
    for handle, members in data.items():
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{path}: team {handle!r} must be a list of emails or Slack user ids")
        teams[team_key(handle)] = [m.strip() for m in members]
    return teams


def is_team_ref(ref: Any) -> bool:
    """Whether a people reference names a team (``Team``, ``@handle``, ``#channel``, ``S…``/``C…`` id)."""
    if isinstance(ref, Team):
        return True
    value = str(ref).strip()
    return value.startswith(("@", "#")) or (value[:1] in ("S", "C", "G") and value.upper() == value
                                            and "@" not in value)


@dataclass
class People:
    """``engine.people.actions.Directory`` for the engine's edges: teams through the teams file,
    then ``fallback`` (the Slack app's directory, when it runs in this process), which also knows
    which email and Slack id are the same person."""

    db: Database
    teams: dict[str, list[str]] = field(default_factory=dict)
    fallback: Directory | None = None

    async def aliases(self, person: str) -> set[str]:
        """Every name of ``person``: itself, and the other names the fallback directory knows (the
        Slack app: an email's Slack id, a Slack id's email)."""
        names = {person, person.lower()} if "@" in person else {person}
        known = getattr(self.fallback, "aliases", None)
        if known is not None:
            names.update(await known(person))
        return names

    async def same(self, a: str, b: str) -> bool:
        """Whether ``a`` and ``b`` name the same person (an email and a Slack id are the same
        person when the Slack app knows them as one)."""
        if a == b or a.lower() == b.lower():
            return True
        if a in await self.aliases(b) or a.lower() in await self.aliases(b):
            return True
        if self.fallback is not None:
            for email, other in ((a, b), (b, a)):
                if "@" in email and USER_ID_RE.match(other) and await self.fallback.identity(email) == other:
                    return True
        return False

    async def identity(self, entry: str) -> str:
        """An assignee entry as is (``Directory``; matching goes through ``same``)."""
        return entry

    async def is_member(self, team: str, actor: str) -> bool:
        """Whether ``actor`` is in ``team``: the teams file, then Slack when it runs here."""
        members = self.teams.get(team_key(team))
        if members:
            names = await self.aliases(actor)
            lowered = {n.lower() for n in names}
            if any(m in names or m.lower() in lowered for m in members):
                return True
        if self.fallback is not None:
            for name in await self.aliases(actor):
                if await self.fallback.is_member(team, name):
                    return True
        return False

    async def is_one_of(self, person: str, refs: Iterable[Any]) -> bool:
        """Whether ``person`` is named by any of ``refs`` (people or teams)."""
        for ref in refs:
            value = ref.ref if isinstance(ref, Team) else str(ref).strip()
            if is_team_ref(ref):
                if await self.is_member(value, person):
                    return True
            elif await self.same(value, person):
                return True
        return False

    async def is_assignee(self, assignee: dict[str, Any] | None, person: str) -> bool:
        """Whether a task's assignee (``{"users": [...]}`` or ``{"team": ref}``) names ``person``:
        one of its users, or a member of its team while nobody claimed it."""
        assignee = assignee or {}
        if await self.is_one_of(person, [u for u in assignee.get("users") or [] if isinstance(u, str)]):
            return True
        team = assignee.get("team")
        return bool(team) and not assignee.get("claimed_by") and await self.is_member(str(team), person)
