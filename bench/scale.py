"""What flowbot costs as the work grows: full tables, more workers, hours of load, retention.

    python bench/scale.py [--only metrics,tables,purge,workers,soak] [--runs 1000000] [--tasks-per-run 5]
                          [--round-tasks 20000] [--rounds 5] [--workers 2] [--scaling 1,2,4]
                          [--soak-seconds 600] [--soak-rate 200]

One embedded Postgres (or ``DATABASE_URL``, which must allow CREATE DATABASE). Every throughput
figure is a *round*: ``--round-tasks / 2`` runs of the two-stage workflow of ``throughput.py``
inserted in one transaction while ``flowbot worker`` subprocesses wait, then claimed, run and
committed; the rate is measured inside the database (first claim to last completion). Sections:

metrics  the recording cost of ``/metrics`` counters: rounds alternating between workers started
         with ``FLOWBOT_METRICS=off`` and with it on (the default), same database, same run.
tables   two databases on the server, each with its own workers: one empty, one loaded with
         ``--runs`` finished runs of ``--tasks-per-run`` completed tasks each (two task events per
         task, finished 40 days ago); rounds alternate between them. Goal: within 10%.
purge    on those tables, ``flowbot purge --older-than 30d`` in a subprocess deletes every loaded
         run while rounds go on: rates during the purge beside the rounds just before it.
workers  1, 2 and 4 worker processes on one Postgres (fresh database each): rate, Postgres CPU
         (cores busy) and commits per second beside each.
soak     one worker under a steady ``--soak-rate`` runs/s for ``--soak-seconds``; its RSS sampled
         every 30 s. Goal: flat.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import common  # bench/common.py (puts the repository root on sys.path)
import psutil
from common import Cpu, Server, out
from throughput import check_alive, spawn, stop_all, wait_listening, worker_env, write_stages

from engine.cli.main import run_async
from engine.loader import load_workflows
from engine.routing import Routes, new_task
from engine.store import migrate
from engine.store.db import Database
from engine.store.tasks import Store

XACTS = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"


class Bench:
    """A database with the benchmark workflow, some `flowbot worker` processes, and rounds."""

    def __init__(self, server: Server, tmp: Path, args: argparse.Namespace, name: str) -> None:
        self.server, self.tmp, self.args, self.name = server, tmp, args, name
        self.procs: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Bench:
        self.url = await common.fresh_database(self.server.url, self.name)
        await migrate.upgrade(self.url)
        self.stages = write_stages(self.tmp / "stages")
        self.db = Database(self.url)
        self.store = Store(self.db, load_workflows(self.stages))
        self.conn = await asyncpg.connect(self.url)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        stop_all(self.procs)
        await self.conn.close()
        await self.db.close()

    async def start_workers(self, n: int, concurrency: int, **env: str) -> None:
        """Stop the running workers, start ``n`` new ones, wait until they listen."""
        stop_all(self.procs)
        # Their own retention passes stay out of it: the purge is measured on its own (`purge`).
        env = {"FLOWBOT_RETENTION_DAYS": "off", **env}
        self.procs = [spawn(["worker"], worker_env(self.url, self.stages, self.tmp / "home", concurrency, **env))
                      for _ in range(n)]
        await wait_listening(self.conn, self.procs)

    async def round(self, n_tasks: int) -> dict[str, float]:
        """One round: returns rate (tasks/s), Postgres cores busy, commits/s, worker CPU per task."""
        last = await self.conn.fetchval("SELECT coalesce(max(id), 0) FROM tasks")
        stage = self.store.registry.get("bench").stage("one")
        routes = Routes(tasks=[new_task(stage, "start", {"n": i}) for i in range(n_tasks // 2)])
        await self.conn.execute("SELECT pg_stat_clear_snapshot()")
        x0 = await self.conn.fetchval(XACTS)
        cpu = Cpu(self.server, [p.pid for p in self.procs])
        t0 = time.perf_counter()
        async with self.db.transaction() as tx:
            await self.store.emit(tx, stage, routes, trigger={"kind": "bench"}, now=self.store.clock())
        deadline = time.monotonic() + 600
        while await self.conn.fetchval(
                "SELECT count(*) FROM tasks WHERE id > $1 AND status = 'completed'", last) < n_tasks:
            check_alive(self.procs)
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name}: a round did not finish in 600 s")
            await asyncio.sleep(0.05)
        wall = time.perf_counter() - t0
        used = cpu.read()
        await asyncio.sleep(0.6)  # statistics reach the shared counters every ~0.5 s
        await self.conn.execute("SELECT pg_stat_clear_snapshot()")
        commits = await self.conn.fetchval(XACTS) - x0
        span = await self.conn.fetchval(
            "SELECT extract(epoch FROM max(at) FILTER (WHERE to_status = 'completed')"
            " - min(at) FILTER (WHERE reason = 'claimed')) FROM task_events WHERE task_id > $1", last)
        return {"rate": n_tasks / float(span), "pg_cores": (used.postgres or 0.0) / wall,
                "commits": commits / wall, "worker_us": 1e6 * used.client / n_tasks}

    async def rounds(self, n: int, label: str) -> list[dict[str, float]]:
        """``n`` rounds, each printed (``label`` ending in ":" names a single round); returns them."""
        got = []
        for i in range(n):
            r = await self.round(self.args.round_tasks)
            got.append(r)
            name = label if label.endswith(":") else f"{label} round {i + 1}:"
            out(f"  {name} {r['rate']:.0f} tasks/s; worker CPU {r['worker_us']:.0f} us/task; "
                f"postgres {r['pg_cores']:.2f} cores busy, {r['commits']:.0f} commits/s")
        return got


def median(rounds: list[dict[str, float]], key: str = "rate") -> float:
    return statistics.median(r[key] for r in rounds)


async def section_metrics(server: Server, tmp: Path, args: argparse.Namespace) -> None:
    out(f"metrics: recording off vs on, {args.workers} worker(s), alternating, {args.rounds} rounds each")
    async with Bench(server, tmp, args, "scale_metrics") as b:
        off: list[dict[str, float]] = []
        on: list[dict[str, float]] = []
        for _ in range(args.rounds):
            for label, env, into in (("off", "off", off), ("on", "on", on)):
                await b.start_workers(args.workers, args.concurrency, FLOWBOT_METRICS=env)
                into += await b.rounds(1, f"metrics {label}:")
        out(f"metrics: median {median(on):.0f} tasks/s with recording vs {median(off):.0f} without "
            f"({100 * (median(on) / median(off) - 1):+.1f}%); worker CPU {median(on, 'worker_us'):.0f} vs "
            f"{median(off, 'worker_us'):.0f} us/task")


LOAD_CHUNK = """
    WITH r AS (
        -- Ids in ascending order (like the UUIDv7 of fanned-out runs): the indexes grow at their end.
        INSERT INTO runs (id, workflow, workflow_version, status, created_at, updated_at, finished_at)
        SELECT CAST(lpad(to_hex($4 + g), 32, '0') AS uuid), 'bench', 'loaded', 'completed', $2, $2, $2
        FROM generate_series(1, $1) AS g
        RETURNING id
    ), t AS (
        INSERT INTO tasks (run_id, workflow, stage, kind, type, payload, status, attempts, created_at,
                           started_at, finished_at, available_at, created_by, completed_by, workflow_version)
        SELECT r.id, 'bench', 'one', 'script', 'start', '{"n": 1}', 'completed', 1, $2, $2, $2, $2,
               'engine', 'w', 'loaded'
        FROM r CROSS JOIN generate_series(1, $3)
        RETURNING id
    )
    INSERT INTO task_events (task_id, from_status, to_status, actor, reason, at)
    SELECT t.id, e.f, e.t, 'w', e.r, $2
    FROM t CROSS JOIN (VALUES ('pending', 'locked', 'claimed'), ('locked', 'completed', NULL)) AS e(f, t, r)
"""


async def load(conn: asyncpg.Connection, runs: int, per_run: int) -> None:
    """``runs`` finished runs of ``per_run`` completed tasks (2 events each), finished 40 days ago."""
    t0 = time.perf_counter()
    finished = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    chunk = 50_000
    for at in range(0, runs, chunk):
        await conn.execute(LOAD_CHUNK, min(chunk, runs - at), finished, per_run, at)
    await conn.execute("VACUUM ANALYZE runs, tasks, task_events")
    size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    out(f"tables: loaded {runs} finished runs, {runs * per_run} completed tasks, {2 * runs * per_run} task events "
        f"in {time.perf_counter() - t0:.0f} s (server-side INSERT ... SELECT, then VACUUM ANALYZE); database {size}")


async def section_tables_and_purge(server: Server, tmp: Path, args: argparse.Namespace, only: set[str]) -> None:
    # Two databases on the one server, each with its own workers: rounds alternate between the
    # empty one and the full one, so what else the machine does weighs on both alike.
    async with Bench(server, tmp, args, "scale_empty") as empty_db, Bench(server, tmp, args, "scale_tables") as b:
        await empty_db.start_workers(args.workers, args.concurrency)
        await b.start_workers(args.workers, args.concurrency)
        await load(b.conn, args.runs, args.tasks_per_run)
        await b.conn.execute("CHECKPOINT")  # the load's dirty pages written before anything is timed
        out(f"tables: {args.workers} worker(s) per database, FLOWBOT_CONCURRENCY={args.concurrency}, "
            f"rounds of {args.round_tasks} tasks, alternating between the two databases")
        empty: list[dict[str, float]] = []
        full: list[dict[str, float]] = []
        for i in range(args.rounds):
            empty += await empty_db.rounds(1, f"empty tables #{i + 1}:")
            full += await b.rounds(1, f"full tables #{i + 1}:")
        change = 100 * (median(full) / median(empty) - 1)
        out(f"tables: median {median(full):.0f} tasks/s with {args.runs} runs and {args.runs * args.tasks_per_run} "
            f"finished tasks vs {median(empty):.0f} with empty tables ({change:+.1f}%)")
        stop_all(empty_db.procs)
        if "purge" in only:
            await purge_under_load(b, full)


async def purge_under_load(b: Bench, before: list[dict[str, float]]) -> None:
    """`flowbot purge` of everything loaded while rounds go on."""
    env = worker_env(b.url, b.stages, b.tmp / "home", 16)
    t0 = time.perf_counter()
    purge = start_purge(env)
    pg = Cpu(b.server)
    during: list[dict[str, float]] = []
    while purge.poll() is None:
        during += await b.rounds(1, f"during purge #{len(during) + 1}:")
    seconds = time.perf_counter() - t0
    err = purge.stderr.read().decode() if purge.stderr else ""
    if purge.returncode != 0:
        raise SystemExit(f"flowbot purge failed ({purge.returncode}):\n{err[-3000:]}")
    said = purge.stdout.read().decode().strip() if purge.stdout else ""
    out(f"purge: {said}")
    left = await b.conn.fetchval("SELECT count(*) FROM runs WHERE workflow_version = 'loaded'")
    out(f"purge: `flowbot purge --older-than 30d` took {seconds:.0f} s with rounds running "
        f"({pg.read().postgres or 0:.0f} s of Postgres CPU); {left} loaded runs left")
    if during:
        out(f"purge: median {median(during):.0f} tasks/s during the purge ({len(during)} rounds, "
            f"min {min(r['rate'] for r in during):.0f}) vs {median(before):.0f} just before "
            f"({100 * (median(during) / median(before) - 1):+.1f}%)")
    after = await b.rounds(2, "after purge")
    out(f"purge: median {median(after):.0f} tasks/s after it")


def start_purge(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`flowbot purge --older-than 30d` in the background, its output kept."""
    found = shutil.which("flowbot")
    command = [found] if found else [sys.executable, "-m", "engine.cli"]
    return subprocess.Popen([*command, "purge", "--older-than", "30d"], env=env, cwd=common.ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def section_workers(server: Server, tmp: Path, args: argparse.Namespace) -> None:
    for n in [int(x) for x in args.scaling.split(",")]:
        async with Bench(server, tmp, args, f"scale_workers_{n}") as b:
            await b.start_workers(n, args.concurrency)
            got = await b.rounds(args.rounds, f"{n} worker(s)")
            out(f"workers: {n} process(es): median {median(got):.0f} tasks/s; postgres "
                f"{median(got, 'pg_cores'):.2f} cores busy, {median(got, 'commits'):.0f} commits/s; worker CPU "
                f"{median(got, 'worker_us'):.0f} us/task")


async def section_soak(server: Server, tmp: Path, args: argparse.Namespace) -> None:
    async with Bench(server, tmp, args, "scale_soak") as b:
        await b.start_workers(1, args.concurrency)
        worker = psutil.Process(b.procs[0].pid)
        stage = b.store.registry.get("bench").stage("one")
        per_tick = max(1, round(args.soak_rate / 10))
        out(f"soak: 1 worker, {per_tick * 10} runs/s ({per_tick * 20} tasks/s) for {args.soak_seconds:.0f} s; "
            f"RSS every 30 s")
        samples: list[float] = []
        t0 = time.monotonic()
        next_sample = t0
        tick = t0
        while time.monotonic() - t0 < args.soak_seconds:
            routes = Routes(tasks=[new_task(stage, "start", {"n": i}) for i in range(per_tick)])
            async with b.db.transaction() as tx:
                await b.store.emit(tx, stage, routes, trigger={"kind": "soak"}, now=b.store.clock())
            if time.monotonic() >= next_sample:
                rss = worker.memory_info().rss / 2**20
                samples.append(rss)
                done = await b.conn.fetchval("SELECT count(*) FROM tasks WHERE status = 'completed'")
                out(f"  soak t={time.monotonic() - t0:4.0f} s: worker RSS {rss:.1f} MiB; {done} tasks completed")
                next_sample += 30
            check_alive(b.procs)
            tick += 0.1
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
        pending = await b.conn.fetchval("SELECT count(*) FROM tasks WHERE status <> 'completed'")
        warm = samples[2:] or samples
        out(f"soak: RSS {samples[0]:.1f} MiB at start, {warm[0]:.1f} after 1 min, {samples[-1]:.1f} at the end "
            f"({samples[-1] - warm[0]:+.1f} MiB after warm-up); {pending} tasks not completed at the end")


async def main_async(args: argparse.Namespace, server: Server, tmp: Path) -> None:
    only = set(args.only.split(","))
    out(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start, Python "
        f"{sys.version.split()[0]}; postgres: {await common.server_settings(server.url)}")
    if "metrics" in only:
        await section_metrics(server, tmp, args)
    if only & {"tables", "purge"}:
        await section_tables_and_purge(server, tmp, args, only)
    if "workers" in only:
        await section_workers(server, tmp, args)
    if "soak" in only:
        await section_soak(server, tmp, args)
    out(f"machine load average {os.getloadavg()[0]:.1f} at the end")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", default="metrics,tables,purge,workers,soak")
    parser.add_argument("--runs", type=int, default=1_000_000, help="finished runs loaded for `tables`")
    parser.add_argument("--tasks-per-run", type=int, default=5)
    parser.add_argument("--round-tasks", type=int, default=20_000, help="tasks per round (even)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (metrics, tables, purge)")
    parser.add_argument("--concurrency", type=int, default=2000, help="FLOWBOT_CONCURRENCY of each worker")
    parser.add_argument("--scaling", default="1,2,4", help="worker process counts for `workers`")
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--soak-rate", type=float, default=200, help="runs started per second in the soak")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with common.pg_server() as server, tempfile.TemporaryDirectory(prefix="fbscale-") as tmp:
        run_async(main_async(args, server, Path(tmp)))


if __name__ == "__main__":
    main()
