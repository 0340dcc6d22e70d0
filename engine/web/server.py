"""flowbot's one HTTP server (aiohttp): the API, hooks, health, and what plugins mount (Slack).

Errors come back as JSON ``{"error": ...}`` with the right status; bodies over the limit are
refused with 413 before they are read whole.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.errors import DatabaseError, FlowbotError, Refused
from engine.runtime.app import App

log = logging.getLogger(__name__)

APP_KEY: web.AppKey[App] = web.AppKey("flowbot", App)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Connections the kernel keeps waiting for ``accept`` (the listen backlog; Linux caps it at
#: ``net.core.somaxconn``, 4096 by default). aiohttp's default, 128, overflows when Slack sends
#: a burst while the event loop is busy answering the first requests of it: Linux then drops
#: the handshake and the client tries again only after a second (``bench/slack.py`` measured
#: ack p99 of 1,017-1,020 ms in 2 of about 90 bursts of 200).
LISTEN_BACKLOG = 1024


def json_error(status: int, message: str, **extra: object) -> web.Response:
    """A JSON error response."""
    return web.json_response({"error": message, **extra}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; never leak a traceback to the client."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return json_error(413, f"request body over the {request.app[APP_KEY].settings.max_body_bytes}-byte limit")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except DatabaseError as exc:
        # The database is down or unreachable: a client should come back, not fix its request.
        log.warning("database unavailable: %s", exc, extra={"action": "http_db_unavailable"})
        return web.json_response({"error": "the database is unavailable; try again shortly"}, status=503,
                                 headers={"Retry-After": "5"})
    except Refused as exc:
        # A refused operation changed nothing: its status says why (404, 403, 409, 422).
        return json_error(exc.status, str(exc), **exc.extra)
    except FlowbotError as exc:
        return json_error(400, str(exc))
    except Exception:
        correlation = uuid.uuid4().hex[:12]
        log.exception("unhandled error (correlation id %s)", correlation, extra={"action": "http_error"})
        return json_error(500, "internal error", correlation_id=correlation)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database answers, 503 otherwise."""
    ok = await request.app[APP_KEY].db.ping()
    return web.json_response({"ok": ok}, status=200 if ok else 503)


def build_http_app(app: App) -> web.Application:
    """The aiohttp application: API, health, and every route plugins and triggers registered."""
    from engine.triggers.hooks.http import mount_hooks
    from engine.web import api

    http = web.Application(middlewares=[errors_middleware], client_max_size=app.settings.max_body_bytes)
    http[APP_KEY] = app
    http.router.add_get("/healthz", healthz)
    http.add_routes(app.routes)
    mount_hooks(http, app)
    http.add_subapp("/api", api.build(app))
    for prefix, sub in app.subapps:
        http.add_subapp(prefix, sub)
    return http


async def serve(app: App, stop: asyncio.Event, *, host: str | None = None, port: int | None = None,
                ready: Callable[[int], None] | None = None) -> None:
    """Serve HTTP until ``stop`` is set."""
    runner = web.AppRunner(build_http_app(app), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host or app.settings.host, app.settings.port if port is None else port,
                       backlog=LISTEN_BACKLOG)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("http listening on %s", bound, extra={"action": "http_listen", "port": bound})
    if ready:
        ready(int(bound or 0))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
