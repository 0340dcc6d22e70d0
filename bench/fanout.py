"""Fan-out rate: tasks per second inserted by one job run sending 100,000 tasks.

    python bench/fanout.py [--tasks 100000] [--repeat 3]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE) and creates a fresh migrated database. Then, ``--repeat`` times each:

a) flowbot: ``engine.triggers.jobs.firing.fire`` of a job whose ``run(ctx)`` calls ``ctx.send`` ``--tasks``
   times; every send starts its own run with one pending script task (and its "created" event),
   all committed in one transaction with the job_fires row. Timed from the fire to the commit,
   so it includes the job's own Python (payload checks) as well as the inserts.
b) baseline: raw asyncpg in one transaction, ``COPY`` of the same rows (runs, tasks, task events)
   built in Python beforehand (not timed): the floor for getting those rows into Postgres.

Tables are emptied between rounds; the best round of each is reported, then the ratio. Target:
flowbot above 50,000 tasks/s. ``main()`` is also called at the end of ``bench/hooks.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import common  # bench/common.py (puts the repository root on sys.path)
from common import out

from engine.cli.main import run_async
from engine.loader import load_workflows
from engine.store import migrate
from engine.store.db import Database
from engine.store.tasks import Store
from engine.triggers.jobs.firing import find_job, fire

STAGES = {
    "fanout/__init__.py": "",
    "fanout/workflow.py": """
        from engine import Workflow

        workflow = Workflow("fanout")
        emit = workflow.job("emit", schedule="daily at 03:00")
        process = workflow.script("process")
        workflow.transition(emit, process, on="record")
    """,
    "fanout/emit.py": """
        import os

        def run(ctx):
            for i in range(int(os.environ["FANOUT_BENCH_TASKS"])):
                ctx.send("record", {"record_id": i, "source": "bench"})
    """,
    "fanout/process.py": """
        def run(task, ctx):
            pass
    """,
}

TARGET = 50_000
DATABASE = "flowbot_bench_fanout"


@contextlib.contextmanager
def server(url: str | None = None) -> Iterator[str]:
    """The Postgres server to use: ``url`` (a running one, from ``bench/hooks.py``), else
    ``common.pg_server()``."""
    if url:
        yield url
        return
    with common.pg_server() as started:
        yield started.url


async def fresh_database(url: str) -> str:
    """A new, migrated database on the server; its libpq URL."""
    db_url = await common.fresh_database(url, DATABASE)
    await migrate.upgrade(db_url)
    return db_url


async def empty(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("TRUNCATE runs, tasks, task_events, job_fires, outbox CASCADE")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def bench_flowbot(db_url: str, stages: Path, n: int) -> float:
    """Seconds for one job fire of ``n`` sends, to its commit."""
    os.environ["FANOUT_BENCH_TASKS"] = str(n)
    registry = load_workflows(stages)
    db = Database(db_url, pool_size=2)
    try:
        store = Store(db, registry)
        job = find_job(registry, "fanout/emit")
        started = time.perf_counter()
        result = await fire(store, job, dt.datetime.now(dt.UTC))
        elapsed = time.perf_counter() - started
        if (result.status, result.runs_created, result.tasks) != ("fired", n, n):
            raise SystemExit(f"the job did not fan out: {result}")
        return elapsed
    finally:
        await db.close()


async def bench_baseline(db_url: str, n: int) -> float:
    """Seconds for raw asyncpg COPY of the same runs and tasks, in one transaction."""
    now = dt.datetime.now(dt.UTC)
    trigger = json.dumps({"kind": "job", "job": "fanout/emit", "fire_time": now.isoformat()})
    run_ids = [uuid.uuid4() for _ in range(n)]
    runs = [(rid, "fanout", trigger, "{}", "running", now, now) for rid in run_ids]
    conn = await asyncpg.connect(db_url)
    try:
        first = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('tasks', 'id'))")
        ids = range(first + 1, first + 1 + n)
        tasks = [(tid, rid, "fanout", "process", "script", "record",
                  json.dumps({"record_id": i, "source": "bench"}), "pending", 3, 30, now, now, "job:fanout/emit")
                 for i, (tid, rid) in enumerate(zip(ids, run_ids, strict=True))]
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "runs", records=runs,
                columns=["id", "workflow", "trigger", "context", "status", "created_at", "updated_at"])
            await conn.copy_records_to_table(
                "tasks", records=tasks,
                columns=["id", "run_id", "workflow", "stage", "kind", "type", "payload", "status",
                         "max_attempts", "lease_seconds", "available_at", "created_at", "created_by"])
        elapsed = time.perf_counter() - started
        await conn.execute("SELECT setval(pg_get_serial_sequence('tasks', 'id'), $1)", first + n)
        return elapsed
    finally:
        await conn.close()


async def run(url: str, tasks: int, repeat: int) -> dict[str, float]:
    """Both contenders, ``repeat`` rounds each, on a fresh database; returns the best rates."""
    db_url = await fresh_database(url)
    with tempfile.TemporaryDirectory(prefix="fbfan-stages-") as tmp:
        stages = Path(tmp)
        for rel, source in STAGES.items():
            (stages / rel).parent.mkdir(parents=True, exist_ok=True)
            (stages / rel).write_text(textwrap.dedent(source).lstrip())
        fb: list[float] = []
        raw: list[float] = []
        for i in range(repeat):
            await empty(db_url)
            fb.append(await bench_flowbot(db_url, stages, tasks))
            await empty(db_url)
            raw.append(await bench_baseline(db_url, tasks))
            out(f"  round {i + 1}: flowbot {tasks / fb[-1]:,.0f} tasks/s ({fb[-1]:.2f} s), "
                f"raw COPY {tasks / raw[-1]:,.0f} tasks/s ({raw[-1]:.2f} s)")
    await empty(db_url)
    return {"flowbot": tasks / min(fb), "raw": tasks / min(raw)}


def main(argv: list[str] | None = None, *, url: str | None = None) -> dict[str, float]:
    """Run the benchmark and print its figures; ``url`` reuses a running Postgres server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000, help="sends of the one job run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out(f"fan-out: one job run sending {args.tasks:,} tasks (each starts its own run), best of {args.repeat}")
    with server(url) as server_url:
        rates = run_async(run(server_url, args.tasks, args.repeat))  # the loop flowbot runs on
    verdict = "meets" if rates["flowbot"] > TARGET else "BELOW"
    out(f"flowbot job fan-out: {rates['flowbot']:,.0f} tasks/s ({verdict} the {TARGET:,}/s target)")
    out(f"raw asyncpg COPY of the same rows: {rates['raw']:,.0f} tasks/s")
    out(f"flowbot/raw = {rates['flowbot'] / rates['raw']:.2f}")
    return rates


if __name__ == "__main__":
    main()
