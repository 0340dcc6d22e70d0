"""The Bolt app and its transports: HTTP mode at ``POST /slack/events``, Socket Mode on request.

``build_bolt`` creates one ``slack_bolt`` AsyncApp on flowbot's Web API client (which honours
``SLACK_API_URL``) and lets every listener module register itself. ``process_before_response``
stays False: in HTTP mode Slack wants an answer within 3 seconds, so listeners ``ack()`` first
(validation errors ride on the ack) and slow work continues after the response is sent.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

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
        process_before_response=False,
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


def http_routes(bolt: AsyncApp) -> list[web.RouteDef]:
    """``POST /slack/events``: Slack's signed requests handed to Bolt (it answers 401 to a bad
    signature or a timestamp older than five minutes)."""

    async def events(request: web.Request) -> web.Response:
        response = await bolt.async_dispatch(await to_bolt_request(request))
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
