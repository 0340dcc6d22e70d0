"""The task store as the modules beside it see it (waits, child runs, reports): a Protocol, so that
they need not import ``engine.store.tasks``, which imports them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine.loader import Registry
from engine.store.db import Database, Row, Tx
from engine.store.fanout import FreshRuns
from engine.store.results import CommitResult, Finished, Started
from engine.workflow import Stage


class StoreView(Protocol):
    """What ``engine.store.tasks.Store`` offers its neighbours."""

    db: Database
    registry: Registry
    clock: Callable[[], dt.datetime]
    lease_seconds: int
    event_lookback: float

    def stage_of(self, row: Row) -> Stage:
        """The loaded stage a task row belongs to."""
        ...

    async def get_run(self, run_id: str) -> Row | None:
        """One run, or None."""
        ...

    async def complete_rows(self, tx: Tx, finished: Sequence[Finished], *, worker: str | None, actors: list[str],
                            from_status: str, now: dt.datetime) -> list[Row]:
        """Complete tasks (guarded); the rows of those completed."""
        ...

    async def apply(self, tx: Tx, finished: list[Finished], now: dt.datetime, result: CommitResult) -> None:
        """Everything completed tasks produced, written in ``tx``."""
        ...

    async def fail_runs(self, tx: Tx, moved: list[Row], now: dt.datetime) -> None:
        """The runs of tasks that failed for good fail."""
        ...

    async def refresh_runs(self, tx: Tx, run_ids: Sequence[str], now: dt.datetime) -> None:
        """Derive runs' statuses from their tasks."""
        ...

    async def add_effects(self, tx: Tx, effects: Sequence[tuple[str, dict[str, Any], int | None, str | None]],
                          now: dt.datetime) -> None:
        """Write outbox rows (kind, payload, task id, run id) in ``tx``."""
        ...

    async def write_fresh(self, tx: Tx, batch: FreshRuns) -> Started:
        """Write a batch of new runs and their first tasks."""
        ...
