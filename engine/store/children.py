"""Runs started by stages (``ctx.start``): written in the stage's completion, linked to its run.

Children go in through the fan-out path (``engine.store.fanout.FreshRuns``: binary COPY of the
runs and their first script tasks), one batch per (parent run, start stage), so a stage starting
100,000 children costs what a job's fan-out does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from engine.context import Send
from engine.store import queries
from engine.store.db import Tx
from engine.store.fanout import FreshRuns
from engine.store.ports import StoreView
from engine.store.results import Finished
from engine.workflow import Stage


def trigger_of(parent: Finished, stage: Stage) -> dict[str, object]:
    """The ``trigger`` of a run a stage started: its parent run, task and stage."""
    return {"kind": "parent", "run_id": str(parent.task["run_id"]), "task_id": parent.task["id"], "stage": stage.key}


def batch(store: StoreView, source: Stage, start: Stage, *, trigger: dict[str, object], now: dt.datetime,
          parent: str | None) -> FreshRuns:
    """An empty batch of child runs of ``start``'s workflow (fill it with ``add(Send(...))``)."""
    return FreshRuns(source, trigger, now, f"{source.kind.value}:{source.key}", store.lease_seconds,
                     start=start, parent=parent)


async def start(store: StoreView, tx: Tx, finished: Sequence[Finished], now: dt.datetime) -> list[str]:
    """Start the runs the finished tasks' stages asked for, in ``tx``; their ids."""
    run_ids: list[str] = []
    by_parent: dict[str, list[str]] = {}
    for f in finished:
        if not f.routes.children:
            continue
        parent_ids = by_parent.setdefault(str(f.task["run_id"]), [])
        source = store.stage_of(f.task)
        batches: dict[str, FreshRuns] = {}
        for target, child in f.routes.children:
            b = batches.get(target.key)
            if b is None:
                b = batches[target.key] = batch(store, source, target, trigger=trigger_of(f, source), now=now,
                                                parent=str(f.task["run_id"]))
            b.add(Send("start", raw=child.raw))
        for b in batches.values():
            started = (await store.write_fresh(tx, b)).run_ids
            parent_ids += started
            run_ids += started
    if by_parent:
        # The children of a test run are test runs too (purged with it, out of success rates).
        tests = await tx.fetch_all(queries.TEST_RUNS_AMONG, {"ids": list(by_parent)})
        children = [c for t in tests for c in by_parent[str(t["id"])]]
        if children:
            await tx.execute(queries.MARK_TEST_RUNS, {"ids": children})
    return run_ids
