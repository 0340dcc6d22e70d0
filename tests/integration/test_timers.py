"""Timed tasks (``ctx.send(..., delay=/at=)``) on a real Postgres: not claimable before their time,
durable across worker restarts, shown as scheduled, cancelled with their run, and a worker wakes
when the next one is due rather than at its poll.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from support import FakeClock, drain, scalar

from engine.runtime.report import render
from engine.runtime.worker import Worker, WorkerOptions
from engine.store import ops_queries, queries
from engine.store.db import Database
from engine.store.tasks import Store

STAGES = {
    "remind/workflow.py": """
        from engine import Workflow
        workflow = Workflow("remind", timezone="Europe/Paris")
        start = workflow.script("start")
        later = workflow.script("later")
        ask = workflow.form("ask", assignee="a@example.com")
        workflow.transition(start, later, on="later")
        workflow.transition(start, ask, on="ask")
    """,
    "remind/start.py": """
        import datetime as dt

        def run(task, ctx):
            if "at" in task:
                ctx.send("later", {"n": 1}, at=dt.datetime.fromisoformat(task["at"]))
            elif "delay" in task:
                ctx.send(task.get("type", "later"), {"n": 1}, delay=task["delay"])
    """,
    "remind/later.py": """
        def run(task, ctx):
            ctx.run["ran"] = task["n"]
    """,
    "remind/ask.py": "def form(task):\n    return None\n\ndef run(task, answers, ctx):\n    pass\n",
}


@pytest.fixture
def store(make_stages, store_for) -> Store:
    return store_for(make_stages(STAGES), clock=FakeClock())


async def start(store: Store, payload: dict) -> str:
    run_id, _ = await store.start_run(store.registry.get("remind").stage("start"), payload)
    return run_id


async def later_status(store: Store, run_id: str) -> str | None:
    return await scalar(store, "SELECT status FROM tasks WHERE run_id = CAST(:r AS uuid) AND stage = 'later'",
                        r=run_id)


async def test_a_task_sent_with_a_delay_is_not_claimed_before_its_time(store) -> None:
    run_id = await start(store, {"delay": "2h"})
    await drain(store)
    assert await later_status(store, run_id) == "pending"
    store.clock.advance(2 * 3600 - 1)
    assert await drain(store) == []
    store.clock.advance(1)
    await drain(store)
    assert await later_status(store, run_id) == "completed"
    assert (await store.get_run(run_id))["status"] == "completed"


async def test_a_task_sent_at_an_instant_becomes_claimable_then(store) -> None:
    at = store.clock.now + dt.timedelta(minutes=30)
    run_id = await start(store, {"at": at.isoformat()})
    await drain(store)
    due = await scalar(store, "SELECT available_at FROM tasks WHERE stage = 'later'")
    assert due == at
    store.clock.advance(30 * 60)
    await drain(store)
    assert await later_status(store, run_id) == "completed"


async def test_a_timed_task_shows_as_scheduled_with_its_due_time(store) -> None:
    run_id = await start(store, {"delay": "5d"})
    await drain(store)
    report = await store.report(run_id)
    assert report["status"] == "waiting"  # on the clock: nothing to run before then
    step = next(s for s in report["steps"] if s["stage"] == "later")
    due = store.clock.now + dt.timedelta(days=5)
    assert (step["status"], step["due_at"]) == ("scheduled", due.isoformat())
    assert "scheduled" in render(report) and f"due: {due.isoformat()}" in render(report)
    listed = await store.db.fetch_all(queries.LIST_TASKS, {"stage": None, "status": "scheduled", "run": None,
                                                           "workflow": None, "limit": 10, "now": store.clock(),
                                                           "before": None})
    assert [(r["stage"], r["due_at"]) for r in listed] == [("later", due)]
    store.clock.advance(5 * 86400)
    report = await store.report(run_id)
    assert next(s for s in report["steps"] if s["stage"] == "later")["status"] == "pending"


async def test_business_days_count_in_the_workflows_timezone(store) -> None:
    # Friday 2026-12-04 16:30 UTC is 17:30 in Paris: two business days later is Tuesday 17:30 Paris.
    store.clock.now = dt.datetime(2026, 12, 4, 16, 30, tzinfo=dt.UTC)
    await start(store, {"delay": "2 business days"})
    await drain(store)
    due = await scalar(store, "SELECT available_at FROM tasks WHERE stage = 'later'")
    assert due == dt.datetime(2026, 12, 8, 16, 30, tzinfo=dt.UTC)


async def test_a_timed_task_is_cancelled_with_its_run(store) -> None:
    run_id = await start(store, {"delay": "1h"})
    await drain(store)
    cancelled = await store.db.fetch_one(ops_queries.CANCEL_RUN_TASKS, {
        "id": run_id, "now": store.clock(), "actor": "op", "reason": "cancelled by op", "child_reason": None})
    assert cancelled["tasks"] == 1
    store.clock.advance(7200)
    assert await drain(store) == []
    assert await later_status(store, run_id) == "cancelled"


async def test_a_delayed_send_to_a_form_fails_the_stage_with_a_clear_error(store) -> None:
    run_id = await start(store, {"delay": "1h", "type": "ask"})
    await drain(store)
    error = await scalar(store, "SELECT error FROM tasks WHERE run_id = CAST(:r AS uuid) AND stage = 'start'",
                         r=run_id)
    assert "only script stages" in error and "remind/ask" in error
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'ask'") == 0


@pytest.mark.parametrize("bad", ["soon", "-5m", "0h"])
async def test_a_bad_delay_fails_the_stage_and_sends_nothing(store, bad) -> None:
    await start(store, {"delay": bad})
    await drain(store)
    error = await scalar(store, "SELECT error FROM tasks WHERE stage = 'start'")
    assert "remind/start: delay=" in error
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'later'") == 0


async def test_a_timed_task_survives_a_worker_restart_and_the_next_worker_wakes_when_it_is_due(
        make_stages, database_url) -> None:
    registry = make_stages(STAGES)
    first_db = Database(database_url)
    first = Store(first_db, registry)
    run_id = await start(first, {"delay": "2s"})
    stop = asyncio.Event()
    # A long poll: only the timer wake-up can run the task on time.
    options = WorkerOptions(concurrency=4, poll_interval=60)
    worker = asyncio.create_task(Worker(first, options).run(stop))
    try:
        async def started() -> bool:
            return await later_status(first, run_id) == "pending"

        deadline = time.monotonic() + 10
        while not await started():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker
        await first_db.close()
    # A new process: a new pool, store and worker. The task is still there and runs at its time.
    second_db = Database(database_url)
    second = Store(second_db, registry)
    due = await scalar(second, "SELECT available_at FROM tasks WHERE stage = 'later'")
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(second, options).run(stop))
    try:
        deadline = time.monotonic() + 30
        while await later_status(second, run_id) != "completed":
            assert time.monotonic() < deadline, "the timed task never ran"
            await asyncio.sleep(0.05)
        finished = await scalar(second, "SELECT finished_at FROM tasks WHERE stage = 'later'")
        assert finished >= due
        assert (finished - due).total_seconds() < 10.0, "ran at its time, not at the 60 s poll"
    finally:
        stop.set()
        await worker
        await second_db.close()
