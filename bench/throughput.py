"""Throughput of flowbot against a raw asyncpg loop and procrastinate, on one Postgres server.

    python bench/throughput.py [--tasks 20000] [--workers 1] [--concurrency 200]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE), creates one database per contender on that server (same settings for all
three), and measures:

a) flowbot: ``--tasks`` runs of a two-stage script workflow (stage one sends one task to stage two;
   both stages are trivial async functions) started with a batched insert, then processed by
   ``flowbot worker`` subprocesses: 2 x ``--tasks`` stage executions, each claimed, completed and
   logged in the task event log, with its run's status derived.
b) raw asyncpg: 8 connections, each looping "claim one with FOR UPDATE SKIP LOCKED, complete it,
   insert the follow-up" in one transaction, over the same schema and the same counts.
c) procrastinate: 2 x ``--tasks`` no-op jobs, one worker with concurrency 10.

Then the latency from trigger to the second stage starting under light load, and the CPU use of
an idle ``flowbot run``. The last line is ``flowbot/raw = R, flowbot/procrastinate = P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import migrate  # noqa: E402
from engine.db import Database  # noqa: E402
from engine.embedded import EmbeddedPostgres  # noqa: E402
from engine.loader import load_workflows  # noqa: E402
from engine.routing import Routes, new_task  # noqa: E402
from engine.store import Store  # noqa: E402

STAGES = {
    "bench/__init__.py": "",
    "bench/workflow.py": """
        from engine import Workflow

        workflow = Workflow("bench")
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

INSERT_CHUNK = 5000


def out(line: str) -> None:
    """Print a result line at once (the run takes minutes)."""
    print(line, flush=True)


def raw_url(url: str, database: str) -> str:
    """A libpq-style URL (asyncpg, subprocesses) for ``database`` on the server at ``url``."""
    from sqlalchemy.engine import make_url

    from engine.embedded import sqlalchemy_url

    u = make_url(sqlalchemy_url(url)).set(database=database)
    return u.render_as_string(hide_password=False).replace("postgresql+asyncpg://", "postgresql://")


@contextlib.contextmanager
def server() -> Iterator[str]:
    """The URL of the Postgres server every contender uses."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    # A short path: unix socket paths are limited to ~100 characters.
    tmp = Path(tempfile.mkdtemp(prefix="fbbench-", dir="/tmp"))
    pg = EmbeddedPostgres(tmp / "pg")
    try:
        yield pg.start()
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


async def fresh_database(url: str, name: str) -> str:
    """Drop and create database ``name``; return its libpq URL."""
    conn = await asyncpg.connect(raw_url(url, "postgres"))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    return raw_url(url, name)


async def server_settings(url: str) -> str:
    conn = await asyncpg.connect(raw_url(url, "postgres"))
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'server_version')"
        )
    finally:
        await conn.close()
    return ", ".join(f"{r['name']}={r['setting']}" for r in sorted(rows, key=lambda r: r["name"]))


# -------------------------------------------------------------------------------------------
# a) flowbot
# -------------------------------------------------------------------------------------------


def write_stages(root: Path) -> Path:
    for rel, source in STAGES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root


async def start_runs(store: Store, n: int) -> float:
    """Start ``n`` runs of the bench workflow with batched inserts; returns the seconds it took."""
    stage = store.registry.get("bench").stage("one")
    t0 = time.perf_counter()
    for start in range(0, n, INSERT_CHUNK):
        routes = Routes(tasks=[new_task(stage, "start", {"n": i}) for i in range(start, min(n, start + INSERT_CHUNK))])
        async with store.db.transaction() as tx:
            await store.emit(tx, stage, routes, trigger={"kind": "bench"}, now=store.clock())
    return time.perf_counter() - t0


def worker_env(url: str, stages: Path, home: Path, concurrency: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(DATABASE_URL=url, FLOWBOT_STAGES=str(stages), FLOWBOT_HOME=str(home),
               FLOWBOT_CONCURRENCY=str(concurrency), FLOWBOT_API_TOKEN="bench", **extra)
    env.pop("SLACK_BOT_TOKEN", None)
    return env


def spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    flowbot = shutil.which("flowbot")
    cmd = [flowbot, *args] if flowbot else [sys.executable, "-m", "engine.cli", *args]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def wait_done(conn: asyncpg.Connection, expected: int, procs: list[subprocess.Popen[bytes]],
                    timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while True:
        n = await conn.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
        if n >= expected:
            return
        for p in procs:
            if p.poll() is not None:
                err = p.stderr.read().decode() if p.stderr else ""
                raise SystemExit(f"a flowbot worker exited ({p.returncode}):\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"flowbot: only {n}/{expected} tasks completed in {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def bench_flowbot(url: str, tmp: Path, n: int, workers: int, concurrency: int,
                        latency_runs: int, idle_seconds: float) -> float:
    db_url = await fresh_database(url, "bench_flowbot")
    await migrate.upgrade(db_url)
    stages = write_stages(tmp / "stages")
    db = Database(db_url)
    store = Store(db, load_workflows(stages))
    conn = await asyncpg.connect(db_url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        insert_s = await start_runs(store, n)
        out(f"flowbot: started {n} runs (one task each) in {insert_s:.2f}s with batched inserts")
        env = worker_env(db_url, stages, tmp / "home", concurrency)
        procs = [spawn(["worker"], env) for _ in range(workers)]
        await wait_done(conn, 2 * n, procs)
        # Measured inside the database, from the first claim to the last completion: worker
        # process start-up (imports, connecting) is not counted, the work is.
        span = await conn.fetchrow(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE to_status = 'completed')"
            " - min(at) FILTER (WHERE reason = 'claimed')) AS s,"
            " count(*) FILTER (WHERE to_status = 'completed') AS completed,"
            " count(DISTINCT task_id) FILTER (WHERE to_status = 'completed') AS distinct_completed"
            " FROM task_events"
        )
        runs = dict(await conn.fetch("SELECT status, count(*) FROM runs GROUP BY status"))
        assert span["completed"] == span["distinct_completed"] == 2 * n, span
        assert runs == {"completed": n}, runs
        rate = 2 * n / float(span["s"])
        out(f"flowbot: {2 * n} tasks ({n} runs x 2 stages) completed in {float(span['s']):.2f}s "
            f"by {workers} `flowbot worker` process(es), concurrency {concurrency}: {rate:.0f} tasks/s")
        out(f"flowbot: every task completed exactly once, {n} runs completed, {await event_count(conn)} task events")

        await latency(store, conn, latency_runs)
        stop_all(procs)
        procs = []
        await idle_cpu(db_url, stages, tmp, idle_seconds)
        return rate
    finally:
        stop_all(procs)
        await conn.close()
        await db.close()


async def event_count(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM task_events"))


async def latency(store: Store, conn: asyncpg.Connection, runs: int, rate: float = 20.0) -> None:
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
    p99 = ms[min(len(ms) - 1, int(round(0.99 * len(ms))) - 1)]
    out(f"latency: trigger -> stage two started, {runs} runs at {rate:.0f}/s: "
        f"p50 = {p50:.1f} ms, p99 = {p99:.1f} ms, max = {ms[-1]:.1f} ms")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def idle_cpu(db_url: str, stages: Path, tmp: Path, seconds: float) -> None:
    """CPU used by an idle `flowbot run` (HTTP server, worker, outbox) over ``seconds``."""
    port = free_port()
    proc = spawn(["run"], worker_env(db_url, stages, tmp / "home", 16, PORT=str(port)))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise SystemExit(f"`flowbot run` did not come up:\n{err[-3000:]}") from None
                await asyncio.sleep(0.2)
        await asyncio.sleep(2)  # let start-up work settle
        ps = psutil.Process(proc.pid)
        before = ps.cpu_times()
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        after = ps.cpu_times()
        wall = time.monotonic() - t0
        used = (after.user - before.user) + (after.system - before.system)
        out(f"idle: `flowbot run` used {used * 1000:.0f} ms CPU in {wall:.1f}s = {100 * used / wall:.2f}% of one core")
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


async def bench_raw(url: str, n: int, connections: int = 8) -> float:
    db_url = await fresh_database(url, "bench_raw")
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
            """, n)
    finally:
        await setup.close()
    done = 0

    async def loop() -> None:
        nonlocal done
        conn = await asyncpg.connect(db_url)
        try:
            while done < 2 * n:
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
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    rate = 2 * n / elapsed
    out(f"raw asyncpg: {2 * n} tasks completed in {elapsed:.2f}s by {connections} connections, "
        f"one task per transaction: {rate:.0f} tasks/s")
    return rate


# -------------------------------------------------------------------------------------------
# c) procrastinate
# -------------------------------------------------------------------------------------------


async def bench_procrastinate(url: str, n: int, concurrency: int = 10) -> float:
    import procrastinate
    from sqlalchemy.engine import make_url

    db_url = await fresh_database(url, "bench_procrastinate")
    u = make_url(db_url)
    conninfo = " ".join(
        f"{k}={v}" for k, v in {
            "host": u.query.get("host") or u.host, "port": u.query.get("port") or u.port,
            "user": u.username, "password": u.password, "dbname": u.database,
        }.items() if v
    )
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))

    @app.task(name="noop")
    async def noop() -> None:
        pass

    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for start in range(0, 2 * n, INSERT_CHUNK):
            await noop.batch_defer_async(*({} for _ in range(min(INSERT_CHUNK, 2 * n - start))))
        t0 = time.perf_counter()
        await app.run_worker_async(concurrency=concurrency, wait=False, install_signal_handlers=False)
        elapsed = time.perf_counter() - t0
    conn = await asyncpg.connect(db_url)
    try:
        ok = await conn.fetchval("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")
    finally:
        await conn.close()
    assert ok == 2 * n, ok
    rate = 2 * n / elapsed
    out(f"procrastinate {procrastinate.__version__}: {2 * n} no-op jobs completed in {elapsed:.2f}s, "
        f"concurrency {concurrency}: {rate:.0f} jobs/s")
    return rate


# -------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace, url: str, tmp: Path) -> None:
    out(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; "
        f"server: {await server_settings(url)} (one server for all three)")
    fb = await bench_flowbot(url, tmp, args.tasks, args.workers, args.concurrency,
                             args.latency_runs, args.idle_seconds)
    raw = await bench_raw(url, args.tasks)
    pc = await bench_procrastinate(url, args.tasks) if not args.no_procrastinate else float("nan")
    out(f"flowbot/raw = {fb / raw:.1f}, flowbot/procrastinate = {fb / pc:.1f}")


@contextlib.asynccontextmanager
async def nothing() -> AsyncIterator[None]:
    yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="runs to start (each makes 2 tasks)")
    parser.add_argument("--workers", type=int, default=1, help="`flowbot worker` processes")
    parser.add_argument("--concurrency", type=int, default=200, help="FLOWBOT_CONCURRENCY of each worker")
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--no-procrastinate", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with server() as url, tempfile.TemporaryDirectory(prefix="fbbench-") as tmp:
        asyncio.run(main_async(args, url, Path(tmp)))


if __name__ == "__main__":
    main()
