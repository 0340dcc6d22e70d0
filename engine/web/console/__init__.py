"""The web console under ``/console``: an inbox and web forms for people, a board, run pages,
workflows, tasks and the outbox for operators, sign-in by one-time link or OpenID Connect.

Server-rendered (Jinja2 through aiohttp-jinja2, autoescaping on), a little plain JavaScript that
only enhances pages, live board updates by Server-Sent Events. Every page has a JSON twin
(``?format=json``). Every state change goes through the engine's own actions.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from engine.errors import DatabaseError
from engine.runtime.app import App
from engine.web.console import acting, people_pages, render
from engine.web.console.ratelimit import RateLimiter
from engine.web.console.session import SIGNER_KEY, Signer, middleware

log = logging.getLogger(__name__)

#: Sign-in attempts allowed per address and per email in this window (seconds).
SIGNIN_LIMIT, SIGNIN_WINDOW = 10, 900.0


@web.middleware
async def unavailable(request: web.Request, handler: Any) -> web.StreamResponse:
    """A database that does not answer is a 503 with Retry-After (never a 4xx), said in a line."""
    try:
        return await handler(request)
    except DatabaseError as exc:
        log.warning("console: database unavailable: %s", exc, extra={"action": "console_db_unavailable"})
        if render.wants_json(request):
            return web.json_response({"error": "the database is not answering; try again shortly"}, status=503,
                                     headers={"Retry-After": "5"})
        return web.Response(status=503, headers={"Retry-After": "5"}, content_type="text/html",
                            text="<!doctype html><title>flowbot</title><h1>flowbot is unavailable</h1>"
                                 "<p>The database is not answering. Try again in a few seconds.</p>")


def build(app: App) -> web.Application:
    """The ``/console`` sub-application."""
    from engine.web.console import actions, ops_pages

    signer = Signer(app.settings.resolve_secret_key())
    console = web.Application(middlewares=[unavailable, middleware(signer)],
                              client_max_size=app.settings.max_body_bytes)
    console[SIGNER_KEY] = signer
    console[acting.APP_KEY] = app
    render.setup(console)
    console[people_pages.LIMITS_KEY] = RateLimiter(SIGNIN_LIMIT, SIGNIN_WINDOW)
    console.add_routes(people_pages.routes)
    console.add_routes(ops_pages.routes)
    console.add_routes(actions.routes)
    ops_pages.setup(console, app)
    if app.settings.oidc_enabled:
        from engine.web.console.oidc import routes as oidc_routes

        console.add_routes(oidc_routes)
    return console
