"""Helpers shared by the benchmarks in ``bench/``: a throwaway Postgres server, fresh databases on
it, CPU accounting and flushed output. Import it from a benchmark script in ``bench/``::

    import common  # bench/ is the script's directory, so it is on sys.path

    with common.pg_server() as server:                     # embedded Postgres in a temp dir,
        url = asyncio.run(common.fresh_database(server.url, "bench_x"))   # or $DATABASE_URL
        cpu = common.Cpu(server)                           # CPU of Postgres + this process
        ...                                                # work against `url`
        used = cpu.read()                                  # Used(client=..., postgres=...) seconds
        common.out(f"... {used.per_task(n)}")

Every database URL returned here is libpq-style (``postgresql://...``): asyncpg, psycopg and
flowbot's ``DATABASE_URL`` all accept it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.store.embedded import EmbeddedPostgres, sqlalchemy_url  # noqa: E402


def out(line: str) -> None:
    """Print a result line at once (benchmarks run for minutes; pipes would buffer it)."""
    print(line, flush=True)


@dataclass
class Server:
    """A Postgres server: its URL, and its postmaster pid when it runs on this machine."""

    url: str
    pid: int | None = None


@contextlib.contextmanager
def pg_server() -> Iterator[Server]:
    """``$DATABASE_URL`` (must allow CREATE DATABASE), else an embedded Postgres in a temporary
    directory, stopped and deleted on exit."""
    if os.environ.get("DATABASE_URL"):
        yield Server(os.environ["DATABASE_URL"])
        return
    # A short path: unix socket paths are limited to ~100 characters.
    tmp = Path(tempfile.mkdtemp(prefix="fbbench-", dir="/tmp"))
    pg = EmbeddedPostgres(tmp / "pg")
    try:
        url = pg.start()
        pid_file = tmp / "pg" / "postmaster.pid"
        pid = int(pid_file.read_text().split("\n", 1)[0]) if pid_file.exists() else None
        yield Server(url, pid)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def database_url(url: str, database: str) -> str:
    """The libpq URL of ``database`` on the server at ``url``."""
    from sqlalchemy.engine import make_url

    u = make_url(sqlalchemy_url(url)).set(database=database)
    return u.render_as_string(hide_password=False).replace("postgresql+asyncpg://", "postgresql://")


def conninfo(url: str) -> str:
    """A libpq keyword/value string (what psycopg wants when the host is a socket directory)."""
    from sqlalchemy.engine import make_url

    u = make_url(sqlalchemy_url(url))
    parts = {"host": u.query.get("host") or u.host, "port": u.query.get("port") or u.port,
             "user": u.username, "password": u.password, "dbname": u.database}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


async def fresh_database(url: str, name: str) -> str:
    """Drop and create database ``name`` on the server at ``url``; return its libpq URL."""
    conn = await asyncpg.connect(database_url(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(url, name)


async def server_settings(url: str) -> str:
    """The server settings that matter for write throughput, as one line."""
    conn = await asyncpg.connect(database_url(url, "postgres"))
    try:
        rows = await conn.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'server_version')"
        )
    finally:
        await conn.close()
    return ", ".join(f"{r['name']}={r['setting']}" for r in sorted(rows, key=lambda r: r["name"]))


def postgres_cpu(server: Server) -> float | None:
    """CPU seconds used so far by the server's processes (live ones and exited backends), or
    None when the server is not a local one this module started."""
    if server.pid is None:
        return None
    try:
        master = psutil.Process(server.pid)
        t = master.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in master.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
    except psutil.Error:
        return None
    return total


def process_cpu(pids: list[int]) -> float:
    """CPU seconds used so far by these processes (this one when ``pids`` is empty)."""
    if not pids:
        return time.process_time()
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


@dataclass
class Used:
    """CPU seconds used by the client side (workers or this process) and by Postgres."""

    client: float
    postgres: float | None

    def per_task(self, n: int) -> str:
        """``client X us + postgres Y us per task`` (Postgres "n/a" on a remote server)."""
        pg = f"{1e6 * self.postgres / n:.0f} us" if self.postgres is not None else "n/a"
        return f"CPU per task: client {1e6 * self.client / n:.0f} us + postgres {pg}"


class Cpu:
    """A CPU stopwatch over Postgres and some client processes (this process by default)."""

    def __init__(self, server: Server, pids: list[int] | None = None) -> None:
        self.server = server
        self.pids = list(pids or [])
        self.client_start = process_cpu(self.pids)
        self._pg = postgres_cpu(server)

    def read(self) -> Used:
        """CPU used since this stopwatch started."""
        pg = postgres_cpu(self.server)
        return Used(process_cpu(self.pids) - self.client_start,
                    pg - self._pg if pg is not None and self._pg is not None else None)


async def wal_bytes(url: str) -> int:
    """The server's current WAL position in bytes (the difference of two readings is the WAL
    written in between: what every commit must flush to disk)."""
    conn = await asyncpg.connect(database_url(url, "postgres"))
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await conn.close()
