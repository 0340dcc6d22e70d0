"""The Slack app as a flowbot plugin (entry point ``flowbot.plugins: slack``).

``setup`` mounts ``POST /slack/events``, registers the outbox handlers that deliver DMs, cards
and ``ctx.slack`` messages, and adds Socket Mode as a background part when ``SLACK_APP_TOKEN`` is
set. Without Slack settings flowbot runs without it and says so once.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot import messages

if TYPE_CHECKING:
    from engine.runtime.app import App

log = logging.getLogger(__name__)

#: ``app.state`` keys where the set-up Slack app lives (tests and other modules read them).
STATE_CONTEXT = "slack.context"
STATE_BOLT = "slack.bolt"


class SlackPlugin:
    """flowbot's Slack app."""

    name = "slack"

    def __init__(self) -> None:
        self._said_off = False

    def add_commands(self, subparsers: Any, settings_factory: Callable[[argparse.Namespace], Any]) -> None:
        """``flowbot slack manifest [--url URL] [--name NAME] [--socket-mode]``."""
        slack = subparsers.add_parser("slack", help="the Slack app (manifest)")
        sub = slack.add_subparsers(dest="slack_command", required=True)
        p = sub.add_parser("manifest", help="print the Slack app manifest (JSON) to paste at api.slack.com/apps")
        p.add_argument("--url", help="flowbot's public base URL (HTTP mode); without it: Socket Mode")
        p.add_argument("--name", default="flowbot", help="the app's name in Slack")
        p.add_argument("--socket-mode", action="store_true", help="Socket Mode even with --url")
        p.set_defaults(func=cmd_manifest)

    async def setup(self, app: App) -> None:
        """Wire the Slack app into an opened flowbot (or say once that Slack is off)."""
        settings = app.settings
        if not settings.slack_enabled:
            if not self._said_off:
                self._said_off = True
                log.info(messages.SLACK_OFF, extra={"action": "slack_off"})
            return
        from bot import app as bot_app
        from bot import delivery, modals
        from bot.acks import deferring
        from bot.context import make_context
        from bot.endpoint import EVENTS_PATH, SlackEndpoint
        from bot.identity import identity_part
        from engine.ops.base import DIRECTORY_STATE

        modals.check_forms_or_raise(app.registry)
        ctx = make_context(app)
        # Operations on every edge of this process (API, CLI through it) resolve Slack's teams
        # and people through the Slack app's directory.
        app.state[DIRECTORY_STATE] = ctx.directory
        # Delivery handlers first: listener modules may wrap them (bot.home refreshes Home tabs).
        for kind, handler in delivery.handlers(ctx).items():
            app.add_outbox_handler(kind, handler)
        bolt = bot_app.build_bolt(ctx)
        # Outermost: every delivery (cards, Home tabs, reminders) lets pending acks go out first.
        for kind, handler in list(app.outbox_handlers.items()):
            app.add_outbox_handler(kind, deferring(ctx.priority, handler))
        app.add_background_gate(ctx.priority.quiet)  # the worker's next claim, too
        if settings.slack_signing_secret:
            from bot.interactions import opens_a_modal

            endpoint = SlackEndpoint(bolt, settings.slack_signing_secret, ctx.follow_ups, ctx.view_answers,
                                     at_once=opens_a_modal)
            app.add_routes(endpoint.routes())
        app.add_background(identity_part(ctx.identity))  # auth.test at start
        if settings.slack_app_token:
            app.add_background(bot_app.socket_mode_part(bolt, settings.slack_app_token))
        app.add_closer(ctx.follow_ups.close)  # what listeners do after their ack
        app.state[STATE_CONTEXT] = ctx
        app.state[STATE_BOLT] = bolt
        mode = "Socket Mode" if settings.slack_app_token else f"HTTP mode at {EVENTS_PATH}"
        log.info("slack: on (%s)", mode, extra={"action": "slack_on"})

    async def close(self) -> None:
        """Nothing to release here: the Slack app's connections and work in progress close with
        the app (``App.add_closer``)."""


def cmd_manifest(args: argparse.Namespace) -> int:
    """Print the manifest."""
    from bot.manifest import manifest

    socket = True if args.socket_mode else None
    if args.url is not None:
        check_public_url(args.url)
    print(json.dumps(manifest(url=args.url, name=args.name, socket_mode=socket), indent=2))
    return 0


def check_public_url(url: str) -> None:
    """Refuse a ``--url`` Slack cannot call: Slack sends events only to https URLs with a host."""
    from urllib.parse import urlsplit

    from engine.errors import ConfigError

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"--url must be flowbot's public https URL (like https://flowbot.example.com), "
                          f"got {url!r}: Slack sends requests only to https")


plugin = SlackPlugin()
