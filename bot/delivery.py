"""Outbox handlers: what the Slack app does with effects after they are committed.

``slack.post`` / ``slack.dm``: a stage's messages. ``form.assigned``: a form task needs a person
(DM each assignee a card, or post a Claim card for a team). ``form.completed`` /
``form.claimed``: update the task's cards in place, buttons removed (a reassignment's
``form.handover`` is delivered by ``bot.reminders``: old cards resolved, then the new card sent).
A 429 becomes ``RetryLater`` after Retry-After; errors retrying cannot fix become
``PermanentFailure`` (recorded on the effect and its task by the dispatcher).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

from slack_sdk.errors import SlackApiError

from bot import messages, store
from bot.blocks import button
from bot.cards import (
    ACTIONS_BLOCK,
    approval_message_blocks,
    assignment_message_blocks,
    form_facts,
    form_text,
    resolved_message_blocks,
)
from bot.context import USER_ID_RE, BotContext, UserGroupNotFound, UserNotFound, is_channel
from engine.errors import TaskNotFound
from engine.forms import Approval, Form
from engine.people import actions as people
from engine.people import links, mail, quorum
from engine.runtime.outbox import OutboxHandler, PermanentFailure, RetryLater
from engine.runtime.runner import task_of
from engine.store import deadlines
from engine.store.db import Row

log = logging.getLogger(__name__)

ACTION_CLAIM = "flowbot_claim"
#: A console sign-in link asked for on the sign-in page or by ``/flowbot login``, sent by DM
#: (``{"to": email or Slack user id}``).
CONSOLE_SIGNIN = "console.signin"

#: Slack errors a retry will not fix.
PERMANENT = {
    "channel_not_found", "not_in_channel", "is_archived", "users_not_found", "user_not_found",
    "user_disabled", "account_inactive", "cannot_dm_bot", "invalid_auth", "not_authed", "missing_scope",
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "no_text", "no_such_subteam",
    "token_revoked", "restricted_action", "message_not_found", "cant_update_message", "invalid_arguments",
    "not_allowed_token_type", "team_access_not_granted",
}


@contextlib.asynccontextmanager
async def slack_errors(what: str) -> AsyncIterator[None]:
    """Translate Web API failures into the outbox's RetryLater / PermanentFailure."""
    try:
        yield
    except SlackApiError as exc:
        status = getattr(exc.response, "status_code", 200)
        error = str(exc.response.get("error") or f"HTTP {status}")
        if status == 429 or error == "ratelimited":
            retry = (exc.response.headers or {}).get("Retry-After") or (exc.response.headers or {}).get("retry-after")
            raise RetryLater(f"{what}: rate limited", delay=float(retry or 1)) from None
        if error in PERMANENT:
            raise PermanentFailure(f"{what}: {error}") from None
        raise RetryLater(f"{what}: {error}", delay=5.0) from None
    except UserNotFound as exc:
        raise PermanentFailure(f"{what}: no Slack user with the email {exc.args[0]!r}") from None
    except UserGroupNotFound as exc:
        raise PermanentFailure(f"{what}: no Slack user group {exc.args[0]!r}") from None


def _msg_args(payload: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"text": payload.get("text") or ""}
    if payload.get("blocks"):
        args["blocks"] = payload["blocks"]
    return args


def handlers(bctx: BotContext) -> dict[str, OutboxHandler]:
    """Every outbox kind the Slack app delivers, with its handler."""

    async def post(row: dict[str, Any]) -> dict[str, Any]:
        p = row["payload"]
        async with slack_errors(f"posting to {p.get('channel')}"):
            extra = {"thread_ts": p["thread_ts"]} if p.get("thread_ts") else {}
            resp = await bctx.client.chat_postMessage(channel=p["channel"], **_msg_args(p), **extra)
        return {"channel": resp.get("channel"), "ts": resp.get("ts")}

    async def dm(row: dict[str, Any]) -> dict[str, Any]:
        p = row["payload"]
        async with slack_errors(f"DM to {p.get('user')}"):
            channel = await open_dm(bctx, await bctx.resolver.user_id(p["user"]))
            resp = await bctx.client.chat_postMessage(channel=channel, **_msg_args(p))
        return {"channel": resp.get("channel"), "ts": resp.get("ts")}

    async def assigned(row: dict[str, Any]) -> dict[str, Any]:
        return await deliver_assignment(bctx, int(row["payload"]["task_id"]))

    async def completed(row: dict[str, Any]) -> dict[str, Any]:
        p = row["payload"]
        at = _at(row)
        return await update_cards(bctx, int(p["task_id"]),
                                  messages.outcome_line(p.get("answers") or {}, p["by"], at))

    async def claimed(row: dict[str, Any]) -> dict[str, Any]:
        p = row["payload"]
        return await update_cards(bctx, int(p["task_id"]), messages.claimed_by(p["by"], _at(row)),
                                  kinds={"claim"})

    async def decided(row: dict[str, Any]) -> dict[str, Any]:
        return await refresh_decisions(bctx, int(row["payload"]["task_id"]))

    async def timed_out(row: dict[str, Any]) -> dict[str, Any]:
        p = row["payload"]
        return await update_cards(bctx, int(p["task_id"]),
                                  messages.timed_out(str(p.get("after")), str(p.get("outcome")), _at(row)))

    async def cancelled(row: dict[str, Any]) -> dict[str, Any]:
        p = row["payload"]
        return await update_cards(bctx, int(p["task_id"]), messages.cancelled_by(p["by"], p.get("reason"), _at(row)))
    async def signin(row: dict[str, Any]) -> dict[str, Any]:
        # The link is made now, not when the effect was queued: no live token waits in the outbox.
        to = str(row["payload"]["to"])
        async with slack_errors(f"sign-in link to {to}"):
            user = await bctx.resolver.user_id(to)
            person = await _signin_person(bctx, to)
            token = await links.create(bctx.app.db, person, bctx.app.store.clock())
            channel = await open_dm(bctx, user)
            resp = await bctx.client.chat_postMessage(
                channel=channel, text=messages.console_signin(links.url(bctx.app.settings.base_url(), token)))
        return {"channel": resp.get("channel"), "ts": resp.get("ts")}

    return {
        CONSOLE_SIGNIN: signin,
        "slack.post": post,
        "slack.dm": dm,
        "form.assigned": assigned,
        "form.completed": completed,
        "form.claimed": claimed,
        "form.cancelled": cancelled,
        quorum.DECIDED: decided,
        deadlines.TIMED_OUT: timed_out,
    }


async def _signin_person(bctx: BotContext, to: str) -> str:
    """Who a sign-in link signs in: the email itself, or a Slack user's email (``users.info``),
    since assignees and starters are mostly written as emails; the user id when Slack shows none."""
    if not USER_ID_RE.match(to):
        return to
    resp = await bctx.client.users_info(user=to)
    email = ((resp.get("user") or {}).get("profile") or {}).get("email")
    return str(email).strip().lower() if email else to


def _at(row: dict[str, Any]) -> dt.datetime:
    created = row.get("created_at")
    return created if isinstance(created, dt.datetime) else dt.datetime.now(dt.UTC)


async def open_dm(bctx: BotContext, user_id: str) -> str:
    """The DM channel with a user (``conversations.open`` the first time; then remembered: a
    Web API round trip less before each assignment and each ``ctx.slack.dm``)."""
    channel = bctx.dm_channels.get(user_id)
    if channel is None:
        resp = await bctx.client.conversations_open(users=user_id)
        channel = bctx.dm_channels[user_id] = str(resp["channel"]["id"])
    return channel


async def task_card(bctx: BotContext, task: Row, form: Form, *,
                    claim_for: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, blocks) of the card about ``task``: Approve/Decline for an Approval,
    Open for another form, Claim for a team card."""
    wf = bctx.app.registry.get(task["workflow"])
    note = await _note(bctx, task, form, messages.from_workflow(wf.title))
    ref = str(task["id"])
    payload = task["payload"]
    title = form.title
    if claim_for is not None:
        facts = form_facts(form.facts, payload) if isinstance(form, Approval) else None
        blocks = assignment_message_blocks(title, task_ref=ref, text=form_text(getattr(form, "text", None), payload),
                                           facts=facts or _payload_facts(payload),
                                           note=messages.team_note(claim_for))
        blocks[-1] = {"type": "actions", "block_id": ACTIONS_BLOCK,
                      "elements": [button(messages.CLAIM, ACTION_CLAIM, ref, style="primary")]}
        return messages.team_fallback(title), blocks
    if isinstance(form, Approval):
        blocks = approval_message_blocks(title, form_facts(form.facts, payload), task_ref=ref,
                                         text=form_text(form.text, payload), note=note,
                                         approve_label=form.approve_label, decline_label=form.decline_label,
                                         open_label=messages.OPEN_DETAILS)
        return messages.approval_fallback(title), blocks
    return messages.assignment_fallback(title), assignment_message_blocks(
        title, task_ref=ref, facts=_payload_facts(payload), note=note)


async def _note(bctx: BotContext, task: Row, form: Form, first: str) -> str:
    """A card's context line: where it comes from, when it times out, who has decided so far."""
    parts = [first]
    deadline = (await deadlines.deadlines_of(bctx.app.db, [task["id"]])).get(task["id"])
    if deadline is not None:
        parts.append(messages.answer_by(deadline))
    if isinstance(form, Approval) and form.quorum:
        decided = (await deadlines.decisions_of(bctx.app.db, [task["id"]])).get(task["id"], [])
        parts.append(messages.quorum_note(form.approvers, decided))
    return " · ".join(parts)


def _payload_facts(payload: dict[str, Any]) -> list[tuple[str, str]]:
    from bot.cards import payload_facts

    return payload_facts(payload)


async def deliver_assignment(bctx: BotContext, task_id: int) -> dict[str, Any]:
    """DM every assignee of a pending form task its card (once each), or post the team card."""
    db = bctx.app.db
    try:
        task = await people.get_task(db, task_id)
    except TaskNotFound:  # (an unreachable database is retried by the outbox, not skipped)
        return {"skipped": "task not found"}
    if task["status"] != "pending":
        return {"skipped": task["status"]}
    stage = bctx.app.store.stage_of(task)
    try:
        form = await people.load_form(stage, task_of(task))
    except Exception as exc:
        raise PermanentFailure(f"form of {stage.key}: {type(exc).__name__}: {exc}") from None
    assignee = task.get("assignee") or {}
    sent = {r["recipient"] for r in await store.cards(db, task_id)}
    posted: list[dict[str, Any]] = []
    team = assignee.get("team")
    if team and not assignee.get("claimed_by") and isinstance(form, Approval) and form.quorum:
        # Several members must decide: nobody claims it, each member gets the approval card.
        return await _deliver_to_team(bctx, task, form, str(team), sent)
    if team and not assignee.get("claimed_by"):
        text, blocks = await task_card(bctx, task, form, claim_for=team)
        if is_channel(team):
            channel = team.strip().lstrip("#")
            if f"claim:{channel}" not in sent:
                async with slack_errors(f"team card to {team}"):
                    resp = await bctx.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
                await store.record_card(bctx.app.db, task_id, f"claim:{channel}", str(resp["channel"]),
                                        str(resp["ts"]), "claim")
                posted.append({"channel": resp["channel"], "ts": resp["ts"]})
            return {"posted": posted}
        async with slack_errors(f"members of {team}"):
            users = await bctx.directory.members(team)
        kind = "claim"
    else:
        text, blocks = await task_card(bctx, task, form)
        entries = await _mail_outsiders(bctx, task_id, list(assignee.get("users") or []))
        async with slack_errors("assignees"):
            users = await bctx.resolver.user_ids(entries)
        kind = "approval" if isinstance(form, Approval) else "assignment"
    for user in users:
        recipient = f"claim:{user}" if kind == "claim" else user
        if recipient in sent:
            continue  # a retried delivery never DMs the same person twice
        async with slack_errors(f"DM to {user}"):
            channel = await open_dm(bctx, user)
            resp = await bctx.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        await store.record_card(bctx.app.db, task_id, recipient, str(resp["channel"]), str(resp["ts"]), kind)
        posted.append({"user": user, "channel": resp["channel"], "ts": resp["ts"]})
    return {"posted": posted}


async def _deliver_to_team(bctx: BotContext, task: Row, form: Form, team: str, sent: set[str]) -> dict[str, Any]:
    """An approval needing several members of a team: its card in the team's channel, or in the DM
    of each member of the user group."""
    text, blocks = await task_card(bctx, task, form)
    posted: list[dict[str, Any]] = []
    if is_channel(team):
        channel = team.strip().lstrip("#")
        if f"channel:{channel}" not in sent:
            async with slack_errors(f"approval card to {team}"):
                resp = await bctx.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
            await store.record_card(bctx.app.db, task["id"], f"channel:{channel}", str(resp["channel"]),
                                    str(resp["ts"]), "approval")
            posted.append({"channel": resp["channel"], "ts": resp["ts"]})
        return {"posted": posted}
    async with slack_errors(f"members of {team}"):
        users = await bctx.directory.members(team)
    for user in users:
        if user in sent:
            continue
        async with slack_errors(f"DM to {user}"):
            channel = await open_dm(bctx, user)
            resp = await bctx.client.chat_postMessage(channel=channel, text=text, blocks=blocks)
        await store.record_card(bctx.app.db, task["id"], user, str(resp["channel"]), str(resp["ts"]), "approval")
        posted.append({"user": user, "channel": resp["channel"], "ts": resp["ts"]})
    return {"posted": posted}


async def refresh_decisions(bctx: BotContext, task_id: int) -> dict[str, Any]:
    """A decision on an approval needing several people was kept: the cards of those who decided
    say so; the others show who has decided so far, buttons kept."""
    db = bctx.app.db
    try:
        task = await people.get_task(db, task_id)
    except TaskNotFound:
        return {"skipped": "task not found"}
    if task["status"] != "pending":
        return {"skipped": task["status"]}  # its completion updates the cards
    stage = bctx.app.store.stage_of(task)
    try:
        form = await people.load_form(stage, task_of(task))
    except Exception as exc:
        raise PermanentFailure(f"form of {stage.key}: {type(exc).__name__}: {exc}") from None
    if not isinstance(form, Approval):
        return {"skipped": "not an approval"}
    decided = (await deadlines.decisions_of(db, [task_id])).get(task_id, [])
    mine: dict[str, str] = {}
    for d in decided:
        who = str(d["by"])
        try:
            async with slack_errors(f"looking up {who}"):
                who = who if USER_ID_RE.match(who) else await bctx.resolver.user_id(who)
        except PermanentFailure:
            pass  # an email outside Slack has no card here
        mine[who] = str(d["decision"])
    text, blocks = await task_card(bctx, task, form)
    facts = form_facts(form.facts, task["payload"])
    updated = 0
    for card in await store.cards(db, task_id):
        card_text, card_blocks = text, blocks
        if card["recipient"] in mine:
            card_text = messages.you_decided(mine[card["recipient"]], form.approvers, decided)
            card_blocks = resolved_message_blocks(form.title, card_text, text=form_text(form.text, task["payload"]),
                                                  facts=facts)
        async with slack_errors(f"updating card in {card['channel']}"):
            await bctx.client.chat_update(channel=card["channel"], ts=card["ts"], text=card_text, blocks=card_blocks)
        updated += 1
    return {"updated": updated}


async def _mail_outsiders(bctx: BotContext, task_id: int, entries: list[str]) -> list[str]:
    """The assignee entries to DM in Slack; an email of nobody in the workspace gets the task by
    email instead, when email is configured (else it stays, and fails as a Slack error would)."""
    kept, outside = await split_outsiders(bctx, entries)
    for entry in outside:
        await mail.queue_assignment(bctx.app, task_id, entry)
    return kept


async def split_outsiders(bctx: BotContext, entries: list[str]) -> tuple[list[str], list[str]]:
    """Assignee entries as (those to reach in Slack, emails of nobody in the workspace). With
    email off nobody is outside: every entry stays, and an unknown one fails as a Slack error."""
    if not bctx.app.settings.mail_enabled:
        return entries, []
    kept, outside = [], []
    for entry in entries:
        if mail.is_email(entry):
            try:
                async with slack_errors(f"looking up {entry}"):
                    await bctx.resolver.user_id(entry)
            except PermanentFailure:
                outside.append(entry)
                continue
        kept.append(entry)
    return kept, outside


async def update_cards(bctx: BotContext, task_id: int, outcome: str, *, kinds: set[str] | None = None,
                       forget: bool = False) -> dict[str, Any]:
    """Replace every card of a task with its resolved form (``outcome`` instead of buttons)."""
    db = bctx.app.db
    try:
        task = await people.get_task(db, task_id)
    except TaskNotFound:  # (an unreachable database is retried by the outbox, not skipped)
        return {"skipped": "task not found"}
    cards = await store.cards(db, task_id)
    if not cards:
        return {"updated": 0}
    stage = bctx.app.store.stage_of(task)
    try:
        form = await people.load_form(stage, task_of(task))
        title, text = form.title, form_text(getattr(form, "text", None), task["payload"])
        facts: list[tuple[str, Any]] = (form_facts(form.facts, task["payload"]) if isinstance(form, Approval)
                                        else _payload_facts(task["payload"]))
    except Exception:
        title, text, facts = stage.name, None, _payload_facts(task["payload"])
    blocks = resolved_message_blocks(title, outcome, text=text, facts=facts)
    updated = 0
    for card in cards:
        if kinds is not None and card["kind"] not in kinds:
            continue
        async with slack_errors(f"updating card in {card['channel']}"):
            try:
                await bctx.client.chat_update(channel=card["channel"], ts=card["ts"], text=outcome, blocks=blocks)
            except SlackApiError as exc:
                if exc.response.get("error") not in ("message_not_found", "cant_update_message"):
                    raise
        updated += 1
    if forget:
        await store.forget_cards(db, task_id)
    return {"updated": updated}
