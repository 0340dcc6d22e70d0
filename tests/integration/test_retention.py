"""Retention: finished runs past their time go with everything hanging off them, in batches, by
one purger at a time; open and recent runs stay; a dry run changes nothing."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import TextClause, text
from support import FakeClock, cli_env, drain, eventually, flowbot, scalar, write_stages

from engine.loader import load_workflows
from engine.runtime.lifecycle import open_app
from engine.runtime.retention import retention_part
from engine.settings import Settings
from engine.store import ops_queries, trigger_queries
from engine.store.db import Database
from engine.store.retention import Policy, Purged, Purger
from engine.store.tasks import Store

STAGES = {
    "chain/workflow.py": """
        from engine import Workflow
        workflow = Workflow("chain")
        one = workflow.script("one")
        two = workflow.script("two")
        boom = workflow.script("boom", max_attempts=1)
        ask = workflow.form("ask", assignee="someone@example.com")
        workflow.transition(one, two)
    """,
    "chain/one.py": "def run(task, ctx):\n    ctx.send('next', {})\n",
    "chain/two.py": "def run(task, ctx):\n    ctx.slack.post('#general', 'done')\n",
    "chain/boom.py": "def run(task, ctx):\n    raise RuntimeError('no')\n",
    "chain/ask.py": """
        from engine.forms import Form, Text
        form = Form("Ask", fields=[Text("why", "Why")])

        def run(task, answers, ctx):
            pass
    """,
}

DAY = 86400.0
TABLES = ("runs", "tasks", "task_events", "outbox", "audit", "events", "hook_deliveries", "job_fires")


async def counts(store: Store) -> dict[str, int]:
    return {t: await scalar(store, f"SELECT count(*) FROM {t}") for t in TABLES}


class World:
    """Runs of every kind at chosen ages, and trigger records around their windows."""

    def __init__(self, db: Database, root: Path) -> None:
        self.real_now = dt.datetime.now(dt.UTC)
        self.clock = FakeClock(self.real_now)
        self.store = Store(db, load_workflows(root), clock=self.clock)
        self.wf = self.store.registry.get("chain")
        self.kept: list[str] = []
        self.purged: list[str] = []

    def at(self, days_ago: float) -> None:
        self.clock.now = self.real_now - dt.timedelta(days=days_ago)

    async def completed(self, days_ago: float) -> str:
        self.at(days_ago)
        run_id, _ = await self.store.start_run(self.wf.stage("one"), {})
        await drain(self.store)
        return run_id

    async def failed(self, days_ago: float) -> str:
        self.at(days_ago)
        run_id, _ = await self.store.start_run(self.wf.stage("boom"), {})
        await drain(self.store)
        return run_id

    async def cancelled(self, days_ago: float) -> str:
        self.at(days_ago)
        run_id, _ = await self.store.start_run(self.wf.stage("one"), {})
        async with self.store.db.transaction() as tx:
            await tx.execute(ops_queries.CANCEL_RUN_TASKS, {"id": uuid.UUID(run_id), "actor": "test",
                                                            "now": self.clock(), "reason": "cancelled",
                                                            "child_reason": None})
        return run_id

    async def waiting(self, days_ago: float) -> str:
        self.at(days_ago)
        run_id, _ = await self.store.start_run(self.wf.stage("ask"), {})
        return run_id

    async def running(self, days_ago: float) -> str:
        self.at(days_ago)
        run_id, _ = await self.store.start_run(self.wf.stage("one"), {})  # nobody claims it
        return run_id

    async def build(self) -> None:
        self.purged += [await self.completed(40), await self.completed(31), await self.failed(45),
                        await self.cancelled(60), await self.completed(35)]
        self.kept += [await self.completed(29), await self.completed(1), await self.failed(2)]
        # Open runs are never purged, however old (checked last: nothing drains them).
        self.kept += [await self.waiting(100), await self.running(100)]
        db = self.store.db
        async with db.transaction() as tx:
            for days, key in [(30, "old-1"), (8, "old-2"), (6, "new-1"), (0, "new-2")]:
                await tx.execute(trigger_queries.INSERT_HOOK_DELIVERY, {
                    "hook": "chain/in", "delivery_id": key, "method": "POST", "status": 200, "headers": {},
                    "body": b"", "run_ids": [], "unrouted": [], "log": [],
                    "now": self.real_now - dt.timedelta(days=days)})
            for job, days in [("chain/a", 100), ("chain/a", 95), ("chain/a", 1), ("chain/b", 200)]:
                await tx.execute(trigger_queries.SKIP_JOB_FIRE, {
                    "job": job, "fire_time": self.real_now - dt.timedelta(days=days), "reason": "test",
                    "owner": "test", "now": self.real_now})


@pytest.fixture
async def world(db: Database, tmp_path: Path) -> World:
    w = World(db, write_stages(tmp_path / "stages", STAGES))
    await w.build()
    return w


#: Every run, newest first (the engine's listing, as an admin sees it).
ALL_RUNS = ops_queries.LIST_RUNS_VISIBLE
ADMIN = {"all": True, "workflows": [], "people": []}


async def remaining_runs(store: Store) -> set[str]:
    rows = await store.db.fetch_all(ALL_RUNS, {"workflow": None, "status": None, "limit": 100, **ADMIN})
    return {str(r["id"]) for r in rows}


async def test_purge_deletes_old_finished_runs_with_their_rows_and_keeps_open_and_recent_ones(world: World) -> None:
    store = world.store
    async with store.db.transaction() as tx:  # a person acted on one purged and one kept run
        for run_id in (world.purged[0], world.kept[0]):
            await tx.execute(_sql("INSERT INTO audit (actor, edge, action, workflow, run_id) "
                                  "VALUES ('ana@example.com', 'cli', 'cancel', 'chain', CAST(:run AS uuid))"),
                             {"run": run_id})
        # An event past the lookback, and one within it.
        for name, age in (("paid", dt.timedelta(days=2)), ("paid", dt.timedelta(hours=1))):
            await tx.execute(_sql("INSERT INTO events (name, key, created_at) VALUES (:name, 'o-1', :at)"),
                             {"name": name, "at": world.real_now - age})
    before = await counts(store)
    assert before["outbox"] == 6, "each completed run posted once to Slack; the form's assignment"
    expected = await Purger(store.db, Policy()).count()

    done = await Purger(store.db, Policy(), batch=2).purge()

    assert done is not None
    assert done == expected
    assert (done.runs, done.tasks, done.outbox, done.audit, done.events, done.hook_deliveries,
            done.job_fires) == (5, 8, 3, 1, 1, 2, 2)
    assert await remaining_runs(store) == set(world.kept)
    after = await counts(store)
    assert {t: before[t] - after[t] for t in TABLES} == {
        "runs": 5, "tasks": 8, "task_events": 15, "outbox": 3, "audit": 1, "events": 1, "hook_deliveries": 2,
        "job_fires": 2}
    # claimed + completed (or failed) for each of the 7 tasks workers ran; the cancelled one has 1
    assert done.task_events == 15
    # Nothing of a purged run is left anywhere.
    gone = [uuid.UUID(r) for r in world.purged]
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE run_id = ANY(:ids)", ids=gone) == 0
    assert await scalar(store, "SELECT count(*) FROM outbox WHERE run_id = ANY(:ids)", ids=gone) == 0
    assert await scalar(store, "SELECT count(*) FROM audit WHERE run_id = ANY(:ids)", ids=gone) == 0
    assert await scalar(store, "SELECT count(*) FROM task_events e LEFT JOIN tasks t ON t.id = e.task_id "
                               "WHERE t.id IS NULL") == 0
    # Hook delivery ids inside their window stay (a redelivery is still replayed); each job keeps
    # its latest fire, however old.
    ids = [r["delivery_id"] for r in await store.db.fetch_all(_sql("SELECT delivery_id FROM hook_deliveries"))]
    assert sorted(ids) == ["new-1", "new-2"]
    fires = await store.db.fetch_all(_sql("SELECT job, fire_time FROM job_fires ORDER BY job"))
    assert [f["job"] for f in fires] == ["chain/a", "chain/b"]

    again = await Purger(store.db, Policy()).purge()
    assert again == Purged(), "a second pass finds nothing more"


def _sql(sql: str) -> TextClause:
    return text(sql)


async def test_periods_of_none_keep_everything(world: World) -> None:
    before = await counts(world.store)
    done = await Purger(world.store.db, Policy(runs=None, hook_deliveries=None, job_fires=None, events=None)).purge()
    assert done == Purged()
    assert await counts(world.store) == before


async def test_two_purgers_at_once_do_not_both_run(world: World) -> None:
    store = world.store
    # Batches of one run with a pause: the first pass lasts while the second one starts.
    first = Purger(store.db, Policy(), batch=1, pause=0.1)
    second = Purger(store.db, Policy(), batch=1, pause=0.1)
    results = await asyncio.gather(first.purge(), second.purge())
    assert sorted(r is None for r in results) == [False, True], results
    winner = next(r for r in results if r is not None)
    assert winner.runs == 5
    assert await remaining_runs(store) == set(world.kept)


async def test_a_purge_while_another_process_holds_the_lock_does_nothing(world: World, raw_url: str,
                                                                          tmp_path: Path) -> None:
    import asyncpg

    before = await counts(world.store)
    holder = await asyncpg.connect(raw_url)
    try:
        async with holder.transaction():
            assert await holder.fetchval("SELECT pg_try_advisory_xact_lock(hashtext('flowbot.retention'))")
            assert await Purger(world.store.db, Policy()).purge() is None
            env = cli_env(raw_url, tmp_path / "stages")
            busy = await asyncio.to_thread(flowbot, "purge", "--older-than", "30d", env=env)
            assert busy.returncode == 1
            assert "another flowbot process is purging" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        await holder.close()
    assert await counts(world.store) == before


async def test_flowbot_purge_dry_run_prints_counts_and_changes_nothing_then_purges(world: World, raw_url: str,
                                                                                   tmp_path: Path) -> None:
    env = cli_env(raw_url, tmp_path / "stages")
    before = await counts(world.store)
    dry = await asyncio.to_thread(flowbot, "purge", "--older-than", "30d", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert ("would purge 5 runs, 8 tasks, 15 task events, 3 outbox rows, 0 audit records, 0 events, "
            "2 hook deliveries, 2 job fires") in dry.stdout
    assert await counts(world.store) == before

    # --older-than decides for runs: 3 days purges the 29-day-old run too (not the 1- and 2-day ones).
    done = await asyncio.to_thread(flowbot, "purge", "--older-than", "3d", env=env)
    assert done.returncode == 0, done.stderr
    assert "purged 6 runs" in done.stdout
    assert await remaining_runs(world.store) == set(world.kept[1:])

    bad = await asyncio.to_thread(flowbot, "purge", "--older-than", "soon", env=env)
    assert bad.returncode == 1 and "--older-than must be" in bad.stderr and "Traceback" not in bad.stderr


async def test_flowbot_run_and_worker_purge_periodically(world: World, database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, home=tmp_path / "home", stages_dir=tmp_path / "stages",
                        purge_interval=3600, purge_batch=2)
    async with open_app(settings, load_plugins_=False, pool_size=4) as app:
        stop = asyncio.Event()
        part = asyncio.create_task(retention_part(app, first_delay=0.0)(stop))
        try:
            async def purged() -> bool:
                return await remaining_runs(world.store) == set(world.kept)

            await eventually(purged, within=10, what="the retention part's first pass")
        finally:
            stop.set()
            await asyncio.wait_for(part, 10)
