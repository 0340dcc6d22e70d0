"""What a person is told where they clicked when their action did not take effect (refused, or
not recorded because flowbot cannot reach its database)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

from bot import messages, modals
from bot.context import USER_ID_RE, BotContext
from engine.errors import DatabaseUnavailable
from engine.people import actions as people

log = logging.getLogger(__name__)


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


async def refusal(ctx: BotContext, result: people.Result, user: str) -> str:
    """What to tell ``user``, whose action did not take effect."""
    if result.status == people.ALREADY:
        if result.message == "claimed":
            return messages.claimed_by_you() if result.by == user else messages.already_claimed(result.by)
        if result.message == people.TIMED_OUT:
            return messages.timed_out_before_you(result.at)
        if result.message == people.DECIDED:
            return messages.already_decided()
        if result.by == user:
            # Their own earlier answer (a click delivered twice, a double click) completed it.
            return messages.already_yours(result.at)
        return messages.already_done(result.by, result.at)
    if result.status == people.FORBIDDEN and result.message == people.SELF_APPROVAL:
        return messages.self_approval()
    if result.status == people.FORBIDDEN:
        assignee = (result.task or {}).get("assignee") or {}
        if assignee.get("team") and not assignee.get("claimed_by"):
            return messages.not_member(assignee["team"])
        return messages.not_assignee(await _named(ctx, assignee.get("users") or []))
    if result.status == people.FAILED:
        return messages.stage_failed(result.message)
    return messages.gone(result.message)


async def _named(ctx: BotContext, users: list[str]) -> list[str]:
    """The assignees as Slack mentions where they resolve to a user (emails as they are else)."""
    named = []
    for entry in users:
        try:
            who = await ctx.directory.identity(entry)
        except Exception:  # Slack unreachable: the answer still goes, with the email
            log.warning("could not resolve %s for an answer", entry, exc_info=True,
                        extra={"action": "refusal_name_unresolved"})
            who = entry
        named.append(f"<@{who}>" if USER_ID_RE.match(who) else who)
    return named
