"""Follow-up of form tasks nobody answers: a reminder, then escalation; and reassignment.

A form stage declares ``remind_after=`` (seconds; ``FLOWBOT_REMIND_AFTER`` is the default for
stages that do not), ``escalate_after=`` and ``escalate_to=`` (an assignee rule: email, user id,
``{payload_key}``, list or ``Team``). The ``Reminders`` part looks for due tasks every
``FLOWBOT_REMINDER_INTERVAL`` seconds under a transaction-scoped advisory lock, so any number of
flowbot processes run it safely: each due task gets one ``form.reminder`` and one
``form.escalated`` outbox effect, ever, written in the same transaction as the escalation itself.
Delivering the effects (a threaded reminder under each card; old cards resolved and the new
assignee DMed) happens after commit, like every Slack effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot import messages
from bot.blocks import button, section
from bot.cards import ACTION_OPEN, ACTIONS_BLOCK
from bot.context import USER_ID_RE, BotContext, UserNotFound
from engine import assignees
from engine.context import Task
from engine.errors import DatabaseError, FlowbotError
from engine.loader import Registry
from engine.people import actions as people
from engine.store import queries
from engine.store.db import Row
from engine.store.tasks import Clock
from engine.workflow import Stage, StageKind

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from engine.runtime.app import App
    from engine.settings import Settings

log = logging.getLogger(__name__)

#: Outbox kinds: a reminder under a task's cards; an escalation; a reassignment by a person.
REMINDER = "form.reminder"
ESCALATED = "form.escalated"
HANDOVER = people.HANDOVER
#: The actor recorded on task events of an escalation.
ESCALATION_ACTOR = "flowbot:escalation"
#: Due tasks handled per stage and kind in one pass (the rest wait for the next pass).
BATCH = 200


@dataclass(frozen=True)
class FollowUp:
    """What happens to one form stage's waiting tasks, and when (seconds after creation)."""

    stage: Stage
    remind_after: float | None
    escalate_after: float | None
    escalate_to: Any


def follow_ups(registry: Registry, default_remind_after: float | None = None) -> list[FollowUp]:
    """The follow-up of every form stage that has one (start forms have no waiting tasks)."""
    found = []
    for stage in registry.stages(StageKind.FORM):
        if stage.is_start:
            continue
        remind = stage.options.get("remind_after", default_remind_after)
        escalate = stage.options.get("escalate_after")
        if remind or escalate:
            found.append(FollowUp(stage, remind, escalate, stage.options.get("escalate_to")))
    return found


@dataclass(frozen=True)
class ReminderSettings:
    """``FLOWBOT_REMIND_AFTER`` (default reminder delay, seconds; unset: only stages that say)
    and ``FLOWBOT_REMINDER_INTERVAL`` (seconds between passes, 60)."""

    default_remind_after: float | None = None
    interval: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> ReminderSettings:
        """Take them from flowbot's settings (read from the environment at the entry point)."""
        after = settings.remind_after
        return cls(float(after) if after else None, float(settings.reminder_interval))


@dataclass
class Pass:
    """What one pass did: task ids reminded and escalated."""

    reminded: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)


class Reminders:
    """Finds waiting form tasks that are due a reminder or an escalation (safe in N processes)."""

    def __init__(self, app: App, *, clock: Clock | None = None, settings: ReminderSettings | None = None) -> None:
        self.app = app
        self.clock = clock or app.store.clock
        self.settings = settings or ReminderSettings()
        self.follow_ups = follow_ups(app.registry, self.settings.default_remind_after)

    async def tick(self) -> Pass:
        """One pass: escalate, then remind, everything due now; one transaction."""
        now = self.clock()
        done = Pass()
        effects: list[tuple[str, dict[str, Any], int | None, str | None]] = []
        async with self.app.db.transaction() as tx:
            # Serialises passes across processes; released at commit. A peer that waited here
            # then finds the effects this pass wrote, so nothing is done twice.
            await tx.execute(queries.LOCK_REMINDERS)
            for f in self.follow_ups:
                if f.escalate_after:
                    for row in await self._due(tx, f, f.escalate_after, ESCALATED, now):
                        effects.append(await self._escalate(tx, f, row, now))
                        done.escalated.append(row["id"])
                if f.remind_after:
                    for row in await self._due(tx, f, f.remind_after, REMINDER, now):
                        if row["id"] not in done.escalated:
                            effects.append((REMINDER, {"task_id": row["id"]}, row["id"], str(row["run_id"])))
                            done.reminded.append(row["id"])
            if effects:
                await self.app.store.add_effects(tx, effects, now)
                await tx.notify()
        if effects:
            log.info("reminders: %d reminded, %d escalated", len(done.reminded), len(done.escalated),
                     extra={"action": "reminders_pass", "reminded": done.reminded, "escalated": done.escalated})
        return done

    async def _due(self, tx: Any, f: FollowUp, after: float, kind: str, now: dt.datetime) -> list[Row]:
        return await tx.fetch_all(queries.FORM_TASKS_WAITING_SINCE, {
            "workflow": f.stage.workflow.name, "stage": f.stage.name, "kind": kind, "limit": BATCH,
            "before": now - dt.timedelta(seconds=after),
        })

    async def _escalate(self, tx: Any, f: FollowUp, row: Row, now: dt.datetime
                        ) -> tuple[str, dict[str, Any], int | None, str | None]:
        old = row["assignee"] or {}
        payload: dict[str, Any] = {"task_id": row["id"], "from": old, "after": f.escalate_after}
        try:
            new = assignees.evaluate(f.escalate_to, Task(row["id"], "", row["payload"], row["run_id"], row["stage"]))
        except FlowbotError as exc:
            # Recorded once (the effect marks the task as handled) rather than retried every pass.
            payload["error"] = str(exc)
            await tx.execute(queries.APPEND_TASK_LOG, {"id": row["id"], "lines": [
                {"at": now.isoformat(), "message": f"escalation failed: {exc}"}]})
            return ESCALATED, payload, row["id"], str(row["run_id"])
        await tx.execute(queries.SET_TASK_ASSIGNEE, {"id": row["id"], "assignee": new})
        await tx.execute(queries.ADD_TASK_EVENT, {
            "id": row["id"], "status": "pending", "actor": ESCALATION_ACTOR, "now": now,
            "reason": f"escalated to {describe(new)} after {f.escalate_after:g} s without an answer",
        })
        payload["to"] = new
        return ESCALATED, payload, row["id"], str(row["run_id"])

    async def run(self, stop: asyncio.Event) -> None:
        """Pass every ``interval`` seconds until ``stop`` is set."""
        if not self.follow_ups:
            return
        while not stop.is_set():
            try:
                await self.tick()
            except DatabaseError as exc:
                log.warning("reminders: %s", exc, extra={"action": "reminders_error"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval)


def describe(assignee: Mapping[str, Any]) -> str:
    """An assignee for people to read: mentions for user ids, the team, or emails."""
    if assignee.get("team"):
        return str(assignee["team"])
    return messages.people([str(u) for u in assignee.get("users") or []])


# --- reassignment by a person ------------------------------------------------------------------


async def reassign(bctx: BotContext, task_id: int, target: str, actor: str) -> people.Result:
    """``actor`` (an assignee, or a member of the task's team) hands a pending form task to
    ``target`` (an email, user id or ``<@U…>``). FORBIDDEN / ALREADY / GONE change nothing."""
    allowed = await people.check(bctx.store, task_id, actor, bctx.directory)
    if not allowed.ok:
        return allowed
    if not (USER_ID_RE.match(target) or "@" in target.lstrip("@") or target.startswith("<@")):
        # "@sam" typed where Slack did not escape it into a mention: nothing to look up.
        return people.Result(people.INVALID, message=f"{target} is not a Slack user: mention them or give their email")
    try:
        user = await bctx.resolver.user_id(target)
    except UserNotFound:
        return people.Result(people.INVALID, message=f"no Slack user has the email {target}")
    return await people.reassign(bctx.store, task_id, {"users": [user]}, actor)


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
    except FlowbotError:
        return {"skipped": "task not found"}
    if task["status"] != "pending":
        return {"skipped": task["status"]}
    text = messages.reminder(await _title(bctx, task), task["created_at"])
    cards = await db.fetch_all(queries.SLACK_MESSAGES_FOR_TASK, {"task_id": task_id})
    progress = (await db.fetch_one(queries.OUTBOX_RESULT, {"id": row["id"]})) or {}
    sent: list[str] = list((progress.get("result") or {}).get("sent") or [])
    targets: list[tuple[str, str, str | None, str]] = [
        (c["recipient"], c["channel"], c["ts"], c["kind"]) for c in cards]
    if not targets:
        async with delivery.slack_errors("assignees"):
            users = await bctx.resolver.user_ids(list((task["assignee"] or {}).get("users") or []))
        for user in users:
            targets.append((user, await delivery.open_dm(bctx, user), None, "assignment"))
    for recipient, channel, ts, kind in targets:
        if recipient in sent:
            continue  # a retried delivery never reminds the same card twice
        async with delivery.slack_errors(f"reminder to {recipient}"):
            await bctx.client.chat_postMessage(channel=channel, text=text, thread_ts=ts,
                                               blocks=reminder_blocks(text, task_id, kind))
        sent.append(recipient)
        async with db.transaction() as tx:
            await tx.execute(queries.OUTBOX_NOTE_PROGRESS, {"id": row["id"], "patch": {"sent": sent}})
    return {"sent": sent}


async def deliver_handover(bctx: BotContext, row: dict[str, Any]) -> dict[str, Any]:
    """Escalation or reassignment: resolve the old cards, DM the new assignee, refresh Homes."""
    from bot import delivery, home

    p = row["payload"]
    task_id = int(p["task_id"])
    if p.get("error"):
        return {"skipped": p["error"]}
    before = await bctx.app.db.fetch_all(queries.SLACK_MESSAGES_FOR_TASK, {"task_id": task_id})
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
    ctx.app.add_outbox_handler(HANDOVER, handover)
    part = Reminders(ctx.app, settings=ReminderSettings.from_settings(ctx.app.settings))
    ctx.app.add_background(part.run)
    ctx.app.state["slack.reminders"] = part


__all__ = [
    "ESCALATED",
    "HANDOVER",
    "REMINDER",
    "FollowUp",
    "ReminderSettings",
    "Reminders",
    "follow_ups",
    "reassign",
]
