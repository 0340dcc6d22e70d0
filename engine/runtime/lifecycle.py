"""The explicit lifecycle of a flowbot process: open the database, load workflows, run parts.

Nothing happens at import. ``async with open_app(settings) as app`` starts the embedded Postgres
(when ``DATABASE_URL`` is unset) and migrates it, or checks a configured database's schema, loads
the workflows, builds the store and sets up the plugins; the entry point then runs the parts it
wants (HTTP server, workers, scheduler, outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from engine.loader import load_workflows
from engine.runtime.app import App
from engine.runtime.plugins import load_plugins
from engine.settings import Settings
from engine.store import migrate, problems
from engine.store.db import Database
from engine.store.embedded import EmbeddedPostgres
from engine.store.tasks import Clock, Store, utcnow

log = logging.getLogger(__name__)


async def database_url(settings: Settings, stack: contextlib.AsyncExitStack) -> tuple[str, bool]:
    """The database to use, and whether it is the embedded one (started here if so)."""
    if settings.database_url:
        return settings.database_url, False
    pg = EmbeddedPostgres(settings.home / "pg")
    url = await asyncio.to_thread(pg.start)
    stack.callback(pg.stop)
    return url, True


@contextlib.asynccontextmanager
async def open_app(settings: Settings, *, clock: Clock = utcnow, load_plugins_: bool = True,
                   migrate_embedded: bool = True, pool_size: int = 10) -> AsyncIterator[App]:
    """Open everything a flowbot process needs; close it all on exit."""
    async with contextlib.AsyncExitStack() as stack:
        url, embedded = await database_url(settings, stack)
        with problems.explained(url, embedded=embedded):
            if embedded and migrate_embedded:
                await migrate.upgrade(url)
            db = Database(url, pool_size=pool_size, listen_url=settings.listen_url)
            stack.push_async_callback(db.close)
            if db.poll_only:
                log.warning("database: a transaction-mode pooler (pool_mode=transaction) and no FLOWBOT_LISTEN_URL: "
                            "poll-only mode, idle workers and the outbox look for work every %g s "
                            "(set FLOWBOT_LISTEN_URL to a direct connection for instant wake-ups)",
                            settings.poll_interval, extra={"action": "db_poll_only"})
            await db.check_schema(migrate.heads())
        registry = load_workflows(settings.stages_dir)
        store = Store(db, registry, lease_seconds=settings.lease_seconds, clock=clock,
                      event_lookback=settings.event_lookback)
        app = App(settings=settings, db=db, registry=registry, store=store, database_url=url)
        stack.push_async_callback(app.close)
        if load_plugins_:
            for plugin in load_plugins():
                await plugin.setup(app)
                stack.push_async_callback(plugin.close)
        yield app
