"""Shared fixtures: a real Postgres (the embedded one), a fresh migrated database per test.

One embedded server per test session; a template database migrated once; each test that asks for
``database_url`` gets its own copy (``CREATE DATABASE ... TEMPLATE``), so tests never see each
other's rows. The code is the test kit's (``engine.testing.postgres``), which workflow authors get
with flowbot. Set ``FLOWBOT_TEST_DATABASE_URL`` to use another server (it must allow CREATE
DATABASE).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.loader import Registry, load_workflows
from engine.store.db import Database
from engine.store.tasks import Store
from engine.testing.postgres import TestPostgres

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support import write_stages  # noqa: E402  (tests import it from here too)

#: Slack fixtures (fake_slack, slack_app) for the Slack integration tests; PgBouncer (pgbouncer)
#: for the tests under tests/pooler.
pytest_plugins = ["tests.slack", "tests.pgbouncer"]

# The session's Postgres server is the test kit's ``flowbot_postgres`` fixture (the pytest plugin
# installed with flowbot, engine/testing/plugin.py): the kit's ``flow`` and these fixtures share it.


@pytest.fixture(scope="session")
def pg_server(flowbot_postgres: TestPostgres) -> str:
    """The URL of a running Postgres server for the whole session."""
    assert flowbot_postgres.url is not None
    return flowbot_postgres.url


@pytest.fixture(scope="session")
def template_db(flowbot_postgres: TestPostgres) -> str:
    """A database migrated to head once; every test database is cloned from it."""
    return flowbot_postgres.template()


@pytest.fixture
async def database_url(flowbot_postgres: TestPostgres, template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test (dropped afterwards); a SQLAlchemy URL."""
    async with flowbot_postgres.database("t", template=template_db) as url:
        yield url


@pytest.fixture
async def empty_database_url(flowbot_postgres: TestPostgres) -> AsyncIterator[str]:
    """A fresh database with no schema at all (migration tests)."""
    async with flowbot_postgres.database("e", template=None) as url:
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
