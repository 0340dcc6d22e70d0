"""Follow-up of form tasks nobody answers: a reminder, then escalation.

A form stage declares ``remind_after=`` (seconds; ``FLOWBOT_REMIND_AFTER`` is the default for
stages that do not), ``escalate_after=`` and ``escalate_to=`` (an assignee rule: email, user id,
``{payload_key}``, list or ``Team``). ``Reminders.run`` looks for due tasks every
``FLOWBOT_REMINDER_INTERVAL`` seconds under a transaction-scoped advisory lock, so any number of
flowbot processes run it safely: each due task gets one ``form.reminder`` and one
``form.escalated`` outbox effect, ever, written in the same transaction as the escalation itself.
Delivering the effects (in Slack: ``bot.reminders``) happens after commit, like every effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine import assignees
from engine.context import Task
from engine.errors import DatabaseError, DatabaseUnavailable, FlowbotError
from engine.loader import Registry
from engine.store import deadlines, queries
from engine.store.db import Row
from engine.store.deadlines import ESCALATED
from engine.store.tasks import Clock
from engine.workflow import Stage, StageKind

if TYPE_CHECKING:
    from engine.runtime.app import App
    from engine.settings import Settings

log = logging.getLogger(__name__)

#: Outbox kinds: a reminder under a task's cards; an escalation (``engine.store.deadlines``).
REMINDER = "form.reminder"
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
            await tx.execute(queries.LOCK_FOLLOW_UPS)
            for f in self.follow_ups:
                if f.escalate_after:
                    for row in await self._due(tx, f, f.escalate_after, ESCALATED, now):
                        if (effect := await self._escalate(tx, f, row, now)) is not None:
                            effects.append(effect)
                        done.escalated.append(row["id"])
                if f.remind_after:
                    for row in await self._due(tx, f, f.remind_after, REMINDER, now):
                        if row["id"] not in done.escalated:
                            effects.append((REMINDER, {"task_id": row["id"]}, row["id"], str(row["run_id"])))
                            done.reminded.append(row["id"])
            if effects:
                await self.app.store.add_effects(tx, effects, now)
            if effects or done.escalated:
                await tx.notify()
        if effects or done.escalated:
            log.info("reminders: %d reminded, %d escalated", len(done.reminded), len(done.escalated),
                     extra={"action": "reminders_pass", "reminded": done.reminded, "escalated": done.escalated})
        return done

    async def _due(self, tx: Any, f: FollowUp, after: float, kind: str, now: dt.datetime) -> list[Row]:
        return await tx.fetch_all(queries.FORM_TASKS_WAITING_SINCE, {
            "workflow": f.stage.workflow.name, "stage": f.stage.name, "kind": kind, "limit": BATCH,
            "before": now - dt.timedelta(seconds=after),
        })

    async def _escalate(self, tx: Any, f: FollowUp, row: Row, now: dt.datetime
                        ) -> tuple[str, dict[str, Any], int | None, str | None] | None:
        """Hand ``row`` to the escalation assignee (``engine.store.deadlines.escalate``, as a timeout
        does, which writes its effect); a rule that cannot apply is recorded once, as an effect."""
        try:
            new = assignees.evaluate(f.escalate_to, Task(row["id"], "", row["payload"], row["run_id"], row["stage"]))
        except FlowbotError as exc:
            # Recorded once (the effect marks the task as handled) rather than retried every pass.
            await tx.execute(queries.APPEND_TASK_LOG, {"id": row["id"], "lines": [
                {"at": now.isoformat(), "message": f"escalation failed: {exc}"}]})
            payload = {"task_id": row["id"], "from": row["assignee"] or {}, "after": f.escalate_after,
                       "error": str(exc)}
            return ESCALATED, payload, row["id"], str(row["run_id"])
        await deadlines.escalate(self.app.store, tx, row, new, now, actor=ESCALATION_ACTOR, after=f.escalate_after,
                                 reason=f"escalated to {describe(new)} after {f.escalate_after:g} s without an answer")
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Pass every ``interval`` seconds until ``stop`` is set."""
        if not self.follow_ups:
            return
        while not stop.is_set():
            try:
                await self.tick()
            except DatabaseUnavailable:
                pass  # logged once by the database; the next pass catches up
            except DatabaseError as exc:
                log.warning("reminders: %s", exc, extra={"action": "reminders_error"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.interval)


def describe(assignee: Mapping[str, Any]) -> str:
    """An assignee in plain words (a task event's reason): the team, or the people."""
    if assignee.get("team"):
        return str(assignee["team"])
    return ", ".join(str(u) for u in assignee.get("users") or [])
