"""``App``: one open flowbot (settings, database, workflows, store) and what plugins add to it.

``engine.runtime.lifecycle.open_app`` builds it; plugins (``engine.runtime.plugins``) receive it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from engine.loader import Registry
from engine.runtime.outbox import OutboxHandler
from engine.settings import Settings
from engine.store.db import Database
from engine.store.tasks import Store

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
