"""flowbot's one HTTP server (aiohttp): the API, hooks, health, and what plugins mount (Slack).

Errors come back as JSON ``{"error": ...}`` with the right status; bodies over the limit are
refused with 413 before they are read whole. A database that cannot be reached is a 503 with
``Retry-After`` on every route (never a 4xx: senders retry a 503 and drop a 4xx).

``/healthz`` is liveness (the process serves and the database answers); ``/readyz`` is readiness
(the database answers and its schema is at this flowbot's migrations' head).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.errors import ConfigError, DatabaseError, DatabaseUnavailable, FlowbotError, Refused, SchemaNotReady
from engine.runtime.app import App
from engine.store import migrate

log = logging.getLogger(__name__)

APP_KEY: web.AppKey[App] = web.AppKey("flowbot", App)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Connections the kernel keeps waiting for ``accept`` (the listen backlog; Linux caps it at
#: ``net.core.somaxconn``, 4096 by default). aiohttp's default, 128, overflows when Slack sends
#: a burst while the event loop is busy answering the first requests of it: Linux then drops
#: the handshake and the client tries again only after a second (``bench/slack.py`` measured
#: ack p99 of 1,017-1,020 ms in 2 of about 90 bursts of 200).
LISTEN_BACKLOG = 1024

#: Seconds a client is asked to wait before retrying while the database is unavailable.
RETRY_AFTER_SECONDS = 2


def json_error(status: int, message: str, **extra: object) -> web.Response:
    """A JSON error response."""
    return web.json_response({"error": message, **extra}, status=status)


def unavailable(message: str = "the database is unavailable; try again shortly", **extra: object) -> web.Response:
    """503 with ``Retry-After``: the database cannot be reached (nothing was done)."""
    return web.json_response({"error": message, **extra}, status=503,
                             headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


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
    except DatabaseUnavailable:
        return unavailable()  # the cause is logged once per outage (engine.store.db), not sent
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
    """Liveness: 200 when the database answers, 503 with ``Retry-After`` otherwise."""
    if await request.app[APP_KEY].db.ping():
        return web.json_response({"ok": True})
    return unavailable(ok=False)


HEADS_KEY: web.AppKey[list[str]] = web.AppKey("migration_heads", list)


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 when the database answers and its schema is at the migrations' head; 503
    with the reason otherwise."""
    heads: list[str] = request.app[HEADS_KEY]
    try:
        await request.app[APP_KEY].db.check_schema(heads)
    except SchemaNotReady as exc:
        return unavailable(str(exc), ok=False)
    except DatabaseError:  # unreachable, or answering with errors
        return unavailable(ok=False)
    return web.json_response({"ok": True, "schema": heads})


def build_http_app(app: App) -> web.Application:
    """The aiohttp application: API, health, and every route plugins and triggers registered."""
    from engine.triggers.hooks.http import mount_hooks
    from engine.web import api, console, metrics

    http = web.Application(middlewares=[errors_middleware], client_max_size=app.settings.max_body_bytes)
    http[APP_KEY] = app
    http[HEADS_KEY] = migrate.heads()
    http.router.add_get("/healthz", healthz)
    http.router.add_get("/readyz", readyz)
    http.router.add_get("/metrics", metrics.handler(app))
    http.add_routes(app.routes)
    mount_hooks(http, app)
    http.add_subapp("/api", api.build(app))
    http.add_subapp("/console", console.build(app))
    for prefix, sub in app.subapps:
        http.add_subapp(prefix, sub)
    return http


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    """Why the server could not listen on ``host:port``, and what to do about it."""
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {host}:{port}: the port is already in use (another flowbot, or another "
                f"program); stop it or choose another port with --port or PORT")
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"cannot listen on {host}:{port}: this machine has no address {host} (check --host or FLOWBOT_HOST)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {host}:{port}: permission denied (ports below 1024 need privileges)"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"


async def serve(app: App, stop: asyncio.Event, *, host: str | None = None, port: int | None = None,
                ready: Callable[[int], None] | None = None) -> None:
    """Serve HTTP until ``stop`` is set."""
    runner = web.AppRunner(build_http_app(app), access_log=None, handle_signals=False)
    await runner.setup()
    host = host or app.settings.host
    port = app.settings.port if port is None else port
    site = web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(_bind_problem(host, port, exc)) from exc
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("http listening on %s", bound, extra={"action": "http_listen", "port": bound})
    if ready:
        ready(int(bound or 0))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
