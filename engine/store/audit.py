"""Audit records: one per action of a person or operator, written in the action's transaction.

``Entry`` is what an operation records; ``write`` appends entries inside a transaction, so an
action and its record commit together or not at all (a refused action records nothing).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from engine.store import ops_queries
from engine.store.db import Tx, jsonb_array


@dataclass(frozen=True)
class Entry:
    """One action: ``actor`` did ``action`` through ``edge`` (slack, api, cli, web), allowed as
    ``acting_as`` (admin, operator, assignee...), on a workflow, run and task, with ``detail``
    (answers, reason, comment...). ``on_behalf_of`` names the assignee an admin acted for."""

    actor: str
    action: str
    edge: str
    acting_as: str | None = None
    on_behalf_of: str | None = None
    workflow: str | None = None
    run_id: str | None = None
    task_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def on(self, *, workflow: str | None = None, run_id: str | None = None, task_id: int | None = None,
           **detail: Any) -> Entry:
        """A copy naming what the action touched (and more detail)."""
        return replace(self, workflow=workflow or self.workflow, run_id=run_id or self.run_id,
                       task_id=task_id if task_id is not None else self.task_id,
                       detail={**self.detail, **detail})


async def write(tx: Tx, entries: Sequence[Entry], now: dt.datetime) -> None:
    """Append ``entries`` to the audit trail inside ``tx``."""
    if not entries:
        return
    await tx.execute(ops_queries.INSERT_AUDIT, {
        "actors": [e.actor for e in entries], "acting_as": [e.acting_as for e in entries],
        "on_behalf_of": [e.on_behalf_of for e in entries], "edges": [e.edge for e in entries],
        "actions": [e.action for e in entries], "workflows": [e.workflow for e in entries],
        "run_ids": [uuid.UUID(str(e.run_id)) if e.run_id else None for e in entries],
        "task_ids": [e.task_id for e in entries], "details": jsonb_array(e.detail for e in entries),
        "now": now,
    })
