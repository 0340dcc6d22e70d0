"""What a job's ``run(ctx)`` receives: a Context plus its fire time and read-only run figures."""

from __future__ import annotations

import datetime as dt
from typing import Any

from engine import queries
from engine.context import Context
from engine.db import Tx


class JobStats:
    """``ctx.stats``: read-only figures about flowbot's own runs, for report jobs (async)."""

    def __init__(self, tx: Tx) -> None:
        self._tx = tx

    async def runs_by_workflow_status(self, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
        """Runs created in [since, until): ``[{"workflow", "status", "n"}]``."""
        rows = await self._tx.fetch_all(queries.RUNS_BY_WORKFLOW_STATUS, {"since": since, "until": until})
        return [{"workflow": r["workflow"], "status": r["status"], "n": int(r["n"])} for r in rows]

    async def slowest_steps(self, since: dt.datetime, until: dt.datetime,
                            limit: int = 5) -> list[dict[str, Any]]:
        """Stages whose tasks completed in [since, until), slowest first:
        ``[{"workflow", "stage", "n", "avg_seconds", "max_seconds"}]``."""
        rows = await self._tx.fetch_all(queries.SLOWEST_STEPS, {"since": since, "until": until, "limit": limit})
        return [{"workflow": r["workflow"], "stage": r["stage"], "n": int(r["n"]),
                 "avg_seconds": float(r["avg_seconds"] or 0), "max_seconds": float(r["max_seconds"] or 0)}
                for r in rows]


class JobContext(Context):
    """The ``ctx`` of a job: a Context plus the fire time being served and ``stats``.

    ``ctx.run`` set by a job becomes the starting context of every run its sends start.
    """

    def __init__(self, *, job_key: str, fire_time: dt.datetime, manual: bool, stats: JobStats,
                 max_payload_bytes: int, previous_fire_time: dt.datetime | None = None) -> None:
        super().__init__(stage_key=job_key, run_context=None, max_payload_bytes=max_payload_bytes,
                         can_name_run=True)
        #: The scheduled instant this run serves (UTC); "now" for `flowbot jobs run`.
        self.fire_time = fire_time
        #: The previous fire time of the schedule (UTC), e.g. the start of a report's window.
        self.previous_fire_time = previous_fire_time
        self.manual = manual
        self.stats = stats
