"""A run's execution report as data: its status, context, steps (timed tasks shown as scheduled,
open waits with what they wait for), unrouted sends, waiting joins, parent and children, the run
it reran and its reruns, and what people did to it (the audit trail)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine.deadlines import FORM_TIMEOUT_EVENT
from engine.store import ops_queries, queries, wait_queries
from engine.store.db import Row
from engine.store.ports import StoreView


async def report(store: StoreView, run_id: str) -> dict[str, Any] | None:
    """The execution report of a run: status, context, steps, unrouted sends, waiting joins."""
    run = await store.get_run(run_id)
    if run is None:
        return None
    async with store.db.transaction() as tx:
        steps = await tx.fetch_all(queries.RUN_STEPS, {"id": run["id"]})
        joins = await tx.fetch_all(queries.PENDING_JOINS, {"id": run["id"]})
        kids = await tx.fetch_all(wait_queries.CHILDREN_OF, {"id": run["id"], "limit": 100})
        counts = await tx.fetch_all(wait_queries.CHILDREN_COUNTS, {"id": run["id"]}) if kids else []
        reruns = await tx.fetch_all(ops_queries.RERUNS_OF, {"id": run["id"]})
        trail = await tx.fetch_all(ops_queries.RUN_AUDIT, {"id": run["id"]})
    now = store.clock()
    own = run["workflow_version"]
    ran_on = sorted({s["workflow_version"] for s in steps if s["workflow_version"]})
    return {
        "id": str(run["id"]),
        "workflow": run["workflow"],
        "workflow_version": own,
        # Every version that ran a step (the run's own first): more than one means the code
        # changed while the run was in flight.
        "versions": ([own] if own else []) + [v for v in ran_on if v != own],
        "mixed_versions": len(set(ran_on) | ({own} if own else set())) > 1,
        "status": run["status"],
        "test": bool(run.get("test")),
        "trigger": run["trigger"],
        "context": run["context"],
        "error": run["error"],
        "created_at": _iso(run["created_at"]),
        "finished_at": _iso(run["finished_at"]),
        "parent_run_id": str(run["parent_run_id"]) if run["parent_run_id"] else None,
        "steps": [_step(s, now) for s in steps],
        "unrouted": run["unrouted"],
        "waiting_joins": joins,
        "children": [{"id": str(k["id"]), "workflow": k["workflow"], "status": k["status"]} for k in kids],
        "children_counts": {c["status"]: int(c["n"]) for c in counts},
        "rerun_of": str(run["rerun_of"]) if run.get("rerun_of") else None,
        "reruns": [str(r["id"]) for r in reruns],
        "audit": [{**a, "at": _iso(a["at"])} for a in trail],
    }


def _step(s: Row, now: dt.datetime) -> dict[str, Any]:
    """One step of a report. A timed task not yet due shows as "scheduled" (with ``due_at``); an open
    wait says what it waits for."""
    status = s["status"]
    scheduled = status == "pending" and s["kind"] == "script" and s["available_at"] > now
    if scheduled and not s["ever_moved"]:  # never claimed: a timed task (not a retry or a release)
        status = "scheduled"
    step = {
        "stage": s["stage"], "task_id": s["task_id"], "kind": s["kind"], "type": s["type"],
        "status": status, "attempts": s["attempts"], "payload": s["payload"],
        "started_at": _iso(s["started_at"]), "finished_at": _iso(s["finished_at"]),
        "error": s["error"], "log": s["log"], "assignee": s["assignee"],
        "completed_by": s["completed_by"], "workflow_version": s["workflow_version"],
        "due_at": _iso(s["available_at"]) if scheduled else None,
    }
    if s["wait_event"] == FORM_TIMEOUT_EVENT:
        # A form task's timeout (engine.store.deadlines), not an event: shown as its deadline.
        if status == "pending":
            step["deadline"] = _iso(s["wait_deadline"])
    elif s["wait_event"] is not None:
        step["waiting_for"] = {"event": s["wait_event"], "key": s["wait_key"], "deadline": _iso(s["wait_deadline"])}
    return step


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
