"""What a person is told where they clicked when their action did not take effect (refused, or
not recorded because flowbot cannot reach its database)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from bot import messages, modals
from bot.context import BotContext
from engine.errors import DatabaseUnavailable
from engine.people import actions as people


async def tell(ctx: BotContext, body: dict[str, Any], text: str) -> None:
    """An ephemeral answer where the person clicked; a notice modal when there is no channel
    (a button in a view, e.g. the Home tab)."""
    user = body["user"]["id"]
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
    if channel:
        await ctx.client.chat_postEphemeral(channel=channel, user=user, text=text)
    elif body.get("trigger_id"):
        await ctx.client.views_open(trigger_id=body["trigger_id"],
                                    view=modals.notice_view(messages.NOTICE_TITLE, text))


async def or_try_again(ctx: BotContext, body: dict[str, Any], work: Awaitable[object]) -> None:
    """Await a button's work; if the database is unreachable, tell the person to try again."""
    try:
        await work
    except DatabaseUnavailable:
        await tell(ctx, body, messages.try_again())


def try_again_answer(view: dict[str, Any]) -> dict[str, Any]:
    """The answer to a submission that could not be recorded (the database is unreachable): the
    modal stays open with the message on its first input, else a notice on top of it."""
    inputs = [b["block_id"] for b in view.get("blocks") or [] if b.get("type") == "input" and b.get("block_id")]
    if inputs:
        return {"response_action": "errors", "errors": {inputs[0]: messages.try_again()}}
    return {"response_action": "push", "view": modals.notice_view(messages.NOTICE_TITLE, messages.try_again())}


def refusal(result: people.Result) -> str:
    """What to tell a person whose action did not take effect."""
    if result.status == people.ALREADY:
        if result.message == "claimed":
            return messages.already_claimed(result.by)
        return messages.already_done(result.by, result.at)
    if result.status == people.FORBIDDEN:
        assignee = (result.task or {}).get("assignee") or {}
        if assignee.get("team") and not assignee.get("claimed_by"):
            return messages.not_member(assignee["team"])
        return messages.not_assignee(_named(assignee.get("users") or []))
    if result.status == people.FAILED:
        return messages.stage_failed(result.message)
    return messages.gone(result.message)


def _named(users: list[str]) -> list[str]:
    return [f"<@{u}>" if u[:1] in ("U", "W") and "@" not in u else u for u in users]
