"""The Bolt app and its transports: HTTP mode at ``POST /slack/events`` (``bot.endpoint``),
Socket Mode on request.

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
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

from bot.context import BotContext
from bot.identity import BotIdentity

log = logging.getLogger(__name__)

#: Listener modules; each defines ``register(bolt, ctx)``. A module not installed yet is skipped.
HANDLER_MODULES: list[str] = ["bot.interactions", "bot.commands", "bot.home", "bot.reminders"]


def new_bolt(identity: BotIdentity) -> AsyncApp:
    """A Bolt app without listeners, set up as flowbot's: authorized by ``identity`` (one
    ``auth.test`` for the process), answering when a listener returns (listeners ack, then hand
    slow work to ``bot.acks.FollowUps``). It does not check signatures: in HTTP mode flowbot's
    endpoint (``bot.endpoint``) has checked them before Bolt sees a request, and Socket Mode's
    requests come over the authenticated socket."""

    async def authorize(user_id: str | None = None) -> AuthorizeResult:
        # A plain function: Bolt passes what its parameters name (a method's "self" confuses it).
        return await identity.authorize(user_id)

    client = identity.client
    return AsyncApp(
        name="flowbot",
        # Bolt gives each request a client of its own with the token ``authorize`` returns.
        client=AsyncWebClient(base_url=client.base_url, timeout=client.timeout, session=client.session),
        authorize=authorize,
        signing_secret="",
        request_verification_enabled=False,
        process_before_response=True,
        logger=logging.getLogger("flowbot.slack"),
    )


def build_bolt(ctx: BotContext) -> AsyncApp:
    """flowbot's Bolt app (``new_bolt``) with every listener module registered."""
    bolt = new_bolt(ctx.identity)
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
