"""Shared fixtures: a real Postgres (the embedded one), a fresh migrated database per test.

One embedded server per test session; a template database migrated once; each test that asks for
``database_url`` gets its own copy (``CREATE DATABASE ... TEMPLATE``), so tests never see each
other's rows. Set ``FLOWBOT_TEST_DATABASE_URL`` to use another server (it must allow CREATE
DATABASE).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from engine.loader import Registry, load_workflows
from engine.store import migrate
from engine.store.db import Database
from engine.store.embedded import EmbeddedPostgres, sqlalchemy_url
from engine.store.tasks import Store

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support import write_stages  # noqa: E402  (tests import it from here too)

#: Slack fixtures (fake_slack, slack_app) for the Slack integration tests; PgBouncer (pgbouncer)
#: for the tests under tests/pooler.
pytest_plugins = ["tests.slack", "tests.pgbouncer"]

TEMPLATE = "flowbot_template"


def _raw(url: str, database: str = "postgres") -> str:
    """The asyncpg (libpq-style) URL for ``database`` on the server at ``url``."""
    from sqlalchemy.engine import make_url

    u = make_url(sqlalchemy_url(url)).set(database=database)
    return u.render_as_string(hide_password=False).replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a running Postgres server for the whole session."""
    external = os.environ.get("FLOWBOT_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # A short path: unix socket paths are limited to ~100 characters.
    pgdata = Path(f"/tmp/flowbot-test-{os.getpid()}") / "pg"
    server = EmbeddedPostgres(pgdata)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
        import shutil

        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    """A database migrated to head once; every test database is cloned from it."""

    async def build() -> None:
        conn = await asyncpg.connect(_raw(pg_server))
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        await migrate.upgrade(_raw(pg_server, TEMPLATE))

    asyncio.run(build())
    return TEMPLATE


@contextlib.asynccontextmanager
async def _scratch_database(pg_server: str, prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """A database created for one test (from ``template`` if given) and dropped after it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(_raw(pg_server))
    try:
        await conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    finally:
        await conn.close()
    yield sqlalchemy_url(_raw(pg_server, name))
    conn = await asyncpg.connect(_raw(pg_server))
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


@pytest.fixture
async def database_url(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (dropped afterwards); a SQLAlchemy URL."""
    async with _scratch_database(pg_server, "t", template_db) as url:
        yield url


@pytest.fixture
async def empty_database_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh database with no schema at all (migration tests)."""
    async with _scratch_database(pg_server, "e") as url:
        yield url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    """A connection pool on the test's database."""
    database = Database(database_url)
    yield database
    await database.close()


@pytest.fixture
def raw_url(database_url: str) -> str:
    """The test database as a plain ``postgresql://`` URL (for asyncpg and subprocesses)."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
def make_stages(tmp_path: Path) -> object:
    """``make_stages({...})`` writes workflows into a temporary stages dir and loads them."""

    def make(files: dict[str, str]) -> Registry:
        root = write_stages(tmp_path / f"stages_{uuid.uuid4().hex[:6]}", files)
        return load_workflows(root)

    return make


@pytest.fixture
def store_for(db: Database) -> object:
    """``store_for(registry, clock=...)``: a Store on the test database."""

    def make(registry: Registry, **kw: object) -> Store:
        return Store(db, registry, **kw)  # type: ignore[arg-type]

    return make
