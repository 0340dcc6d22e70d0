"""One-time links into the web console: sign-in links and a task's form link (from an email).

The token goes to the person (printed, emailed, sent by DM); only its SHA-256 is stored. Spending
a link is one guarded UPDATE, so of two clicks on the same link exactly one signs in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from engine.store import console_queries as q
from engine.store.db import Database

#: How long a sign-in link lives.
SIGNIN_TTL = dt.timedelta(minutes=15)
#: How long an assignment email's link lives (people open mail later than they read a DM).
TASK_TTL = dt.timedelta(days=7)

SIGNIN = "signin"
TASK = "task"


def token_hash(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Spent:
    """What a spent link grants: a session for ``person`` (at most ``role``), maybe on one task."""

    person: str
    role: str
    purpose: str
    task_id: int | None


async def create(db: Database, person: str, now: dt.datetime, *, role: str = "member", purpose: str = SIGNIN,
                 task_id: int | None = None, ttl: dt.timedelta | None = None) -> str:
    """A new one-time link token for ``person``."""
    token = secrets.token_urlsafe(32)
    life = ttl or (TASK_TTL if purpose == TASK else SIGNIN_TTL)
    async with db.transaction() as tx:
        await tx.execute(q.INSERT_LINK, {"token_hash": token_hash(token), "person": person, "role": role,
                                         "purpose": purpose, "task_id": task_id, "now": now,
                                         "expires_at": now + life})
    return token


async def spend(db: Database, token: str, now: dt.datetime) -> Spent | None:
    """Spend a link: what it grants, or None when it is unknown, used or expired."""
    if not token or len(token) > 200:
        return None
    async with db.transaction() as tx:
        row = await tx.fetch_one(q.USE_LINK, {"token_hash": token_hash(token), "now": now})
        await tx.execute(q.DELETE_EXPIRED_LINKS, {"now": now - dt.timedelta(days=1)})
    if row is None:
        return None
    return Spent(row["person"], row["role"], row["purpose"], row["task_id"])


def url(base: str, token: str) -> str:
    """The address of a link."""
    return f"{base.rstrip('/')}/console/link/{token}"


async def signin_url(db: Database, base: str, person: str, now: dt.datetime, *, role: str = "member") -> str:
    """A fresh one-time sign-in link for ``person`` (what `flowbot login` prints)."""
    return url(base, await create(db, person, now, role=role))
