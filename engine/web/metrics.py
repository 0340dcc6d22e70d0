"""``GET /metrics``: Prometheus metrics (``engine.metrics``), behind the API's bearer token.

Served by flowbot's HTTP server, and, when ``FLOWBOT_METRICS_PORT`` is set, on that port by every
flowbot process (a `flowbot worker` has no HTTP server of its own), with the same token.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine import metrics
from engine.errors import DatabaseError
from engine.runtime.app import App, Part
from engine.store import queries

log = logging.getLogger(__name__)

#: Longest the scrape waits for its database query (the rest of the metrics are served anyway).
QUERY_TIMEOUT = 5.0


async def refresh(app: App) -> None:
    """Read the gauges that come from the database and the pool (scrape time)."""
    pool = app.db.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    checked_in = getattr(pool, "checkedin", None)
    if callable(checked_out) and callable(checked_in):
        metrics.set_pool(int(checked_out()), int(checked_in()))
    now = app.store.clock()

    async def read() -> tuple[object, list[object]]:
        async with app.db.transaction() as tx:
            row = await tx.fetch_one(queries.METRICS_TASKS, {"now": now})
            outbox = await tx.fetch_all(queries.METRICS_OUTBOX, {"now": now})
        return row, outbox  # type: ignore[return-value]

    try:
        row, outbox = await asyncio.wait_for(read(), QUERY_TIMEOUT)
    except (DatabaseError, TimeoutError) as exc:
        log.warning("metrics: database gauges not read: %s", exc or "timed out", extra={"action": "metrics_error"})
        metrics.set_database(None, [], now)
        return
    metrics.set_database(row, outbox, now)  # type: ignore[arg-type]


def handler(app: App) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``/metrics`` handler for ``app`` (401 without the API's bearer token)."""
    token = app.settings.resolve_api_token()
    assert token

    async def serve_metrics(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            return web.json_response(
                {"error": "missing or wrong bearer token (Authorization: Bearer <FLOWBOT_API_TOKEN>)"},
                status=401, headers={"WWW-Authenticate": "Bearer"})
        await refresh(app)
        return web.Response(body=metrics.exposition(), headers={"Content-Type": metrics.CONTENT_TYPE})

    return serve_metrics


def metrics_part(app: App) -> Part:
    """Serve ``/metrics`` alone on ``FLOWBOT_METRICS_PORT`` until stopped."""

    async def part(stop: asyncio.Event) -> None:
        http = web.Application()
        http.router.add_get("/metrics", handler(app))
        runner = web.AppRunner(http, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, app.settings.host, app.settings.metrics_port)
        await site.start()
        log.info("metrics on port %s", app.settings.metrics_port,
                 extra={"action": "metrics_listen", "port": app.settings.metrics_port})
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    return part
