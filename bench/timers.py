"""Claiming ready tasks with a million timed tasks waiting: does the claim slow down?

    python bench/timers.py [--ready 20000] [--scheduled 1000000] [--repeat 3]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE) and creates a fresh migrated database. Then, in the same run:

a) baseline: a database with ``--ready`` due script tasks and no timed ones; ``Store.claim`` takes
   them 500 at a time until none is left (the worker's claim statement, with its lease, events and
   run join), then 500 claims of one task each (latency, each with its commit), and 500 runs of
   the one-task claim statement in a transaction rolled back (the statement alone: no fsync);
b) the same on a second database of the same server that also holds ``--scheduled`` timed tasks
   (due in 1 to 30 days, as ``ctx.send(delay=...)`` leaves them), loaded by COPY and analysed
   before the rounds.

Rounds alternate a, b, a, b... (``--repeat`` each, the ready tasks inserted anew before each), so
what else the machine does weighs on both alike; the medians are compared.

A timed task is an ordinary pending task whose ``available_at`` is in the future, and the claim
reads the partial index on (available_at, id) from its start, stopping at the first one not yet
due: the timed tasks lie past the ready ones in that index and are never visited. The script also
prints the claim's plan with the timed tasks present, and the time of the workers' next-timer
query (``wait_queries.NEXT_TIMER``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import statistics
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import asyncpg
import common  # bench/common.py (puts the repository root on sys.path)
from common import out

from engine.cli.main import run_async
from engine.loader import load_workflows
from engine.store import migrate, queries, waits
from engine.store.db import Database, compiled
from engine.store.tasks import Store

STAGES = {
    "timers/workflow.py": """
        from engine import Workflow

        workflow = Workflow("timers")
        work = workflow.script("work")
    """,
    "timers/work.py": "def run(task, ctx):\n    pass\n",
}

DATABASE = "flowbot_bench_timers"
BATCH = 500
SINGLE = 500


async def insert_tasks(conn: asyncpg.Connection, n: int, *, future: bool) -> None:
    """``n`` pending script tasks (due now, or 1-30 days ahead) across 100 runs, by COPY."""
    now = dt.datetime.now(dt.UTC)
    run_ids = [uuid.uuid4() for _ in range(100)]
    await conn.copy_records_to_table(
        "runs", records=[(r, "timers", "{}", "{}", "running", now, now) for r in run_ids],
        columns=["id", "workflow", "trigger", "context", "status", "created_at", "updated_at"])
    payload = json.dumps({"n": 1})

    def due(i: int) -> dt.datetime:
        return now + dt.timedelta(days=1 + (i % 30), seconds=i % 86400) if future else now - dt.timedelta(seconds=1)

    step = 200_000
    for start in range(0, n, step):
        records = [(run_ids[i % 100], "timers", "work", "script", "later" if future else "ready", payload,
                    "pending", 3, 30, due(i), now, "engine") for i in range(start, min(n, start + step))]
        await conn.copy_records_to_table(
            "tasks", records=records,
            columns=["run_id", "workflow", "stage", "kind", "type", "payload", "status", "max_attempts",
                     "lease_seconds", "available_at", "created_at", "created_by"])


async def claim_round(store: Store, conn: asyncpg.Connection, ready: int) -> tuple[float, float, float]:
    """(ready tasks claimed per second in batches of 500, median ms of a one-task claim, median ms of
    the one-task claim statement alone: run in a transaction rolled back, so no commit's fsync)."""
    await conn.execute("DELETE FROM tasks WHERE type = 'ready'")
    await insert_tasks(conn, ready + SINGLE, future=False)  # the rolled-back claims leave theirs ready
    await conn.execute("VACUUM ANALYZE tasks")
    sql, names = compiled(queries.CLAIM_TASKS, store.db.engine.dialect)
    params = {"worker": "bench", "limit": 1, "workflows": None}
    statements = []
    tx = conn.transaction()
    await tx.start()
    try:
        for _ in range(SINGLE):
            params["now"] = dt.datetime.now(dt.UTC)
            t0 = time.perf_counter()
            rows = await conn.fetch(sql, *[params[n] for n in names])
            statements.append(time.perf_counter() - t0)
            assert len(rows) == 1
    finally:
        await tx.rollback()
    claimed = 0
    started = time.perf_counter()
    while claimed < ready:
        rows = await store.claim("bench", min(BATCH, ready - claimed))
        if not rows:
            raise SystemExit("ran out of ready tasks")
        claimed += len(rows)
    rate = claimed / (time.perf_counter() - started)
    singles = []
    for _ in range(SINGLE):
        t0 = time.perf_counter()
        rows = await store.claim("bench", 1)
        singles.append(time.perf_counter() - t0)
        assert len(rows) == 1
    assert not await store.claim("bench", 10), "a timed task was claimed before its time"
    return rate, 1000 * statistics.median(singles), 1000 * statistics.median(statements)


async def run(url: str, ready: int, scheduled: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fbtimers-") as tmp:
        for rel, source in STAGES.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(textwrap.dedent(source).lstrip())
        registry = load_workflows(Path(tmp))
    # Two databases on the same server, rounds alternating between them: whatever else the machine
    # does weighs on both alike.
    sides = {}
    for side in ("baseline", "scheduled"):
        db_url = await common.fresh_database(url, f"{DATABASE}_{side}")
        await migrate.upgrade(db_url)
        db = Database(db_url, pool_size=2)
        sides[side] = (Store(db, registry), await asyncpg.connect(db_url))
    try:
        store, conn = sides["scheduled"]
        t0 = time.perf_counter()
        await insert_tasks(conn, scheduled, future=True)
        await conn.execute("VACUUM ANALYZE tasks")
        out(f"  loaded {scheduled:,} timed tasks (due in 1-30 days) in {time.perf_counter() - t0:.1f} s")
        results: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "scheduled": []}
        for i in range(repeat):
            line = []
            for side, (store, conn) in sides.items():
                r, ms, st = await claim_round(store, conn, ready)
                results[side].append((r, ms, st))
                line.append(f"{'0' if side == 'baseline' else f'{scheduled:,}'} timed: {r:,.0f}/s, "
                            f"{ms:.2f} ms, statement {st:.3f} ms")
            out(f"  round {i + 1}: " + "; ".join(line))
        store, conn = sides["scheduled"]
        await insert_tasks(conn, 10, future=False)
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + _claim_sql(), dt.datetime.now(dt.UTC))
        out("  claim plan with the timed tasks present (the 'due' part):")
        for row in plan:
            if "Index" in row[0] or "Limit" in row[0]:
                out(f"    {row[0].strip()}")
        t0 = time.perf_counter()
        for _ in range(100):
            await waits.next_timer(store)
        out(f"  next-timer query (workers' wake-up) with the timed tasks present: "
            f"{10 * (time.perf_counter() - t0):.2f} ms each")
        rate = {k: statistics.median(r for r, _, _ in v) for k, v in results.items()}
        med = {k: statistics.median(ms for _, ms, _ in v) for k, v in results.items()}
        stmt = {k: statistics.median(x for _, _, x in v) for k, v in results.items()}
        for side, label in (("baseline", "0"), ("scheduled", f"{scheduled:,}")):
            out(f"claim of ready tasks, {label} timed tasks waiting: {rate[side]:,.0f}/s in batches of {BATCH}, "
                f"one-task claim {med[side]:.2f} ms (its statement alone {stmt[side]:.3f} ms); medians of {repeat}")
        out(f"with/without = {rate['scheduled'] / rate['baseline']:.2f} (rate), "
            f"{med['scheduled'] / med['baseline']:.2f} (one-task claim), {stmt['scheduled'] / stmt['baseline']:.2f} "
            "(claim statement)")
    finally:
        for store, conn in sides.values():
            await conn.close()
            await store.db.close()


def _claim_sql() -> str:
    """The claim's selection of due tasks (the part that reads the index), as asyncpg runs it."""
    return ("SELECT id FROM tasks WHERE status = 'pending' AND kind = 'script' AND available_at <= $1 "
            "ORDER BY available_at, id LIMIT 500 FOR UPDATE SKIP LOCKED")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ready", type=int, default=20_000)
    parser.add_argument("--scheduled", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out(f"timers: claiming {args.ready:,} ready tasks with 0, then {args.scheduled:,}, timed tasks waiting")
    with common.pg_server() as server:
        run_async(run(server.url, args.ready, args.scheduled, args.repeat))


if __name__ == "__main__":
    main()
