"""API tokens of people: created (printed once; only a hash is kept), listed, revoked, checked."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from typing import Any

from engine.errors import Conflict, Invalid, NotFound
from engine.ops.access import Action
from engine.ops.actor import Actor, Edge, Role, is_person
from engine.ops.base import Ops
from engine.store import ops_queries
from engine.store.audit import write as write_audit
from engine.store.db import Database

#: What every token starts with (tells a flowbot token apart in a secret scanner).
PREFIX = "fbt_"
_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``2w`` as a duration (Invalid otherwise)."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise Invalid(f"a duration is a number and a unit (m, h, d or w), e.g. 90d; got {text!r}",
                      {"expires": "Give a duration such as 90d."})
    return dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def hash_token(token: str) -> str:
    """What is stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


async def create(ops: Ops, actor: Actor, person: str, *, role: str = "member",
                 expires: str | None = None) -> dict[str, Any]:
    """A new token for ``person``; the result holds the token itself, shown this once."""
    await ops.require(actor, Action.MANAGE_TOKENS)
    person = (person or "").strip()
    if not is_person(person):
        raise Invalid(f"{person!r} is not a person (an email or a Slack user id)", {"user": "Give an email."})
    if role not in (Role.ADMIN, Role.MEMBER):
        raise Invalid(f"role must be admin or member, got {role!r}", {"role": "admin or member"})
    now = ops.store.clock()
    until = now + parse_duration(expires) if expires else None
    token = PREFIX + secrets.token_urlsafe(32)
    async with ops.store.db.transaction() as tx:
        row = await tx.fetch_one(ops_queries.INSERT_API_TOKEN, {
            "person": person, "role": role, "hash": hash_token(token), "prefix": token[:len(PREFIX) + 6],
            "created_by": actor.person, "now": now, "expires": until})
        assert row is not None
        await write_audit(tx, [actor.record("token.create", "admin").on(
            token_id=row["id"], user=person, role=role, expires_at=until.isoformat() if until else None)], now)
    return {**_public(row), "token": token}


async def list_tokens(ops: Ops, actor: Actor) -> list[dict[str, Any]]:
    """Every token, without the tokens themselves."""
    await ops.require(actor, Action.MANAGE_TOKENS)
    return [_public(r) for r in await ops.store.db.fetch_all(ops_queries.LIST_API_TOKENS)]


async def revoke(ops: Ops, actor: Actor, ref: Any) -> dict[str, Any]:
    """A token stops working at once."""
    await ops.require(actor, Action.MANAGE_TOKENS)
    try:
        token_id = int(str(ref).strip())
    except ValueError:
        raise NotFound(f"no token {ref} (token ids are numbers: see `flowbot tokens list`)") from None
    now = ops.store.clock()
    async with ops.store.db.transaction() as tx:
        row = await tx.fetch_one(ops_queries.REVOKE_API_TOKEN, {"id": token_id, "now": now})
        if row is None:
            exists = await tx.fetch_one(ops_queries.GET_API_TOKEN, {"id": token_id})
            if exists is None:
                raise NotFound(f"no token {token_id}")
            raise Conflict(f"token {token_id} was already revoked")
        await write_audit(tx, [actor.record("token.revoke", "admin").on(token_id=token_id, user=row["person"])],
                          now)
    return {"id": token_id, "user": row["person"], "revoked": True}


async def authenticate(db: Database, token: str, now: dt.datetime, edge: Edge = Edge.API) -> Actor | None:
    """The person a live token belongs to (None for an unknown, revoked or expired token)."""
    if not token.startswith(PREFIX):
        return None
    row = await db.fetch_one(ops_queries.API_TOKEN_BY_HASH, {"hash": hash_token(token), "now": now})
    if row is None:
        return None
    return Actor(row["person"], Role(row["role"]), edge)


def _public(row: Any) -> dict[str, Any]:
    out = {"id": row["id"], "user": row["person"], "role": row["role"], "prefix": row["prefix"]}
    for key in ("created_by", "created_at", "expires_at", "revoked_at"):
        if key in row:
            value = row[key]
            out[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return out
