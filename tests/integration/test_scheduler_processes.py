"""Several scheduler processes against one database fire each job once; the job commands.

Real processes: python subprocesses running the scheduler (with a clock shifted so that a weekly
fire time comes due two seconds after they start), `flowbot run` and `flowbot scheduler`, and the
`flowbot jobs` commands.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text
from support import ROOT, cli_env, eventually, flowbot, spawn, stop, write_stages

from engine.store.db import Database
from engine.triggers.schedules import parse_schedule

UTC = dt.UTC

WEEKLY = {
    "digest/workflow.py": """
        from engine import Workflow
        workflow = Workflow("digest")
        weekly = workflow.job("weekly", schedule="0 9 * * MON", timezone="America/Sao_Paulo")
        handle = workflow.script("handle")
        workflow.transition(weekly, handle, on="item")
    """,
    "digest/weekly.py": """
        def run(ctx):
            for n in range(3):
                ctx.send("item", {"n": n, "fire_time": ctx.fire_time.isoformat()})
    """,
    "digest/handle.py": """
        def run(task, ctx):
            ctx.run["handled"] = task["n"]
    """,
}

# The scheduler in a child process. Once its imports are done it says "ready" and reads from stdin
# the real-time epoch at which the fire time (argv[3]) must come due; its clock is shifted to
# match. It runs until two seconds after that, logging what it fired or lost.
CHILD = textwrap.dedent("""
    import asyncio, datetime as dt, logging, sys, time
    from pathlib import Path
    from engine.store.db import Database
    from engine.triggers.jobs.scheduler import Scheduler
    from engine.loader import load_workflows
    from engine.store.tasks import Store

    url, stages, fire_time, owner = sys.argv[1:5]
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(message)s")
    registry = load_workflows(Path(stages))
    print("ready", flush=True)
    due_at = float(sys.stdin.readline())
    shift = dt.datetime.fromisoformat(fire_time) - dt.datetime.fromtimestamp(due_at, dt.UTC)

    def clock():
        return dt.datetime.now(dt.UTC) + shift

    async def main():
        db = Database(url, pool_size=2)
        store = Store(db, registry, clock=clock)
        stop = asyncio.Event()
        print("started at", clock().isoformat(), flush=True)
        task = asyncio.create_task(Scheduler(store, clock=clock, owner=owner).run(stop))
        await asyncio.sleep(due_at + 2.0 - time.time())
        stop.set()
        await task
        await db.close()

    asyncio.run(main())
""")


def run_children(url: str, stages: Path, fire_time: dt.datetime) -> tuple[list[int], list[str]]:
    """Three scheduler processes; once all are ready, ``fire_time`` comes due for all of them 1.5 s
    later (real time). Their exit codes and output."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(stages), fire_time.isoformat(), f"sched-{i}"],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(3)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line.strip() == "ready", line + p.stdout.read()
        due_at = time.time() + 1.5
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{due_at}\n")
            p.stdin.close()
        outputs = [p.stdout.read() for p in procs if p.stdout is not None]
        for p in procs:
            p.wait(timeout=40)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
    return [p.returncode for p in procs], outputs


async def rows(db: Database, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with db.transaction() as tx:
        return [dict(r) for r in await tx.fetch_all(text(sql), params)]


async def test_three_scheduler_processes_fire_a_due_weekly_job_exactly_once(
    db: Database, raw_url: str, tmp_path: Path
) -> None:
    stages = write_stages(tmp_path / "stages", WEEKLY)
    fire_time = dt.datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # Monday 09:00 in Sao Paulo
    codes, outputs = await asyncio.to_thread(run_children, raw_url, stages, fire_time)
    assert codes == [0, 0, 0], outputs
    # Every process was up before the fire time, and each one tried it: one won, two lost.
    for out in outputs:
        started = dt.datetime.fromisoformat(out.split("started at ", 1)[1].split()[0])
        assert started < fire_time, out
    assert sum("fired: 3 run(s) started" in o for o in outputs) == 1, outputs
    assert sum("already fired by another process" in o for o in outputs) == 2, outputs
    fires = await rows(db, "SELECT job, fire_time, status, owner, runs_created FROM job_fires")
    assert len(fires) == 1
    assert (fires[0]["fire_time"], fires[0]["status"], fires[0]["runs_created"]) == (fire_time, "fired", 3)
    winner = next(i for i, o in enumerate(outputs) if "fired: 3 run(s)" in o)
    assert fires[0]["owner"] == f"sched-{winner}"
    runs = await rows(db, "SELECT count(*) AS n FROM runs")
    assert runs[0]["n"] == 3


def read_logs(tmp_path: Path) -> str:
    return "\n".join((tmp_path / f"p{i}.log").read_text() for i in range(3))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_three_flowbot_processes_catch_up_a_missed_fire_once_and_record_one_skip(
    db: Database, raw_url: str, tmp_path: Path
) -> None:
    """Two `flowbot run` and one `flowbot scheduler` start after their jobs' fire times: the one
    40 minutes late (grace 1 h) runs once, the one 3 hours late is recorded as skipped once."""
    now = dt.datetime.now(UTC).replace(second=0, microsecond=0)
    recent, old = now - dt.timedelta(minutes=40), now - dt.timedelta(hours=3)
    cron = {name: f"{t.minute} {t.hour} * * {(t.weekday() + 1) % 7}" for name, t in (("recent", recent), ("old", old))}
    files = dict(WEEKLY)
    files["digest/workflow.py"] = f"""
        from engine import Workflow
        workflow = Workflow("digest")
        weekly = workflow.job("weekly", schedule="{cron['recent']}")
        stale = workflow.job("stale", schedule="{cron['old']}", module="weekly")
        handle = workflow.script("handle")
        workflow.transition(weekly, handle, on="item")
        workflow.transition(stale, handle, on="item")
    """
    stages = write_stages(tmp_path / "stages", files)
    for job, spec, t in (("digest/weekly", cron["recent"], recent), ("digest/stale", cron["old"], old)):
        assert parse_schedule(spec).latest_fire_time(now) == t
        # Both jobs fired the week before (a scheduler was up then): they have a history.
        await rows(db, "INSERT INTO job_fires (job, fire_time, status) VALUES (:job, :t, 'fired') RETURNING id",
                   job=job, t=t - dt.timedelta(days=7))
    env = cli_env(raw_url, stages, FLOWBOT_JOB_MISFIRE_GRACE="3600", FLOWBOT_LOG_LEVEL="INFO",
                  FLOWBOT_API_TOKEN="t")
    procs = []
    for i, args in enumerate([("run", "--port", str(free_port())), ("run", "--port", str(free_port())),
                              ("scheduler",)]):
        procs.append(spawn(*args, env={**env, "FLOWBOT_HOME": str(tmp_path / f"home{i}")},
                           log=tmp_path / f"p{i}.log"))
    try:
        async def settled() -> list[dict[str, Any]]:
            done = await rows(db, "SELECT job, status FROM job_fires WHERE fire_time > :t AND finished_at IS NOT NULL",
                              t=now - dt.timedelta(days=1))
            handled = await rows(db, "SELECT count(*) AS n FROM tasks WHERE status = 'completed'")
            return done if len(done) == 2 and handled[0]["n"] == 3 else []

        async def all_started() -> bool:
            # Every process finished its start-up catch-up (logged after it) and none died.
            assert all(p.poll() is None for p in procs), read_logs(tmp_path)
            return all("misfire grace" in (tmp_path / f"p{i}.log").read_text() for i in range(3))

        await eventually(settled, timeout=30, what="the catch-up fire and its runs")
        await eventually(all_started, timeout=30, what="three schedulers started")
        await asyncio.sleep(0.5)
    finally:
        codes = [stop(p) for p in procs]
    logs = read_logs(tmp_path)
    assert codes == [0, 0, 0], logs
    fires = await rows(db, "SELECT job, fire_time, status, reason, runs_created FROM job_fires "
                           "WHERE fire_time > :t ORDER BY job", t=now - dt.timedelta(days=1))
    assert [(f["job"], f["fire_time"], f["status"], f["runs_created"]) for f in fires] == [
        ("digest/stale", old, "skipped", 0),
        ("digest/weekly", recent, "fired", 3),
    ]
    assert "beyond the 3600 s grace period" in fires[0]["reason"]
    runs = await rows(db, "SELECT status, count(*) AS n FROM runs GROUP BY status")
    assert runs == [{"status": "completed", "n": 3}]  # the workers of `flowbot run` ran them
    assert logs.count("fired: 3 run(s) started") == 1, logs


# -- the job commands --------------------------------------------------------------------------


def test_flowbot_jobs_lists_next_fire_times_in_the_jobs_zone_local_and_utc(raw_url: str, tmp_path: Path) -> None:
    stages = write_stages(tmp_path / "stages", WEEKLY)
    env = cli_env(raw_url, stages, TZ="Asia/Tokyo")
    done = flowbot("jobs", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["job", "describe", "next_local", "next_utc", "last"]
    assert lines[1].startswith("digest/weekly  weekly on Monday at 09:00 America/Sao_Paulo")
    assert lines[1].rstrip().endswith("never")
    done = flowbot("jobs", "--json", env=env)
    [row] = json.loads(done.stdout)
    nxt = dt.datetime.fromisoformat(row["next_fire_time"])
    assert nxt > dt.datetime.now(UTC) and nxt.weekday() == 0 and (nxt.hour, nxt.minute) == (12, 0)
    assert row["next_utc"] == nxt.strftime("%Y-%m-%d %H:%M UTC")
    assert row["next_local"] == f"{nxt.strftime('%Y-%m-%d')} 21:00 JST"  # this machine's zone (TZ)
    assert row["next_in_job_timezone"] == f"{nxt.strftime('%Y-%m-%d')} 09:00 -03"
    assert row["last_status"] is None


async def test_flowbot_jobs_run_fires_a_job_now_through_the_same_path(
    db: Database, raw_url: str, tmp_path: Path
) -> None:
    stages = write_stages(tmp_path / "stages", WEEKLY)
    env = cli_env(raw_url, stages)
    before = dt.datetime.now(UTC)
    done = flowbot("jobs", "run", "digest/weekly", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("digest/weekly: fired at ") and "3 run(s) started, 3 task(s)" in done.stdout
    [fire] = await rows(db, "SELECT fire_time, manual, status, runs_created FROM job_fires")
    assert fire["manual"] is True and fire["status"] == "fired" and fire["runs_created"] == 3
    assert before <= fire["fire_time"] <= dt.datetime.now(UTC)
    payloads = await rows(db, "SELECT payload FROM tasks ORDER BY id")
    assert [p["payload"]["n"] for p in payloads] == [0, 1, 2]
    assert {p["payload"]["fire_time"] for p in payloads} == {fire["fire_time"].isoformat()}
    listed = flowbot("jobs", env=env)
    assert f"fired {fire['fire_time'].isoformat()}" in listed.stdout
    # Fired by hand: an action of the local admin, in the audit trail.
    [entry] = await rows(db, "SELECT actor, action, edge, acting_as FROM audit")
    assert entry["actor"].startswith("local:") and (entry["action"], entry["edge"], entry["acting_as"]) == (
        "job.fire", "cli", "admin")


async def test_flowbot_jobs_run_with_an_unknown_name_says_which_jobs_exist_and_creates_nothing(
    db: Database, raw_url: str, tmp_path: Path
) -> None:
    stages = write_stages(tmp_path / "stages", WEEKLY)
    env = cli_env(raw_url, stages)
    done = flowbot("jobs", "run", "nightly", env=env)
    assert done.returncode == 1
    assert 'no job named "nightly" (jobs: digest/weekly)' in done.stderr
    missing = flowbot("jobs", "run", env=env)
    assert missing.returncode == 1 and "usage: flowbot jobs run NAME" in missing.stderr
    assert (await rows(db, "SELECT count(*) AS n FROM job_fires"))[0]["n"] == 0
    assert (await rows(db, "SELECT count(*) AS n FROM runs"))[0]["n"] == 0


async def test_flowbot_jobs_run_of_a_failing_job_exits_non_zero_and_records_the_error(
    db: Database, raw_url: str, tmp_path: Path
) -> None:
    files = dict(WEEKLY)
    files["digest/weekly.py"] = """
        def run(ctx):
            ctx.send("item", {"n": 1})
            raise ValueError("upstream said no")
    """
    stages = write_stages(tmp_path / "stages", files)
    done = flowbot("jobs", "run", "weekly", env=cli_env(raw_url, stages))
    assert done.returncode == 1
    assert "digest/weekly: failed, nothing was sent" in done.stderr and "ValueError: upstream said no" in done.stderr
    [fire] = await rows(db, "SELECT status, error FROM job_fires")
    assert fire["status"] == "failed" and fire["error"].startswith("ValueError: upstream said no")
    assert (await rows(db, "SELECT count(*) AS n FROM runs"))[0]["n"] == 0
