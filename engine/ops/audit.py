"""Reading the audit trail (writing it is part of each operation's transaction)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from engine.errors import Invalid
from engine.ops import runs
from engine.ops.access import Action
from engine.ops.actor import Actor
from engine.ops.base import Ops, find_run
from engine.ops.tokens import parse_duration
from engine.store import ops_queries


def parse_since(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO date or time, or a duration back from now (``2h``, ``7d``)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return now - parse_duration(text)
        except Invalid:
            raise Invalid(f"since must be an ISO date or time or a duration such as 7d, got {text!r}",
                          {"since": "Give a date or a duration."}) from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


async def trail(ops: Ops, actor: Actor, *, run: str | None = None, person: str | None = None,
                since: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """The audit trail, newest first. Admins read all of it; whoever may read a run reads the
    trail of that run."""
    run_id: uuid.UUID | None = None
    if run:
        row = await find_run(ops, run)
        run_id = row["id"]
        if not actor.is_admin:
            await runs.report(ops, str(run_id), actor)
    else:
        await ops.require(actor, Action.READ_AUDIT)
    people = sorted(await ops.people.aliases(person)) if person else []
    rows = await ops.store.db.fetch_all(ops_queries.LIST_AUDIT, {
        "run": run_id, "actor": person, "actors": people,
        "since": parse_since(since, ops.store.clock()) if since else None, "limit": limit})
    return [{**r, "at": r["at"].isoformat(), "run_id": str(r["run_id"]) if r["run_id"] else None} for r in rows]
