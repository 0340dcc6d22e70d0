"""Schema migrations through Alembic, the only way flowbot's schema changes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from engine.store import dburl
from engine.store.db import wrap_exceptions
from engine.store.embedded import sqlalchemy_url

ROOT = Path(__file__).resolve().parents[2]


def alembic_config(url: str | None = None) -> Config:
    """The project's Alembic configuration, pointed at ``url``."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    if url:
        cfg.attributes["url"] = sqlalchemy_url(url)
    return cfg


def heads() -> list[str]:
    """The revision(s) this flowbot's code expects the database to be at."""
    return list(ScriptDirectory.from_config(alembic_config()).get_heads())


async def upgrade(url: str, revision: str = "heads") -> None:
    """``alembic upgrade heads`` on the database at ``url`` (safe to call when up to date)."""
    await _run(url, "upgrade", revision)


async def downgrade(url: str, revision: str) -> None:
    """``alembic downgrade`` to ``revision`` (``base`` drops everything)."""
    await _run(url, "downgrade", revision)


async def _run(url: str, action: str, revision: str) -> None:
    target = dburl.parse(url)
    engine = create_async_engine(target.url, connect_args=target.connect_args())
    cfg = alembic_config(target.url)

    def go(connection: object) -> None:
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)

    try:
        with wrap_exceptions():  # unreachable database: one line, no traceback
            async with engine.begin() as conn:
                # Serialise concurrent `flowbot run` starts migrating the same database.
                await conn.execute(text("SELECT pg_advisory_xact_lock(727274)"))
                await conn.run_sync(go)
    finally:
        await engine.dispose()
