"""Throughput of flowbot against a raw asyncpg loop and procrastinate, on one Postgres server.

    python bench/throughput.py [--tasks 20000] [--workers 2] [--concurrency 2000]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE), creates one database per contender on that server, and measures:

a) flowbot: ``--tasks / 2`` runs of a two-stage script workflow (stage ``one`` sends a task that
   routes to stage ``two``; both stages are trivial async functions), started in one transaction,
   then processed by ``--workers`` ``flowbot worker`` subprocesses (default 2: one per core of the
   2-core machine the targets are set for) that were already up and idle: ``--tasks``
   stage executions, each claimed, completed and logged in the task event log (2 events per
   task: claimed, completed; its creation is on the task row), with the follow-up routed and
   each run's status derived.
b) raw asyncpg: 8 connections, each looping "claim one with FOR UPDATE SKIP LOCKED, complete it,
   insert the follow-up" in one transaction per task, over the same schema and the same counts.
c) procrastinate: ``--tasks`` no-op jobs, one worker with concurrency 10.

Then the latency from trigger to the second stage starting under light load, and the CPU use of
an idle ``flowbot run``. Each contender also reports the CPU it used per task (client side and
Postgres), which the machine's other load disturbs far less than its rate.
The last line is ``flowbot/raw = R, flowbot/procrastinate = P``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import asyncpg
import common  # bench/common.py (puts the repository root on sys.path)
import psutil
from common import Cpu, Server, out

from engine.cli.main import run_async
from engine.loader import load_workflows
from engine.routing import Routes, new_task
from engine.store import migrate
from engine.store.db import Database
from engine.store.tasks import Store

ROOT = common.ROOT

STAGES = {
    "bench/__init__.py": "",
    "bench/workflow.py": """
        from engine import Workflow

        workflow = Workflow("bench", title="Throughput benchmark")
        one = workflow.script("one")
        two = workflow.script("two")
        workflow.transition(one, two, on="next")
    """,
    "bench/one.py": """
        async def run(task, ctx):
            ctx.send("next", {"n": task["n"]})
    """,
    "bench/two.py": """
        async def run(task, ctx):
            pass
    """,
}


# -------------------------------------------------------------------------------------------
# a) flowbot
# -------------------------------------------------------------------------------------------


def write_stages(root: Path) -> Path:
    """The benchmark's workflow package under ``root``; returns ``root`` (the stages dir)."""
    for rel, source in STAGES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root


def worker_env(url: str, stages: Path, home: Path, concurrency: int, **extra: str) -> dict[str, str]:
    """The environment of a flowbot subprocess (no Slack: the benchmark measures the engine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    env.update(DATABASE_URL=url, FLOWBOT_STAGES=str(stages), FLOWBOT_HOME=str(home),
               FLOWBOT_CONCURRENCY=str(concurrency), FLOWBOT_API_TOKEN="bench", **extra)
    return env


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``flowbot ARGS`` as a subprocess."""
    flowbot = shutil.which("flowbot")
    cmd = [flowbot, *args] if flowbot else [sys.executable, "-m", "engine.cli.main", *args]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM (a graceful shutdown), then wait; SIGKILL only a process that hangs."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def check_alive(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is not None:
            err = p.stderr.read().decode() if p.stderr else ""
            raise SystemExit(f"a flowbot process exited ({p.returncode}):\n{err[-3000:]}")


async def wait_listening(conn: asyncpg.Connection, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until every worker is up and idle (its LISTEN connection open)."""
    deadline = time.monotonic() + 60
    while True:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
        if n >= len(procs):
            await asyncio.sleep(0.5)  # the first poll's claim and reaper pass
            return
        check_alive(procs)
        if time.monotonic() > deadline:
            raise SystemExit("flowbot workers did not start within 60 s")
        await asyncio.sleep(0.1)


async def wait_done(conn: asyncpg.Connection, expected: int, procs: list[subprocess.Popen[bytes]],
                    within: float = 900) -> None:
    deadline = time.monotonic() + within
    while True:
        n = await conn.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
        if n >= expected:
            return
        check_alive(procs)
        if time.monotonic() > deadline:
            raise SystemExit(f"flowbot: only {n}/{expected} tasks completed in {within:.0f}s")
        await asyncio.sleep(0.05)


async def bench_flowbot(server: Server, tmp: Path, args: argparse.Namespace) -> float:
    """Returns flowbot's rate (tasks completed per second)."""
    n_runs = args.tasks // 2
    db_url = await common.fresh_database(server.url, "bench_flowbot")
    await migrate.upgrade(db_url)
    stages = write_stages(tmp / "stages")
    db = Database(db_url)
    store = Store(db, load_workflows(stages))
    conn = await asyncpg.connect(db_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = worker_env(db_url, stages, tmp / "home", args.concurrency)
        procs = [spawn(["worker"], env) for _ in range(args.workers)]
        await wait_listening(conn, procs)
        stage = store.registry.get("bench").stage("one")
        t0 = time.perf_counter()
        routes = Routes(tasks=[new_task(stage, "start", {"n": i}) for i in range(n_runs)])
        workers_cpu = common.process_cpu([p.pid for p in procs])
        async with db.transaction() as tx:  # one commit, one NOTIFY: the workers start together
            await store.emit(tx, stage, routes, trigger={"kind": "bench"}, now=store.clock())
        cpu = Cpu(server, [p.pid for p in procs])
        cpu.client_start = workers_cpu  # the workers were idle during the insert
        wal = await common.wal_bytes(server.url)
        insert_s = time.perf_counter() - t0
        await wait_done(conn, 2 * n_runs, procs)
        used = cpu.read()
        wal = await common.wal_bytes(server.url) - wal
        out(f"flowbot: started {n_runs} runs (one task each) in one transaction in {insert_s:.2f}s")
        # Measured inside the database, from the first claim to the last completion.
        span = await conn.fetchrow(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE to_status = 'completed')"
            "                        - min(at) FILTER (WHERE reason = 'claimed')) AS s,"
            " count(*) FILTER (WHERE to_status = 'completed') AS completed,"
            " count(DISTINCT task_id) FILTER (WHERE to_status = 'completed') AS distinct_completed,"
            " count(DISTINCT at) FILTER (WHERE reason = 'claimed') AS claims,"
            " count(DISTINCT at) FILTER (WHERE to_status = 'completed') AS commits,"
            " count(*) AS events"
            " FROM task_events")
        runs = dict(await conn.fetch("SELECT status, count(*) FROM runs GROUP BY status"))
        assert span["completed"] == span["distinct_completed"] == 2 * n_runs, span
        assert runs == {"completed": n_runs}, runs
        seconds = float(span["s"])
        rate = 2 * n_runs / seconds
        out(f"flowbot: {2 * n_runs} tasks ({n_runs} runs x 2 stages) completed in {seconds:.2f}s by "
            f"{args.workers} `flowbot worker` process(es), FLOWBOT_CONCURRENCY={args.concurrency}: "
            f"{rate:.0f} tasks/s")
        out(f"flowbot: {span['claims']} claim statements (mean {2 * n_runs / span['claims']:.0f} tasks), "
            f"{span['commits']} commits (mean {2 * n_runs / span['commits']:.0f} tasks); "
            f"every task completed exactly once, {n_runs} runs completed, {span['events']} task events; "
            f"{used.per_task(2 * n_runs)}; WAL {wal / 2 / n_runs:.0f} bytes per task")
        await latency(store, conn, args.latency_runs, args.latency_rate)
        stop_all(procs)
        procs = []
        await idle_cpu(db_url, conn, stages, tmp, args.idle_seconds)
        return rate
    finally:
        stop_all(procs)
        await conn.close()
        await db.close()


async def latency(store: Store, conn: asyncpg.Connection, runs: int, rate: float) -> None:
    """Runs started one at a time at ``rate``/s with the workers idle: trigger -> stage two starts."""
    stage = store.registry.get("bench").stage("one")
    ids = []
    t0 = time.perf_counter()
    for i in range(runs):
        run_id, _ = await store.start_run(stage, {"n": i})
        ids.append(run_id)
        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
    for _ in range(300):
        left = await conn.fetchval(
            "SELECT count(*) FROM runs WHERE id = ANY($1::uuid[]) AND status <> 'completed'", ids)
        if left == 0:
            break
        await asyncio.sleep(0.1)
    rows = await conn.fetch(
        "SELECT extract(epoch FROM t.started_at - r.created_at) * 1000 AS ms FROM runs r"
        " JOIN tasks t ON t.run_id = r.id AND t.stage = 'two' WHERE r.id = ANY($1::uuid[])", ids)
    ms = sorted(float(r["ms"]) for r in rows)
    assert len(ms) == runs, f"only {len(ms)}/{runs} runs reached stage two"
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, math.ceil(0.99 * len(ms)) - 1)]
    out(f"latency: trigger -> stage two started, {runs} runs at {rate:g}/s: "
        f"p50 = {p50:.1f} ms, p99 = {p99:.1f} ms, max = {ms[-1]:.1f} ms")


def healthz(port: int) -> None:
    """GET /healthz (raises OSError until the server answers 200)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def idle_cpu(db_url: str, conn: asyncpg.Connection, stages: Path, tmp: Path, seconds: float) -> None:
    """CPU used by an idle `flowbot run` (HTTP server, worker, scheduler, outbox) over ``seconds``,
    and the transactions it sent meanwhile (no busy polling: a few per poll interval)."""
    port = free_port()
    proc = spawn(["run"], worker_env(db_url, stages, tmp / "home", 16, PORT=str(port)))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                await asyncio.to_thread(healthz, port)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"`flowbot run` did not come up:\n{err[-3000:]}") from None
                await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # let start-up work settle
        ps = psutil.Process(proc.pid)
        xacts = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        x0 = await conn.fetchval(xacts)
        before = ps.cpu_times()
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        after = ps.cpu_times()
        wall = time.monotonic() - t0
        await asyncio.sleep(0.6)  # statistics are flushed to the shared counters every ~0.5 s
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        x1 = await conn.fetchval(xacts)
        used = (after.user - before.user) + (after.system - before.system)
        out(f"idle: `flowbot run` used {used * 1000:.0f} ms CPU in {wall:.0f} s = {100 * used / wall:.2f}% "
            f"of one core; its database counted {x1 - x0} transactions meanwhile (2 of them this measurement's)")
    finally:
        stop_all([proc])


# -------------------------------------------------------------------------------------------
# b) raw asyncpg, one task per transaction
# -------------------------------------------------------------------------------------------

RAW_CLAIM = """
    SELECT id, run_id, stage, payload FROM tasks
    WHERE status = 'pending' AND kind = 'script' AND available_at <= now()
    ORDER BY available_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
"""
RAW_COMPLETE = """
    UPDATE tasks SET status = 'completed', attempts = attempts + 1, started_at = now(), finished_at = now()
    WHERE id = $1
"""
RAW_FOLLOW_UP = """
    INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status)
    VALUES ($1, 'bench', 'two', 'script', 'next', $2, 'pending')
"""


async def bench_raw(server: Server, n_tasks: int, connections: int) -> float:
    """Returns the raw loop's rate (tasks completed per second)."""
    n_runs = n_tasks // 2
    db_url = await common.fresh_database(server.url, "bench_raw")
    await migrate.upgrade(db_url)
    setup = await asyncpg.connect(db_url)
    try:
        await setup.execute(
            """
            WITH r AS (
                INSERT INTO runs (workflow) SELECT 'bench' FROM generate_series(1, $1) RETURNING id
            )
            INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status)
            SELECT id, 'bench', 'one', 'script', 'start', '{}'::jsonb, 'pending' FROM r
            """, n_runs)
    finally:
        await setup.close()
    conns = [await asyncpg.connect(db_url) for _ in range(connections)]
    done = 0

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal done
        while done < 2 * n_runs:
            async with conn.transaction():
                row = await conn.fetchrow(RAW_CLAIM)
                if row is not None:
                    await conn.execute(RAW_COMPLETE, row["id"])
                    if row["stage"] == "one":
                        await conn.execute(RAW_FOLLOW_UP, row["run_id"], row["payload"])
            if row is None:
                await asyncio.sleep(0.001)  # others hold the rest; their follow-ups come
            else:
                done += 1

    cpu = Cpu(server)
    wal = await common.wal_bytes(server.url)
    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        elapsed = time.perf_counter() - t0
        used = cpu.read()
        wal = await common.wal_bytes(server.url) - wal
        for c in conns:
            await c.close()
    rate = 2 * n_runs / elapsed
    out(f"raw asyncpg: {2 * n_runs} tasks completed in {elapsed:.2f}s by {connections} connections, "
        f"one task per transaction: {rate:.0f} tasks/s; {used.per_task(2 * n_runs)}; "
        f"WAL {wal / 2 / n_runs:.0f} bytes per task")
    return rate


# -------------------------------------------------------------------------------------------
# c) procrastinate
# -------------------------------------------------------------------------------------------


async def bench_procrastinate(server: Server, n_tasks: int, concurrency: int) -> float:
    """Returns procrastinate's rate (jobs completed per second)."""
    import procrastinate

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    db_url = await common.fresh_database(server.url, "bench_procrastinate")
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=common.conninfo(db_url)))

    @app.task(name="noop")
    async def noop() -> None:
        pass

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, n_tasks, 5000):
            await noop.batch_defer_async(*({} for _ in range(min(5000, n_tasks - start))))
        cpu = Cpu(server)
        wal = await common.wal_bytes(server.url)
        t0 = time.perf_counter()
        await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)
        elapsed = time.perf_counter() - t0
        used = cpu.read()
        wal = await common.wal_bytes(server.url) - wal
    conn = await asyncpg.connect(db_url)
    try:
        ok = await conn.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    finally:
        await conn.close()
    assert ok == n_tasks, ok
    rate = n_tasks / elapsed
    out(f"procrastinate {procrastinate.__version__}: {n_tasks} no-op jobs completed in {elapsed:.2f}s, "
        f"one worker, concurrency {concurrency}: {rate:.0f} jobs/s; {used.per_task(n_tasks)}; "
        f"WAL {wal / n_tasks:.0f} bytes per job")
    return rate


# -------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, server: Server, tmp: Path) -> None:
    load = os.getloadavg()[0]
    out(f"machine: {os.cpu_count()} cores, load average {load:.1f} at start, Python {sys.version.split()[0]}; "
        f"postgres: {await common.server_settings(server.url)} (one server for all three)")
    only = set(args.only.split(",")) if args.only else {"flowbot", "raw", "procrastinate"}
    nan = float("nan")
    fb = await bench_flowbot(server, tmp, args) if "flowbot" in only else nan
    raw = await bench_raw(server, args.tasks, args.raw_connections) if "raw" in only else nan
    pc = (await bench_procrastinate(server, args.peer_tasks or args.tasks, args.procrastinate_concurrency)
          if "procrastinate" in only else nan)
    out(f"machine load average {os.getloadavg()[0]:.1f} at the end (other processes share these cores)")
    out(f"flowbot/raw = {fb / raw:.1f}, flowbot/procrastinate = {fb / pc:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="tasks each contender completes (even)")
    parser.add_argument("--workers", type=int, default=2, help="`flowbot worker` processes (one per core)")
    parser.add_argument("--concurrency", type=int, default=2000, help="FLOWBOT_CONCURRENCY of each worker")
    parser.add_argument("--raw-connections", type=int, default=8)
    parser.add_argument("--procrastinate-concurrency", type=int, default=10)
    parser.add_argument("--peer-tasks", type=int, default=0,
                        help="jobs for procrastinate (default: --tasks; fewer is quicker, same rate)")
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--latency-rate", type=float, default=20.0, help="runs started per second")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--only", default="", help="comma-separated subset of flowbot,raw,procrastinate")
    args = parser.parse_args()
    if args.tasks < 2 or args.tasks % 2:
        parser.error("--tasks must be an even number (two stages per run)")
    logging.basicConfig(level=logging.WARNING)
    with common.pg_server() as server, tempfile.TemporaryDirectory(prefix="fbbench-") as tmp:
        run_async(main_async(args, server, Path(tmp)))  # the loop flowbot runs on, for all three


if __name__ == "__main__":
    main()
