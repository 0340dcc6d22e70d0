"""The explicit lifecycle of a flowbot process: open the database, load workflows, run parts.

Nothing happens at import. ``async with open_app(settings) as app`` starts the embedded Postgres
(when ``DATABASE_URL`` is unset) and migrates it, or checks a configured database's schema, loads
the workflows and builds the store; the entry point then runs the parts it wants (HTTP server,
workers, scheduler, outbox) with ``app.run_parts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.loader import Registry, load_workflows
from engine.runtime.outbox import OutboxHandler
from engine.runtime.plugins import load_plugins
from engine.settings import Settings
from engine.store import migrate
from engine.store.db import Database
from engine.store.embedded import EmbeddedPostgres
from engine.store.tasks import Clock, Store, utcnow

log = logging.getLogger(__name__)

Part = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass
class App:
    """One open flowbot: settings, database, workflows, store, and what plugins added."""

    settings: Settings
    db: Database
    registry: Registry
    store: Store
    database_url: str
    routes: list[web.RouteDef] = field(default_factory=list)
    subapps: list[tuple[str, web.Application]] = field(default_factory=list)
    outbox_handlers: dict[str, OutboxHandler] = field(default_factory=dict)
    #: Long-running parts added by plugins (Socket Mode...), started by `flowbot run`.
    background: list[Part] = field(default_factory=list)
    #: Called when a person must act (a form task was created); plugins subscribe.
    state: dict[str, Any] = field(default_factory=dict)
    #: Awaited by background work before it takes more (the worker, before each claim): a plugin
    #: answering people holds it back while answers are due (e.g. Slack acks), for a bounded time.
    background_gates: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: Awaited when the app closes, newest first, while the database is still open: plugins'
    #: work in progress (e.g. what Slack listeners do after their ack).
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add_routes(self, routes: list[web.RouteDef]) -> None:
        """Serve more routes from flowbot's HTTP server."""
        self.routes.extend(routes)

    def add_outbox_handler(self, kind: str, handler: OutboxHandler) -> None:
        """Deliver outbox effects of ``kind`` (e.g. ``slack.post``) with ``handler``."""
        self.outbox_handlers[kind] = handler

    def add_background(self, part: Part) -> None:
        """Run ``part(stop)`` alongside the server in `flowbot run`."""
        self.background.append(part)

    def add_background_gate(self, wait: Callable[[], Awaitable[None]]) -> None:
        """Make background work await ``wait()`` before it takes more (see ``background_gates``)."""
        self.background_gates.append(wait)

    def add_closer(self, close: Callable[[], Awaitable[None]]) -> None:
        """Await ``close()`` when the app closes (see ``closers``)."""
        self.closers.append(close)

    async def close(self) -> None:
        """Run the closers, newest first; one that fails is logged and the others still run."""
        for close in reversed(self.closers):
            try:
                await close()
            except Exception:
                log.exception("closing %r failed", close, extra={"action": "app_close_error"})

    async def background_gate(self) -> None:
        """Return once every gate lets background work go on."""
        for wait in self.background_gates:
            await wait()


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
        if embedded and migrate_embedded:
            await migrate.upgrade(url)
        db = Database(url, pool_size=pool_size)
        stack.push_async_callback(db.close)
        await db.check_schema(migrate.heads())
        registry = load_workflows(settings.stages_dir)
        store = Store(db, registry, lease_seconds=settings.lease_seconds, clock=clock)
        app = App(settings=settings, db=db, registry=registry, store=store, database_url=url)
        stack.push_async_callback(app.close)
        if load_plugins_:
            for plugin in load_plugins():
                await plugin.setup(app)
                stack.push_async_callback(plugin.close)
        yield app
