"""Fixtures that run a test module through a real PgBouncer in transaction mode.

A module under ``tests/pooler`` imports a scenario module's tests and fixtures, then these
fixtures, which override the suite's: ``database_url`` is the test database through the
session's PgBouncer (``tests.pgbouncer``; ``pool_mode=transaction``: no prepared-statement cache,
no LISTEN through it), so every fixture built on it (``db``, the HTTP servers, the Slack app)
talks to Postgres through the pooler. ``db`` LISTENs on the direct
connection, as ``FLOWBOT_LISTEN_URL`` makes a deployment do; apps opened from settings
(``slack_app``, the API) have none and run in poll-only mode.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from engine.store.db import Database
from engine.store.embedded import sqlalchemy_url
from tests.pgbouncer import PgBouncer

# The scenario modules re-run through PgBouncer are imported by name from tests/pooler.
sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))


def _direct(server_url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(sqlalchemy_url(server_url)).set(database=database).render_as_string(hide_password=False)


@dataclass
class Pooled:
    """One test database, directly and through PgBouncer."""

    name: str
    direct: str
    pooled: str


@pytest.fixture
async def pooled(pg_server: str, template_db: str, pgbouncer: PgBouncer) -> AsyncIterator[Pooled]:
    """A fresh migrated database (made and dropped on a direct connection)."""
    name = f"p_{uuid.uuid4().hex[:12]}"
    admin = _direct(pg_server, "postgres").replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template_db}")
    finally:
        await conn.close()
    yield Pooled(name, _direct(pg_server, name), pgbouncer.url(name))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
def database_url(pooled: Pooled) -> str:
    """The test database through PgBouncer (overrides the suite's direct one)."""
    return pooled.pooled


@pytest.fixture
async def db(pooled: Pooled) -> AsyncIterator[Database]:
    """A pool through PgBouncer; LISTEN on the direct connection (``FLOWBOT_LISTEN_URL``)."""
    database = Database(pooled.pooled, listen_url=pooled.direct)
    yield database
    await database.close()
