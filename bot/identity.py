"""Who flowbot is in Slack: one ``auth.test`` for the process, asked at start.

``BotIdentity.authorize`` is the Bolt app's ``authorize`` (``bot.app.build_bolt``);
``identity_part`` asks at the start of ``flowbot run`` and logs the answer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

log = logging.getLogger(__name__)


class BotIdentity:
    """Who flowbot is in Slack: one ``auth.test`` answer shared by every request of the process.

    Bolt's own single-workspace authorization calls ``auth.test`` on the first request and keeps
    the answer, but every request that arrives before that answer calls it too: a burst right
    after a start made as many calls as requests, each a new HTTPS connection, and every ack
    waited on them. Here the first caller asks and the others wait for its answer; ``flowbot
    run`` asks at start (``identity_part``), so requests find the answer ready and a refused
    token shows in the log right away. A failed ``auth.test`` is not kept: the next request
    asks again (Bolt answers the failed one with its "please reinstall" error).
    """

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._answer: AsyncSlackResponse | None = None
        self._asking = asyncio.Lock()

    async def auth_test(self) -> AsyncSlackResponse:
        """The ``auth.test`` answer (asked once; raises SlackApiError when the token is refused)."""
        if self._answer is None:
            async with self._asking:
                if self._answer is None:
                    self._answer = await self.client.auth_test()
        return self._answer

    async def authorize(self, user_id: str | None = None) -> AuthorizeResult:
        """Bolt's ``authorize``: the bot token with what ``auth.test`` said about it."""
        answer = await self.auth_test()
        return AuthorizeResult(
            enterprise_id=answer.get("enterprise_id"), team_id=answer.get("team_id"), team=answer.get("team"),
            url=answer.get("url"), bot_id=answer.get("bot_id"), bot_user_id=answer.get("user_id"),
            bot_token=self.client.token, bot_scopes=answer.headers.get("x-oauth-scopes"), user_id=user_id)


def identity_part(identity: BotIdentity) -> Any:
    """A background part of ``flowbot run``: ask ``auth.test`` at start and say who flowbot is in
    Slack, or why Slack refused its token."""

    async def part(stop: asyncio.Event) -> None:
        try:
            answer = await identity.auth_test()
        except SlackApiError as exc:
            log.error("slack: the bot token was refused (auth.test: %s); check SLACK_BOT_TOKEN",
                      exc.response.get("error"), extra={"action": "slack_token_refused"})
        except Exception as exc:  # Slack unreachable: requests will ask again
            log.warning("slack: auth.test failed: %s", exc, extra={"action": "slack_auth_test_failed"})
        else:
            log.info("slack: signed in as %s to %s", answer.get("user"), answer.get("team"),
                     extra={"action": "slack_identity"})
        await stop.wait()

    return part
