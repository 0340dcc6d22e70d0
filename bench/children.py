"""Child runs from a job: ``ctx.start`` of 100,000 runs of another workflow, against the same job's
plain fan-out (``ctx.send``, each send starting a run of its own workflow) as the baseline.

    python bench/children.py [--tasks 100000] [--repeat 3]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE) and creates a fresh migrated database. Each round fires, through
``engine.triggers.jobs.firing.fire`` (one transaction with the job_fires row):

a) baseline: a job whose ``run(ctx)`` calls ``ctx.send("record", ...)`` ``--tasks`` times; every
   send starts a run of the job's workflow with one pending script task (bench/fanout.py's job);
b) children: the same job body with ``ctx.start("processor", ...)``: every call starts a run of
   the ``processor`` workflow at its start stage, with one pending script task.

Both are timed from the fire to its commit (the job's own Python included). Tables are emptied
between rounds, the two alternate, and the best and median rounds of each are reported with
their ratios.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import tempfile
import textwrap
import time
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
    "emitter/workflow.py": """
        from engine import Workflow

        workflow = Workflow("emitter")
        sends = workflow.job("sends", schedule="daily at 03:00")
        starts = workflow.job("starts", schedule="daily at 04:00")
        process = workflow.script("process")
        workflow.transition(sends, process, on="record")
    """,
    "emitter/sends.py": """
        import os

        def run(ctx):
            for i in range(int(os.environ["CHILDREN_BENCH_TASKS"])):
                ctx.send("record", {"record_id": i, "source": "bench"})
    """,
    "emitter/starts.py": """
        import os

        def run(ctx):
            for i in range(int(os.environ["CHILDREN_BENCH_TASKS"])):
                ctx.start("processor", {"record_id": i, "source": "bench"})
    """,
    "emitter/process.py": "def run(task, ctx):\n    pass\n",
    "processor/workflow.py": """
        from engine import Workflow

        workflow = Workflow("processor")
        handle = workflow.script("handle")
    """,
    "processor/handle.py": "def run(task, ctx):\n    pass\n",
}

DATABASE = "flowbot_bench_children"


async def empty(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("TRUNCATE runs, tasks, task_events, job_fires, outbox CASCADE")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def fire_job(db_url: str, stages: Path, job_name: str, n: int, workflow: str) -> float:
    """Seconds for one fire of ``job_name`` starting ``n`` runs of ``workflow``."""
    os.environ["CHILDREN_BENCH_TASKS"] = str(n)
    registry = load_workflows(stages)
    db = Database(db_url, pool_size=2)
    try:
        store = Store(db, registry)
        started = time.perf_counter()
        result = await fire(store, find_job(registry, job_name), dt.datetime.now(dt.UTC))
        elapsed = time.perf_counter() - started
        if (result.status, result.runs_created, result.tasks) != ("fired", n, n):
            raise SystemExit(f"{job_name} did not fan out: {result}")
        conn = await asyncpg.connect(db_url)
        try:
            runs = await conn.fetchval("SELECT count(*) FROM runs WHERE workflow = $1", workflow)
        finally:
            await conn.close()
        if runs != n:
            raise SystemExit(f"{job_name}: {runs} runs of {workflow}, expected {n}")
        return elapsed
    finally:
        await db.close()


async def run(url: str, tasks: int, repeat: int) -> None:
    db_url = await common.fresh_database(url, DATABASE)
    await migrate.upgrade(db_url)
    sends: list[float] = []
    starts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="fbchildren-") as tmp:
        stages = Path(tmp)
        for rel, source in STAGES.items():
            (stages / rel).parent.mkdir(parents=True, exist_ok=True)
            (stages / rel).write_text(textwrap.dedent(source).lstrip())
        for i in range(repeat):
            await empty(db_url)
            sends.append(await fire_job(db_url, stages, "emitter/sends", tasks, "emitter"))
            await empty(db_url)
            starts.append(await fire_job(db_url, stages, "emitter/starts", tasks, "processor"))
            out(f"  round {i + 1}: ctx.send fan-out {tasks / sends[-1]:,.0f} runs/s ({sends[-1]:.2f} s), "
                f"ctx.start children {tasks / starts[-1]:,.0f} runs/s ({starts[-1]:.2f} s)")
    await empty(db_url)
    best_send, best_start = tasks / min(sends), tasks / min(starts)
    med_send, med_start = tasks / statistics.median(sends), tasks / statistics.median(starts)
    out(f"job fan-out with ctx.send (baseline): {best_send:,.0f} runs/s best, {med_send:,.0f} median of {repeat}")
    out(f"job fan-out with ctx.start (child runs of another workflow): {best_start:,.0f} runs/s best, "
        f"{med_start:,.0f} median of {repeat}")
    out(f"start/send = {best_start / best_send:.2f} (best), {med_start / med_send:.2f} (median)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out(f"children: one job starting {args.tasks:,} runs, ctx.send vs ctx.start, best of {args.repeat}")
    with common.pg_server() as server:
        run_async(run(server.url, args.tasks, args.repeat))


if __name__ == "__main__":
    main()
