"""The Bolt app and its transports: HTTP mode at ``POST /slack/events``, Socket Mode on request.

``build_bolt`` creates one ``slack_bolt`` AsyncApp on flowbot's Web API client (which honours
``SLACK_API_URL``) and lets every listener module register itself. Slack wants an answer
within 3 seconds, so listeners ``ack()`` first (a submission's validation errors ride on its
ack) and hand slow work to ``ctx.follow_ups``, which runs it after the response is sent. Bolt
runs with ``process_before_response=True``, answering when the listener returns (see
``bot.acks`` for why not its default mode).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.acks import Priority
from bot.context import BotContext

log = logging.getLogger(__name__)

#: Listener modules; each defines ``register(bolt, ctx)``. A module not installed yet is skipped.
HANDLER_MODULES: list[str] = ["bot.interactions", "bot.commands", "bot.home", "bot.reminders"]

#: Where Slack sends events, slash commands and interactivity in HTTP mode.
EVENTS_PATH = "/slack/events"


def build_bolt(ctx: BotContext) -> AsyncApp:
    """The Bolt app with every listener module registered."""
    settings = ctx.settings
    bolt = AsyncApp(
        name="flowbot",
        client=ctx.client,
        signing_secret=settings.slack_signing_secret or "",
        # Socket Mode alone has no signing secret: its requests come over the authenticated socket.
        request_verification_enabled=bool(settings.slack_signing_secret),
        process_before_response=True,  # listeners return right after their ack (bot.acks)
        logger=logging.getLogger("flowbot.slack"),
    )
    for name in HANDLER_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            log.debug("slack: listener module %s is not there; skipped", name)
            continue
        module.register(bolt, ctx)
    return bolt


class FirstAuthorization(AsyncMiddleware):
    """Requests enter Bolt one at a time until one of them has been authorized.

    Bolt's single-workspace authorization calls ``auth.test`` for the first request and keeps
    the answer; but every request arriving before that answer calls it too. A burst right after
    a start (a restart under load) made as many ``auth.test`` calls as requests, each a new HTTPS
    connection, and every ack waited on them. So the first request goes in alone; the others
    follow once it has passed authorization (this middleware, registered after Bolt's own, is
    reached) or once its dispatch ends without that (a bad signature, a failed ``auth.test``:
    the next one tries). Afterwards this costs one flag check per request.
    """

    def __init__(self) -> None:
        self.authorized = asyncio.Event()
        self._one_at_a_time = asyncio.Lock()

    async def async_process(self, *, req: AsyncBoltRequest, resp: BoltResponse,
                            next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse | None:
        found = req.context.authorize_result
        if found is not None and (found.bot_token or found.user_token):  # auth.test answered
            self.authorized.set()
        return await next()

    async def dispatch(self, bolt: AsyncApp, request: AsyncBoltRequest) -> BoltResponse:
        """``bolt.async_dispatch(request)``, behind the gate until the first authorization."""
        if self.authorized.is_set():
            return await bolt.async_dispatch(request)
        async with self._one_at_a_time:
            dispatching = asyncio.ensure_future(bolt.async_dispatch(request))
            if not self.authorized.is_set():
                passed = asyncio.ensure_future(self.authorized.wait())
                try:
                    await asyncio.wait({dispatching, passed}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    passed.cancel()
        return await dispatching


def http_routes(bolt: AsyncApp, priority: Priority | None = None) -> list[web.RouteDef]:
    """``POST /slack/events``: Slack's signed requests handed to Bolt (it answers 401 to a bad
    signature or a timestamp older than five minutes). Each request is ``priority.urgent``
    until answered: after-ack work waits for the acks of a burst."""
    gate = FirstAuthorization()
    bolt.use(gate)
    priority = priority or Priority()

    async def events(request: web.Request) -> web.Response:
        with priority.urgent():
            response = await gate.dispatch(bolt, await to_bolt_request(request))
            return await to_aiohttp_response(response)

    return [web.post(EVENTS_PATH, events)]


def socket_mode_part(bolt: AsyncApp, app_token: str) -> Any:
    """A background part running Socket Mode (no public URL needed) until ``stop`` is set."""

    async def part(stop: asyncio.Event) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(bolt, app_token)
        await handler.connect_async()
        log.info("slack: Socket Mode connected", extra={"action": "slack_socket_mode"})
        try:
            await stop.wait()
        finally:
            await handler.close_async()

    return part
