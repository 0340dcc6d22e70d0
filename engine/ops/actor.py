"""Who is acting: a person (an email or a Slack user id), their role, and the edge they act through."""

from __future__ import annotations

import enum
import getpass
import re
from dataclasses import dataclass

from engine.store.audit import Entry


class Role(enum.StrEnum):
    """What a token or a local user may do at most: an admin may do everything."""

    ADMIN = "admin"
    MEMBER = "member"


class Edge(enum.StrEnum):
    """Where an action came from (recorded in the audit trail)."""

    SLACK = "slack"
    API = "api"
    CLI = "cli"
    WEB = "web"


#: A Slack user id (U… or W…).
USER_ID_RE = re.compile(r"^[UW][A-Z0-9]{2,}$")
#: An email address (loosely: something@domain.tld).
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def is_person(value: str) -> bool:
    """Whether ``value`` names a person: an email or a Slack user id."""
    return bool(EMAIL_RE.match(value) or USER_ID_RE.match(value))


@dataclass(frozen=True)
class Actor:
    """The one value every operation receives about who is acting."""

    person: str
    role: Role = Role.MEMBER
    edge: Edge = Edge.CLI

    @property
    def is_admin(self) -> bool:
        """Whether the actor may do everything."""
        return self.role is Role.ADMIN

    def record(self, action: str, acting_as: str | None = None, on_behalf_of: str | None = None) -> Entry:
        """An audit entry of ``action`` by this actor (name what it touched with ``.on``)."""
        return Entry(actor=self.person, action=action, edge=self.edge.value, acting_as=acting_as,
                     on_behalf_of=on_behalf_of)


def role_of(person: str, admins: tuple[str, ...] | list[str], granted: str = Role.MEMBER) -> Role:
    """A person's role where people sign in (the console): admin when something already granted
    it (a sign-in link made with ``--role admin``, an identity provider's claim) or when they are
    named in ``FLOWBOT_ADMINS``; a member otherwise."""
    if granted == Role.ADMIN:
        return Role.ADMIN
    key = person.lower() if "@" in person else person
    return Role.ADMIN if key in admins else Role.MEMBER


def local_admin() -> Actor:
    """The person at the local CLI without ``--as``: the local admin, ``local:<os user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        user = "unknown"
    return Actor(f"local:{user}", Role.ADMIN, Edge.CLI)
