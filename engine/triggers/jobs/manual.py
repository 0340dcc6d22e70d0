"""Firing a job now, by hand, as an operation: the engine's access rule (its workflow's operators
and admins may) and an audit record written with the fire, on every edge that offers it (the web
console; the local CLI's ``flowbot jobs run`` is the local admin's)."""

from __future__ import annotations

from typing import Any

from engine.errors import FlowbotError, NotFound
from engine.ops.access import Action
from engine.ops.actor import Actor
from engine.ops.base import Ops
from engine.triggers.jobs.firing import FireResult, find_job, fire


async def fire_now(ops: Ops, name: str, actor: Actor) -> FireResult:
    """Fire the job ``name`` (``workflow/stage``) now as ``actor``: NotFound for no such job,
    Forbidden for someone who may not; the fire's status says whether it ran."""
    try:
        job = find_job(ops.store.registry, name)
    except FlowbotError as exc:
        raise NotFound(str(exc)) from None
    grant = await ops.require(actor, Action.FIRE_JOB, workflow=job.stage.workflow.name)
    return await fire(ops.store, job, ops.store.clock(), manual=True, max_payload_bytes=ops.max_payload_bytes,
                      audit=actor.record("job.fire", grant.relation))


def described(result: FireResult) -> dict[str, Any]:
    """A fire's outcome as data."""
    return {"job": result.job, "status": result.status, "fire_id": result.fire_id,
            "runs_created": result.runs_created, "error": (result.error or "").split("\n", 1)[0] or None}
