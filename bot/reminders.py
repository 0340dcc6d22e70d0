"""Follow-ups of waiting form tasks in Slack: reminders threaded under each card, escalations and
reassignments (old cards resolved, the new assignee DMed), and ``/flowbot reassign``. Assignees
given as emails of people outside the workspace get their reminder, or the escalated task, by
email (``engine.people.mail``) when email is configured.

Which tasks are due a reminder or an escalation is the engine's business
(``engine.people.followups``); this module delivers the effects that pass writes, after commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bot import messages, store
from bot.blocks import button, section
from bot.cards import ACTION_OPEN, ACTIONS_BLOCK
from bot.context import USER_ID_RE, BotContext, UserNotFound, authorize
from engine.errors import TaskNotFound
from engine.ops.access import Action
from engine.people import actions as people
from engine.people import mail
from engine.people.followups import ESCALATED, REMINDER, Reminders, ReminderSettings
from engine.runtime import outbox
from engine.store.db import Row

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp


log = logging.getLogger(__name__)


def describe(assignee: Mapping[str, Any]) -> str:
    """An assignee for people to read: mentions for user ids, the team, or emails."""
    if assignee.get("team"):
        return str(assignee["team"])
    return messages.people([str(u) for u in assignee.get("users") or []])


# --- reassignment by a person ------------------------------------------------------------------


async def reassign(bctx: BotContext, task_id: int, target: str, actor: str) -> people.Result:
    """``actor`` (an assignee, a member of the task's team, or whoever the engine's access rule
    lets reassign it: its workflow's operators) hands a pending form task to ``target`` (an email,
    user id or ``<@U…>``). FORBIDDEN / ALREADY / GONE change nothing."""

    allowed, record = await authorize(bctx, task_id, actor, Action.REASSIGN)
    if not allowed.ok:
        return allowed
    assert record is not None
    record = dataclasses.replace(record, action="reassign")
    if not (USER_ID_RE.match(target) or "@" in target.lstrip("@") or target.startswith("<@")):
        # "@sam" typed where Slack did not escape it into a mention: nothing to look up.
        return people.Result(people.INVALID, message=f"{target} is not a Slack user: mention them or give their email")
    try:
        user = await bctx.resolver.user_id(target)
    except UserNotFound:
        return people.Result(people.INVALID, message=f"no Slack user has the email {target}")
    return await people.reassign(bctx.store, task_id, {"users": [user]}, actor, audit=record)


# --- delivering the effects ----------------------------------------------------------------------


def _at(row: Mapping[str, Any]) -> dt.datetime:
    created = row.get("created_at")
    return created if isinstance(created, dt.datetime) else dt.datetime.now(dt.UTC)


async def _title(bctx: BotContext, task: Row) -> str:
    from bot.home import task_title

    return await task_title(bctx, task)


def reminder_blocks(text: str, task_id: int, kind: str) -> list[dict[str, Any]]:
    """A reminder: its line, and the card's Open (or Claim) button again."""
    from bot.delivery import ACTION_CLAIM

    action = (messages.CLAIM, ACTION_CLAIM) if kind == "claim" else (messages.REMINDER_OPEN, ACTION_OPEN)
    return [section(text), {"type": "actions", "block_id": ACTIONS_BLOCK,
                            "elements": [button(action[0], action[1], str(task_id), style="primary")]}]


async def deliver_reminder(bctx: BotContext, row: dict[str, Any]) -> dict[str, Any]:
    """Reply under each card of the task (or DM each assignee when no card was sent)."""
    from bot import delivery

    db = bctx.app.db
    task_id = int(row["payload"]["task_id"])
    try:
        task = await people.get_task(db, task_id)
    except TaskNotFound:  # (an unreachable database is retried by the outbox, not skipped)
        return {"skipped": "task not found"}
    if task["status"] != "pending":
        return {"skipped": task["status"]}
    text = messages.reminder(await _title(bctx, task), task["created_at"])
    cards = await store.cards(db, task_id)
    sent: list[str] = list((await outbox.progress(db, row["id"])).get("sent") or [])
    targets: list[tuple[str, str, str | None, str]] = [
        (c["recipient"], c["channel"], c["ts"], c["kind"]) for c in cards]
    # Assignees outside the workspace have no card: they are reminded by email (once per task).
    inside, outside = await delivery.split_outsiders(bctx, list((task["assignee"] or {}).get("users") or []))
    for to in outside:
        await mail.queue_reminder(bctx.app, task_id, to)
    if not targets:
        async with delivery.slack_errors("assignees"):
            users = await bctx.resolver.user_ids(inside)
        for user in users:
            targets.append((user, await delivery.open_dm(bctx, user), None, "assignment"))
    for recipient, channel, ts, kind in targets:
        if recipient in sent:
            continue  # a retried delivery never reminds the same card twice
        async with delivery.slack_errors(f"reminder to {recipient}"):
            await bctx.client.chat_postMessage(channel=channel, text=text, thread_ts=ts,
                                               blocks=reminder_blocks(text, task_id, kind))
        sent.append(recipient)
        await outbox.note_progress(db, row["id"], {"sent": sent})
    return {"sent": sent, **({"mailed": outside} if outside else {})}


async def deliver_handover(bctx: BotContext, row: dict[str, Any]) -> dict[str, Any]:
    """Escalation or reassignment: resolve the old cards, DM the new assignee, refresh Homes."""
    from bot import delivery, home

    p = row["payload"]
    task_id = int(p["task_id"])
    if p.get("error"):
        return {"skipped": p["error"]}
    before = await store.cards(bctx.app.db, task_id)
    to = describe(p.get("to") or {})
    outcome = (messages.escalated(to, _at(row)) if row["kind"] == ESCALATED
               else messages.reassigned_to(str(p.get("by")), to, _at(row)))
    updated = await delivery.update_cards(bctx, task_id, outcome, forget=True)
    assigned = await delivery.deliver_assignment(bctx, task_id)
    users = {c["recipient"] for c in before if not c["recipient"].startswith("claim:")}
    users |= {str(x.get("user")) for x in assigned.get("posted") or [] if x.get("user")}
    for user in sorted(users):
        await home.refresh_quietly(bctx, user)
    return {"updated": updated.get("updated", 0), "posted": assigned.get("posted", [])}


def register(bolt: AsyncApp, ctx: BotContext) -> None:
    """Deliver reminders and handovers; run the reminder passes in `flowbot run`."""

    async def reminder(row: dict[str, Any]) -> dict[str, Any]:
        return await deliver_reminder(ctx, row)

    async def handover(row: dict[str, Any]) -> dict[str, Any]:
        return await deliver_handover(ctx, row)

    ctx.app.add_outbox_handler(REMINDER, reminder)
    ctx.app.add_outbox_handler(ESCALATED, handover)
    ctx.app.add_outbox_handler(people.HANDOVER, handover)
    part = Reminders(ctx.app, settings=ReminderSettings.from_settings(ctx.app.settings))
    ctx.app.add_background(part.run)
    ctx.app.state["slack.reminders"] = part
