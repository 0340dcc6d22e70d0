"""The outbox as operators see it: Slack and email effects waiting or failed; retry, discard."""

from __future__ import annotations

from typing import Any

from engine.errors import Conflict, Invalid, NotFound
from engine.ops.access import Action
from engine.ops.actor import Actor
from engine.ops.base import Ops
from engine.store import ops_queries
from engine.store.audit import write as write_audit
from engine.store.db import Row

STATUSES = ("pending", "failed")


def target_of(row: Row) -> str | None:
    """Who or where an effect goes, as far as its payload says."""
    payload = row.get("payload") or {}
    for key in ("channel", "user", "to", "email"):
        if payload.get(key):
            return str(payload[key])
    return f"task {row['task_id']}" if row.get("task_id") else None


async def list_effects(ops: Ops, actor: Actor, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Effects waiting or failed, oldest first: kind, target, age, attempts, last error."""
    if status is not None and status not in STATUSES:
        raise Invalid(f"status must be one of {', '.join(STATUSES)}, got {status!r}", {"status": "unknown status"})
    await ops.require(actor, Action.READ_OUTBOX)
    now = ops.store.clock()
    rows = await ops.store.db.fetch_all(ops_queries.LIST_OUTBOX, {"status": status, "limit": limit})
    return [{"id": r["id"], "kind": r["kind"], "status": r["status"], "target": target_of(r),
             "task_id": r["task_id"], "run_id": str(r["run_id"]) if r["run_id"] else None,
             "attempts": r["attempts"], "error": r["error"], "created_at": r["created_at"].isoformat(),
             "age_seconds": round((now - r["created_at"]).total_seconds(), 1)} for r in rows]


def _effect_id(ref: Any) -> int:
    try:
        return int(str(ref).strip())
    except ValueError:
        raise NotFound(f"no outbox effect {ref} (effect ids are numbers)") from None


async def _change(ops: Ops, ref: Any, actor: Actor, action: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    effect_id = _effect_id(ref)
    await ops.require(actor, Action.MANAGE_OUTBOX)
    now = ops.store.clock()
    async with ops.store.db.transaction() as tx:
        row = await tx.fetch_one(ops_queries.LOCK_OUTBOX, {"id": effect_id})
        if row is None:
            raise NotFound(f"no outbox effect {effect_id}")
        if row["status"] not in allowed:
            raise Conflict(f"outbox effect {effect_id} is {row['status']}: only a {' or '.join(allowed)} "
                           f"effect can be {'retried' if action == 'outbox.retry' else 'discarded'}",
                           state=row["status"])
        await tx.execute(ops_queries.RETRY_OUTBOX if action == "outbox.retry" else ops_queries.DISCARD_OUTBOX,
                         {"id": effect_id, "now": now})
        if action == "outbox.retry":
            await tx.notify()
        await write_audit(tx, [actor.record(action, "admin").on(
            run_id=str(row["run_id"]) if row["run_id"] else None, task_id=row["task_id"], effect=effect_id,
            kind=row["kind"], error=row["error"])], now)
    return {"id": effect_id, "status": "pending" if action == "outbox.retry" else "discarded"}


async def retry(ops: Ops, ref: Any, actor: Actor) -> dict[str, Any]:
    """A failed effect is delivered again, with fresh attempts."""
    return await _change(ops, ref, actor, "outbox.retry", ("failed",))


async def discard(ops: Ops, ref: Any, actor: Actor) -> dict[str, Any]:
    """A waiting or failed effect is never delivered (kept as discarded)."""
    return await _change(ops, ref, actor, "outbox.discard", ("pending", "failed"))
