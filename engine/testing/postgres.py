"""Throwaway databases for tests: one Postgres server per test session, a template database
migrated once, and a fresh copy of it per test (``CREATE DATABASE ... TEMPLATE``).

The server is flowbot's embedded Postgres, started under a short path in /tmp (unix socket paths
are limited to about 100 characters) and removed when the session ends; set
``FLOWBOT_TEST_DATABASE_URL`` to use another server instead (its user must be allowed to
``CREATE DATABASE``). Cloning a migrated template takes a few tens of milliseconds, so every test
starts from an empty, current schema without running migrations again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from engine.store import migrate
from engine.store.embedded import EmbeddedPostgres, sqlalchemy_url

#: The name of the migrated template database every test database is copied from.
TEMPLATE = "flowbot_template"
#: The environment variable naming a server to use instead of the embedded one.
EXTERNAL_ENV = "FLOWBOT_TEST_DATABASE_URL"


def raw_url(url: str, database: str = "postgres") -> str:
    """The asyncpg (libpq-style) URL for ``database`` on the server at ``url``."""
    from sqlalchemy.engine import make_url

    u = make_url(sqlalchemy_url(url)).set(database=database)
    return u.render_as_string(hide_password=False).replace("postgresql+asyncpg://", "postgresql://")


class TestPostgres:
    """A Postgres server for one test session and the databases cloned on it.

    ``start()`` (blocking) starts the embedded server unless ``FLOWBOT_TEST_DATABASE_URL`` is set;
    ``template()`` migrates the template once; ``database()`` is an async context manager giving a
    fresh copy's SQLAlchemy URL and dropping it afterwards.
    """

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, external: str | None = None) -> None:
        self.external = external if external is not None else os.environ.get(EXTERNAL_ENV) or None
        self.url: str | None = None
        self._server: EmbeddedPostgres | None = None
        self._pgdata: Path | None = None
        self._template: str | None = None

    def start(self) -> str:
        """Start the server (or adopt the external one); its URL."""
        if self.url is not None:
            return self.url
        if self.external:
            self.url = self.external
            return self.url
        self._pgdata = Path(f"/tmp/flowbot-test-{os.getpid()}-{uuid.uuid4().hex[:6]}") / "pg"
        self._server = EmbeddedPostgres(self._pgdata)
        self.url = self._server.start()
        return self.url

    def stop(self) -> None:
        """Stop the embedded server and remove its files (an external server is left alone)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._pgdata is not None:
            shutil.rmtree(self._pgdata.parent, ignore_errors=True)
            self._pgdata = None
        self.url = None

    def template(self) -> str:
        """The migrated template database (built on the first call; blocking: not in an event loop)."""
        if self._template is None:
            asyncio.run(self._build_template())
            self._template = TEMPLATE
        return self._template

    async def template_async(self) -> str:
        """``template()`` from async code."""
        if self._template is None:
            await self._build_template()
            self._template = TEMPLATE
        return self._template

    async def _build_template(self) -> None:
        server = self.start()
        conn = await asyncpg.connect(raw_url(server))
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
            await conn.execute(f"CREATE DATABASE {TEMPLATE}")
        finally:
            await conn.close()
        await migrate.upgrade(raw_url(server, TEMPLATE))

    @contextlib.asynccontextmanager
    async def database(self, prefix: str = "t", *, template: str | None = TEMPLATE) -> AsyncIterator[str]:
        """A database for one test (a copy of ``template``; empty when it is None), dropped after."""
        server = self.start()
        if template == TEMPLATE and self._template is None:
            raise RuntimeError("call template() once before asking for databases cloned from it")
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(raw_url(server))
        try:
            await conn.execute(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
        finally:
            await conn.close()
        try:
            yield sqlalchemy_url(raw_url(server, name))
        finally:
            conn = await asyncpg.connect(raw_url(server))
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            finally:
                await conn.close()
