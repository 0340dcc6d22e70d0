"""Scheduled jobs on a real Postgres with an injectable clock: firing, misfires, fan-out, failure.

The scheduler sleeps until the next fire time; the tests give it a fake clock and a fake sleep
that moves that clock, so a week passes instantly and every sleep it asks for is recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from blockkit import assert_valid_blocks
from fakeslack import FakeSlack
from sqlalchemy import text
from support import ROOT, FakeClock, drain, scalar, write_stages

from engine.errors import WorkflowLoadError
from engine.loader import load_workflows
from engine.runtime.lifecycle import open_app
from engine.runtime.outbox import OutboxDispatcher
from engine.runtime.runner import run_script
from engine.settings import Settings
from engine.store.ops_queries import LIST_RUNS_VISIBLE
from engine.store.tasks import Failed, Finished, Store
from engine.triggers.jobs.firing import UnknownJob, find_job, fire, jobs_of
from engine.triggers.jobs.scheduler import Scheduler

UTC = dt.UTC

STAGES = {
    "digest/workflow.py": """
        from engine import Workflow
        workflow = Workflow("digest")
        weekly = workflow.job("weekly", schedule="0 9 * * MON", timezone="America/Sao_Paulo")
        fanout = workflow.job("fanout", schedule="daily at 03:00")
        broken = workflow.job("broken", schedule="monthly on 31 at 23:30", timezone="Europe/Berlin")
        stray = workflow.job("stray", schedule="hourly")
        handle = workflow.script("handle")
        workflow.transition(weekly, handle, on="item")
        workflow.transition(fanout, handle, on="item")
        workflow.transition(broken, handle)
        workflow.transition(stray, handle, on="item")
    """,
    "digest/weekly.py": """
        def run(ctx):
            ctx.run["fired_for"] = ctx.fire_time.isoformat()
            ctx.log("weekly for %s", ctx.fire_time.isoformat())
            for n in range(3):
                ctx.send("item", {"n": n})
    """,
    "digest/fanout.py": """
        import os

        async def run(ctx):
            n = int(os.environ.get("FANOUT_N", "10"))
            for i in range(n):
                ctx.send("item", {"i": i})
            if os.environ.get("FANOUT_RAISE"):
                raise RuntimeError("the source went away after sending")
    """,
    "digest/broken.py": """
        def run(ctx):
            ctx.send("item", {"n": 1})
            ctx.send("item", {"n": 2}, run_id="00000000-0000-0000-0000-000000000000")
    """,
    "digest/stray.py": """
        def run(ctx):
            ctx.send("nobody-routes-this", {"x": 1})
            ctx.send("item", {"x": 2})
    """,
    "digest/handle.py": """
        def run(task, ctx):
            ctx.run["handled"] = task.payload
    """,
}

# Monday 16 November 2026 09:00 in Sao Paulo (UTC-3, no DST since 2019) is 12:00 UTC.
MONDAY_FIRE = dt.datetime(2026, 11, 16, 12, 0, tzinfo=UTC)

#: Every run, newest first (the engine's listing, as an admin sees it).
ALL_RUNS = LIST_RUNS_VISIBLE
ADMIN = {"all": True, "workflows": [], "people": []}


@pytest.fixture
def registry(make_stages: Any) -> Any:
    return make_stages(STAGES)


def weekly_only(store: Store) -> list[Any]:
    return [j for j in jobs_of(store.registry) if j.key == "digest/weekly"]


async def fires(store: Store, job: str) -> list[dict[str, Any]]:
    async with store.db.transaction() as tx:
        return await tx.fetch_all(text("SELECT * FROM job_fires WHERE job = :job ORDER BY fire_time"), {"job": job})


async def count(store: Store, table: str) -> int:
    return int(await scalar(store, f"SELECT count(*) FROM {table}"))


class FakeSleep:
    """The scheduler's sleep: records each delay and moves the clock by it; stops after ``limit``."""

    def __init__(self, clock: FakeClock, stop_after: int) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self.stop_after = stop_after

    async def __call__(self, seconds: float, stop: asyncio.Event) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)
        if len(self.delays) >= self.stop_after:
            stop.set()
        await asyncio.sleep(0)


async def test_the_scheduler_sleeps_until_each_fire_time_and_fires_it_once(registry: Any, store_for: Any) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 15, 12, 0, tzinfo=UTC))  # Sunday noon UTC
    store = store_for(registry, clock=clock)
    sleep = FakeSleep(clock, stop_after=3)
    scheduler = Scheduler(store, weekly_only(store), clock=clock, sleep=sleep, max_sleep=8 * 86400)
    await scheduler.run(asyncio.Event())

    # Idle means one sleep straight to the next fire time: a day, then a week, no polling.
    assert sleep.delays == [86400.0, 7 * 86400.0, 7 * 86400.0]
    rows = await fires(store, "digest/weekly")
    assert [r["fire_time"] for r in rows] == [MONDAY_FIRE, MONDAY_FIRE + dt.timedelta(days=7)]
    assert {r["status"] for r in rows} == {"fired"} and {r["runs_created"] for r in rows} == {3}
    assert rows[0]["log"][0]["message"] == f"weekly for {MONDAY_FIRE.isoformat()}"
    # Each send started its own run, with the job's ctx.run as its context and the fire as trigger.
    runs = await store.db.fetch_all(ALL_RUNS, {"workflow": "digest", "status": None, "limit": 10, **ADMIN})
    assert len(runs) == 6
    assert {r["trigger"]["fire_time"] for r in runs} == {r["fire_time"].isoformat() for r in rows}
    run = await store.get_run(str(runs[0]["id"]))
    assert run is not None and run["context"]["fired_for"] in {r["fire_time"].isoformat() for r in rows}
    await drain(store)
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE status = 'completed'") == 6


async def test_the_scheduler_caps_its_sleep_so_a_jumping_wall_clock_is_noticed(registry: Any, store_for: Any) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 15, 12, 0, tzinfo=UTC))
    store = store_for(registry, clock=clock)
    scheduler = Scheduler(store, weekly_only(store), clock=clock, max_sleep=300)
    await scheduler.start()
    assert scheduler.delay() == 300
    clock.now = MONDAY_FIRE - dt.timedelta(seconds=12.5)
    assert scheduler.delay() == 12.5
    assert await scheduler.tick() == []
    clock.now = MONDAY_FIRE
    [result] = await scheduler.tick()
    assert (result.status, result.fire_time, result.runs_created) == ("fired", MONDAY_FIRE, 3)
    assert await scheduler.tick() == []  # handed out once


async def test_two_schedulers_racing_for_one_fire_time_fire_it_once(registry: Any, store_for: Any) -> None:
    clock = FakeClock(MONDAY_FIRE - dt.timedelta(minutes=1))
    a, b = store_for(registry, clock=clock), store_for(registry, clock=clock)
    sa = Scheduler(a, weekly_only(a), clock=clock, owner="a")
    sb = Scheduler(b, weekly_only(b), clock=clock, owner="b")
    await sa.start()
    await sb.start()
    clock.now = MONDAY_FIRE
    results = [r for rs in await asyncio.gather(sa.tick(), sb.tick()) for r in rs]
    assert sorted(r.status for r in results) == ["fired", "lost"]
    assert await count(a, "runs") == 3
    [row] = await fires(a, "digest/weekly")
    assert row["owner"] == next(s.owner for s, r in zip((sa, sb), results, strict=True) if r.status == "fired")


async def history(store: Store, clock: FakeClock, at: dt.datetime) -> None:
    """A scheduler that was up at ``at`` (so the job has fired before)."""
    clock.now = at - dt.timedelta(minutes=5)
    scheduler = Scheduler(store, weekly_only(store), clock=clock)
    await scheduler.start()
    clock.now = at
    assert [r.status for r in await scheduler.tick()] == ["fired"]


async def test_a_missed_fire_within_the_grace_period_runs_once_on_start(registry: Any, store_for: Any) -> None:
    clock = FakeClock()
    store = store_for(registry, clock=clock)
    await history(store, clock, MONDAY_FIRE)
    # Every scheduler was down at the next Monday's fire time; one starts 40 minutes late.
    missed = MONDAY_FIRE + dt.timedelta(days=7)
    clock.now = missed + dt.timedelta(minutes=40)
    [result] = await Scheduler(store, weekly_only(store), clock=clock, grace=3600).start()
    assert (result.status, result.fire_time, result.runs_created) == ("fired", missed, 3)
    # A second process starting later finds it done.
    clock.advance(60)
    assert await Scheduler(store, weekly_only(store), clock=clock, grace=3600).start() == []
    assert [r["status"] for r in await fires(store, "digest/weekly")] == ["fired", "fired"]
    assert await count(store, "runs") == 6


async def test_a_missed_fire_beyond_the_grace_period_is_skipped_and_recorded(registry: Any, store_for: Any) -> None:
    clock = FakeClock()
    store = store_for(registry, clock=clock)
    await history(store, clock, MONDAY_FIRE)
    missed = MONDAY_FIRE + dt.timedelta(days=7)
    clock.now = missed + dt.timedelta(hours=2)
    [result] = await Scheduler(store, weekly_only(store), clock=clock, grace=3600).start()
    assert (result.status, result.fire_time) == ("skipped", missed)
    rows = await fires(store, "digest/weekly")
    assert [r["status"] for r in rows] == ["fired", "skipped"]
    assert rows[1]["runs_created"] == 0 and "7200 s late" in rows[1]["reason"]
    assert "3600 s grace" in rows[1]["reason"]
    assert await count(store, "runs") == 3  # only the first fire's


async def test_a_scheduler_that_wakes_late_skips_what_is_beyond_grace(registry: Any, store_for: Any) -> None:
    clock = FakeClock(MONDAY_FIRE - dt.timedelta(minutes=1))
    store = store_for(registry, clock=clock)
    scheduler = Scheduler(store, weekly_only(store), clock=clock, grace=600)
    await scheduler.start()
    clock.now = MONDAY_FIRE + dt.timedelta(days=14, minutes=20)  # the machine was suspended
    [result] = await scheduler.tick()  # three fire times missed, coalesced into the latest
    assert (result.status, result.fire_time) == ("skipped", MONDAY_FIRE + dt.timedelta(days=14))


async def test_a_new_job_does_not_catch_up_fire_times_from_before_it_existed(registry: Any, store_for: Any) -> None:
    clock = FakeClock(MONDAY_FIRE + dt.timedelta(minutes=10))
    store = store_for(registry, clock=clock)
    assert await Scheduler(store, weekly_only(store), clock=clock, grace=3600).start() == []
    assert await count(store, "job_fires") == 0


async def test_fan_out_of_100000_sends_commits_every_run_with_the_fire(
    registry: Any, store_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_N", "100000")
    store = store_for(registry)
    job = find_job(registry, "digest/fanout")
    result = await fire(store, job, dt.datetime(2026, 11, 16, 3, 0, tzinfo=UTC))
    assert (result.status, result.runs_created, result.tasks) == ("fired", 100_000, 100_000)
    assert await count(store, "runs") == 100_000
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE status = 'pending' AND stage = 'handle'") == 100_000
    assert await scalar(store, "SELECT count(DISTINCT run_id) FROM tasks") == 100_000
    # Creation is recorded on the task itself; the event log starts with what happens next.
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE created_by = 'job:digest/fanout'") == 100_000
    assert await scalar(store, "SELECT count(*) FROM task_events") == 0
    assert await scalar(store, "SELECT max((payload->>'i')::int) FROM tasks") == 99_999
    [row] = await fires(store, "digest/fanout")
    assert (row["status"], row["runs_created"]) == ("fired", 100_000)


async def test_a_job_that_raises_after_sending_commits_no_sends_and_records_the_error(
    registry: Any, store_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FANOUT_N", "100000")
    monkeypatch.setenv("FANOUT_RAISE", "1")
    store = store_for(registry)
    result = await fire(store, find_job(registry, "digest/fanout"), dt.datetime(2026, 11, 16, 3, 0, tzinfo=UTC))
    assert result.status == "failed" and result.runs_created == 0
    assert await count(store, "runs") == 0 and await count(store, "tasks") == 0
    [row] = await fires(store, "digest/fanout")
    assert row["status"] == "failed" and row["runs_created"] == 0
    assert row["error"].startswith("RuntimeError: the source went away after sending")
    assert "Traceback" in row["error"]


async def test_a_send_that_cannot_start_fails_the_job_and_undoes_its_other_sends(registry: Any, store_for: Any) -> None:
    store = store_for(registry)
    result = await fire(store, find_job(registry, "broken"), dt.datetime(2026, 11, 30, 22, 30, tzinfo=UTC))
    assert result.status == "failed" and "does not exist" in (result.error or "")
    assert await count(store, "runs") == 0 and await count(store, "tasks") == 0
    [row] = await fires(store, "digest/broken")
    assert row["status"] == "failed"


async def test_unrouted_sends_are_recorded_on_the_fire(registry: Any, store_for: Any) -> None:
    store = store_for(registry)
    result = await fire(store, find_job(registry, "stray"), dt.datetime(2026, 11, 16, 3, 0, tzinfo=UTC))
    assert (result.status, result.runs_created) == ("fired", 1)
    [row] = await fires(store, "digest/stray")
    assert [u["type"] for u in row["unrouted"]] == ["nobody-routes-this"]


async def test_a_manual_fire_takes_the_same_path_and_is_marked_manual(registry: Any, store_for: Any) -> None:
    clock = FakeClock(dt.datetime(2026, 11, 18, 15, 30, 5, tzinfo=UTC))
    store = store_for(registry, clock=clock)
    result = await fire(store, find_job(registry, "weekly"), clock(), manual=True)
    assert (result.status, result.runs_created) == ("fired", 3)
    [row] = await fires(store, "digest/weekly")
    assert row["manual"] is True and row["fire_time"] == clock()
    runs = await store.db.fetch_all(ALL_RUNS, {"workflow": "digest", "status": None, "limit": 10, **ADMIN})
    assert {r["trigger"]["manual"] for r in runs} == {True}


def test_job_names_resolve_by_key_stage_or_workflow_and_unknown_ones_say_which_exist(registry: Any) -> None:
    assert find_job(registry, "digest/weekly").key == "digest/weekly"
    assert find_job(registry, "fanout").key == "digest/fanout"
    with pytest.raises(UnknownJob, match=r'no job named "nope" \(jobs: digest/weekly, digest/fanout'):
        find_job(registry, "nope")
    with pytest.raises(UnknownJob, match="matches several jobs"):
        find_job(registry, "digest")


@pytest.mark.parametrize(
    ("schedule", "timezone", "message"),
    [
        ("0 25 * * *", "UTC", 'job "nightly": invalid schedule "0 25 \\* \\* \\*": hour 25 out of range'),
        ("fortnightly", "UTC", 'job "nightly": invalid schedule "fortnightly"'),
        ("daily at 09:00", "Mars/Olympus", 'job "nightly": unknown timezone "Mars/Olympus"'),
    ],
)
def test_an_invalid_schedule_fails_to_load_with_file_and_line(
    make_stages: Any, schedule: str, timezone: str, message: str
) -> None:
    with pytest.raises(WorkflowLoadError) as info:
        make_stages({
            "bad/workflow.py": f"""
                from engine import Workflow
                workflow = Workflow("bad")
                nightly = workflow.job("nightly", schedule="{schedule}", timezone="{timezone}")
            """,
            "bad/nightly.py": "def run(ctx):\n    pass\n",
        })
    [error] = info.value.errors
    assert error.line == 3 and error.file is not None and error.file.endswith("workflow.py")
    assert re.search(message, error.message), error.message


# -- the weekly report example (stages/weekly_report) ----------------------------------------------
# A week of runs is made with the fake clock (some completed, one failed, a slow step, one run from
# the week before that must not count); the job fires at Monday 09:00 UTC; its message goes to the
# outbox and, through the Slack app's own outbox handler, to a fake Slack Web API.

REPORT_FIRE = dt.datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # a Monday

ORDERS = {
    "orders/workflow.py": """
        from engine import Workflow
        workflow = Workflow("orders")
        take = workflow.script("take", max_attempts=1)
        ship = workflow.script("ship")
        workflow.transition(take, ship, on="ship")
    """,
    "orders/take.py": """
        def run(task, ctx):
            if task.get("bad"):
                raise ValueError("no such customer")
            ctx.send("ship", {})
    """,
    "orders/ship.py": """
        def run(task, ctx):
            pass
    """,
}


def stages_with_report(tmp_path: Path) -> Path:
    root = write_stages(tmp_path / "stages", ORDERS)
    shutil.copytree(ROOT / "stages" / "weekly_report", root / "weekly_report",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root


async def step(store: Store, clock: FakeClock, seconds: float) -> None:
    """Claim what is due, let ``seconds`` pass while it runs, commit."""
    rows = await store.claim("w", 100)
    clock.advance(seconds)
    results = [await run_script(store.stage_of(r), r, max_payload_bytes=65536) for r in rows]
    await store.commit("w", [r for r in results if isinstance(r, Finished)],
                       [r for r in results if isinstance(r, Failed)])


async def a_week_of_orders(store: Store, clock: FakeClock) -> None:
    take = store.registry.get("orders").stage("take")
    clock.now = REPORT_FIRE - dt.timedelta(days=9)  # the week before: not in the report
    await store.start_run(take, {})
    await step(store, clock, 1)
    await step(store, clock, 1)
    clock.now = REPORT_FIRE - dt.timedelta(days=3)
    for payload in ({}, {}, {"bad": True}):
        await store.start_run(take, payload)
    await step(store, clock, 2)     # take x3: 2 sent "ship", one failed for good
    await step(store, clock, 42.5)  # ship x2: the slow step


async def test_the_weekly_report_counts_last_weeks_runs_and_lists_the_slowest_steps(
    db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWBOT_REPORT_CHANNEL", "#weekly-ops")
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    clock = FakeClock()
    registry = load_workflows(stages_with_report(tmp_path))
    store = Store(db, registry, clock=clock)
    await a_week_of_orders(store, clock)
    clock.now = REPORT_FIRE + dt.timedelta(seconds=3)

    result = await fire(store, find_job(registry, "weekly-report"), REPORT_FIRE)

    assert (result.status, result.runs_created) == ("fired", 0)
    [effect] = [dict(r) for r in await store.db.fetch_all(
        text("SELECT kind, payload, task_id, status FROM outbox"))]
    assert (effect["kind"], effect["status"], effect["task_id"]) == ("slack.post", "pending", None)
    message = effect["payload"]
    assert message["channel"] == "#weekly-ops"
    assert message["text"] == "Weekly flowbot report: 3 runs in 1 workflow, 1 failed (09 Nov to 16 Nov 2026)"
    blocks = message["blocks"]
    assert_valid_blocks(blocks)
    texts = [b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b]
    assert "*orders*  3 runs: :white_check_mark: 2 completed · :x: 1 failed" in texts
    assert [f["text"] for f in blocks[2]["fields"]] == ["*Runs*\n3", "*Failed*\n1", "*Workflows*\n1"]
    slow = texts[texts.index("*Slowest steps*") + 1].splitlines()
    assert slow[0] == "1. *orders* / `ship`: max 42.5 s, avg 42.5 s over 2 tasks"
    assert slow[1] == "2. *orders* / `take`: max 2.0 s, avg 2.0 s over 2 tasks"
    assert blocks[1]["elements"][0]["text"] == "Mon 09 Nov 2026 09:00 to Mon 16 Nov 2026 09:00 UTC"
    [row] = await store.db.fetch_all(text("SELECT log FROM job_fires"))
    assert row["log"][0]["message"] == ("weekly report for 2026-11-09 to 2026-11-16 queued for #weekly-ops until "
                                        "Slack is on (SLACK_BOT_TOKEN is not set): 3 run(s)")

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    await fire(store, find_job(registry, "weekly-report"), REPORT_FIRE + dt.timedelta(days=7))
    [_, later] = await store.db.fetch_all(text("SELECT log FROM job_fires ORDER BY fire_time"))
    assert later["log"][0]["message"].startswith("weekly report for 2026-11-16 to 2026-11-23 sent to #weekly-ops:")


async def test_the_weekly_report_of_a_quiet_week_says_so(db: Any, tmp_path: Path) -> None:
    registry = load_workflows(stages_with_report(tmp_path))
    store = Store(db, registry, clock=FakeClock(REPORT_FIRE))
    await fire(store, find_job(registry, "weekly-report"), REPORT_FIRE)
    payload = await scalar(store, "SELECT payload FROM outbox")
    assert payload["channel"] == "#ops"
    assert_valid_blocks(payload["blocks"])
    texts = [b["text"]["text"] for b in payload["blocks"] if b["type"] == "section" and "text" in b]
    assert "_No runs this week._" in texts and "_No steps finished this week._" in texts


async def test_the_weekly_report_is_delivered_to_slack_by_the_outbox(database_url: str, tmp_path: Path) -> None:
    async with FakeSlack() as slack:
        settings = Settings(database_url=database_url, stages_dir=stages_with_report(tmp_path), home=tmp_path,
                            slack_bot_token="xoxb-test", slack_signing_secret="s3cret", slack_api_url=slack.url)
        async with open_app(settings) as app:
            result = await fire(app.store, find_job(app.registry, "weekly-report"), REPORT_FIRE)
            assert result.status == "fired"
            assert "slack.post" in app.outbox_handlers
            dispatcher = OutboxDispatcher(app.db, app.outbox_handlers, clock=app.store.clock)
            assert await dispatcher.deliver_due() == 1
            assert await scalar(app.store, "SELECT status FROM outbox") == "delivered"
        [call] = slack.calls("chat.postMessage")
        assert call.params["channel"] == "#ops"
        assert call.params["text"].startswith("Weekly flowbot report: 0 runs")
        assert call.params["blocks"][0]["text"]["text"] == "Weekly flowbot report"
