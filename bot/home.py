"""The App Home tab: my pending tasks with Open buttons, and my recent runs.

Published with ``views.publish`` when the user opens the tab (``app_home_opened``), after their own
slash-command actions, and whenever an outbox effect ``slack.home_refresh`` (payload
``{"user": "U…"}``) is delivered. The listing helpers are shared with ``bot.commands``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from bot import messages, store
from bot.blocks import button, context, escape, header, section
from bot.cards import ACTION_OPEN
from bot.context import USER_ID_RE
from engine.errors import FlowbotError
from engine.people.actions import load_form
from engine.runtime.outbox import OutboxHandler
from engine.runtime.runner import task_of
from engine.store import deadlines
from engine.store.db import Row

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

    from bot.context import BotContext

log = logging.getLogger(__name__)

#: Outbox effect kind that re-publishes one user's Home tab.
HOME_REFRESH = "slack.home_refresh"
#: Open buttons of lists carry ``flowbot_open.<task id>``: Slack wants action ids unique within a
#: view, and the task id is the button's value as on the DM cards.
OPEN_ACTION_RE = re.compile(rf"^{re.escape(ACTION_OPEN)}\.\d+$")
HOME_TASKS_SHOWN = 20
#: ``app.state`` key of the app's ``HomeRefreshes``.
REFRESHES_STATE = "slack.home_refreshes"
#: A person's Home tab is published at most once per this many seconds after changes.
HOME_REFRESH_INTERVAL = 1.0
#: ``HomeRefreshes`` forgets people whose interval is over once it holds this many.
FORGET_AFTER_PEOPLE = 1000
#: Pending tasks read to say how many more there are than shown.
TASKS_COUNTED = 200
HOME_RUNS_SHOWN = 15


def open_action_id(task_id: int) -> str:
    """The action id of a list's Open button for one task."""
    return f"{ACTION_OPEN}.{task_id}"


def task_ref(task_id: int) -> str:
    """The value of an Open button: the task id, as on the DM cards."""
    return str(task_id)


# --- reading -----------------------------------------------------------------------------------


async def pending_tasks(ctx: BotContext, user_id: str, limit: int = 50) -> list[Row]:
    """Form tasks waiting on ``user_id`` (assigned to them, or to a team they were asked in)."""
    return await store.pending_tasks(ctx.app.db, user_id, limit)


async def recent_runs(ctx: BotContext, user_id: str, limit: int = 10) -> list[Row]:
    """Runs ``user_id`` started or took part in, newest first."""
    return await store.recent_runs(ctx.app.db, user_id, limit)


def workflow_title(ctx: BotContext, name: str) -> str:
    """A workflow's title (its name when it is no longer loaded)."""
    wf = ctx.app.registry.workflows.get(name)
    return wf.title if wf is not None else name


async def task_title(ctx: BotContext, row: Mapping[str, Any]) -> str:
    """What a task asks, for lists: its form's title, else the stage name."""
    try:
        stage = ctx.app.registry.get(row["workflow"]).stage(row["stage"])
        form = await load_form(stage, task_of(row))
        from engine.forms import fill_template

        return fill_template(form.title, row.get("payload") or {})
    except (FlowbotError, KeyError, TypeError, ValueError):
        return str(row["stage"])
    except Exception:  # the form's own code failed: still list the task
        log.warning("form title of task %s failed", row.get("id"), exc_info=True,
                    extra={"action": "home_title_error"})
        return str(row["stage"])


# --- rendering -----------------------------------------------------------------------------------


async def task_blocks(ctx: BotContext, rows: Sequence[Row], shown: int) -> list[dict[str, Any]]:
    """One section per task, with an Open button; a context line for the ones cut."""
    blocks: list[dict[str, Any]] = []
    due = await deadlines.deadlines_of(ctx.app.db, [row["id"] for row in rows[:shown]])
    for row in rows[:shown]:
        title = escape(await task_title(ctx, row))
        text = messages.task_line(title, escape(workflow_title(ctx, row["workflow"])), row["created_at"])
        if row["id"] in due:  # a form that times out: when
            text += "\n" + messages.answer_by(due[row["id"]])
        block = section(text)
        block["accessory"] = button(messages.REMINDER_OPEN, open_action_id(row["id"]), task_ref(row["id"]),
                                    style="primary")
        blocks.append(block)
    if len(rows) > shown:
        blocks.append(context(messages.more_items(len(rows) - shown)))
    return blocks


def run_blocks(ctx: BotContext, rows: Sequence[Row], shown: int) -> list[dict[str, Any]]:
    """Runs as lines of one or more sections (ten per section keeps blocks few)."""
    lines = [
        messages.run_line(escape(workflow_title(ctx, r["workflow"])), str(r["id"]), r["status"], r["created_at"])
        for r in rows[:shown]
    ]
    blocks = [section("\n".join(lines[i : i + 10])) for i in range(0, len(lines), 10)]
    if len(rows) > shown:
        blocks.append(context(messages.more_items(len(rows) - shown)))
    return blocks


async def home_view(ctx: BotContext, user_id: str) -> dict[str, Any]:
    """The Home tab of ``user_id``."""
    tasks = await pending_tasks(ctx, user_id, limit=TASKS_COUNTED)
    runs = await recent_runs(ctx, user_id, limit=HOME_RUNS_SHOWN)
    blocks: list[dict[str, Any]] = [header(messages.HOME_TITLE), section(f"*{messages.HOME_TASKS}*")]
    blocks += await task_blocks(ctx, tasks, HOME_TASKS_SHOWN) or [context(messages.HOME_NO_TASKS)]
    blocks += [{"type": "divider"}, section(f"*{messages.HOME_RUNS}*")]
    blocks += run_blocks(ctx, runs, HOME_RUNS_SHOWN) or [context(messages.HOME_NO_RUNS)]
    blocks += [{"type": "divider"}, context(messages.HOME_FOOTER)]
    return {"type": "home", "callback_id": "flowbot_home", "blocks": blocks}


async def refresh_home(ctx: BotContext, user_id: str) -> dict[str, Any]:
    """Publish the current Home tab of ``user_id``; returns the view sent."""
    view = await home_view(ctx, user_id)
    await ctx.client.views_publish(user_id=user_id, view=view)
    return view


class HomeRefreshes:
    """Publishes of Home tabs after changes: at most one per person per ``interval`` seconds.

    The first change after a quiet interval publishes at once. Changes while a publish runs, or
    within ``interval`` of the last one, are gathered into one more publish at the end of the
    interval, run in the background once pending acks are out. So a burst of changes (a hundred
    approvals in a second) costs two publishes, not a hundred, and stays far inside Slack's
    rate limit of ``views.publish``; the tab is at most ``interval`` behind. A failed publish
    is only logged: the change it follows already happened.
    """

    def __init__(self, ctx: BotContext, interval: float = HOME_REFRESH_INTERVAL) -> None:
        self.ctx = ctx
        self.interval = interval
        #: When the last publish of each person began (monotonic), and the lock publishes take.
        self._last: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        #: People with a publish scheduled: it will show every change until it begins.
        self._due: set[str] = set()

    async def refresh(self, user_id: str) -> None:
        """Show ``user_id`` their Home tab as it is now (at once, or by the end of the interval)."""
        if user_id in self._due:
            return
        lock = self._locks.get(user_id)
        if self._wait(user_id) > 0 or (lock is not None and lock.locked()):
            self._due.add(user_id)
            self.ctx.follow_ups.start(lambda: self._publish_later(user_id), "Home tab refresh",
                                      defer=False, optional=True)
            return
        await self._publish(user_id)

    def _wait(self, user_id: str) -> float:
        last = self._last.get(user_id)
        return 0.0 if last is None else last + self.interval - time.monotonic()

    async def _publish_later(self, user_id: str) -> None:
        try:
            await asyncio.sleep(max(0.0, self._wait(user_id)))
            await self.ctx.priority.quiet()
        finally:
            self._due.discard(user_id)  # changes from here on need a publish of their own
        await self._publish(user_id)

    async def _publish(self, user_id: str) -> None:
        lock = self._locks.setdefault(user_id, asyncio.Lock())
        async with lock:  # one publish of a person at a time: the newest view is sent last
            self._last[user_id] = time.monotonic()
            try:
                await refresh_home(self.ctx, user_id)
            except Exception:
                log.warning("home refresh for %s failed", user_id, exc_info=True,
                            extra={"action": "home_refresh_error"})
        self._forget_idle()

    def _forget_idle(self) -> None:
        """Drop the records of people whose interval is over (the maps stay small)."""
        if len(self._last) < FORGET_AFTER_PEOPLE:
            return
        for user_id in [u for u in self._last if self._wait(u) <= 0 and u not in self._due]:
            lock = self._locks.get(user_id)
            if lock is None or not lock.locked():
                self._last.pop(user_id, None)
                self._locks.pop(user_id, None)


def home_refreshes(ctx: BotContext) -> HomeRefreshes:
    """The app's throttled Home tab publishes (one per App)."""
    found = ctx.app.state.get(REFRESHES_STATE)
    if found is None:
        found = ctx.app.state[REFRESHES_STATE] = HomeRefreshes(ctx)
    return cast(HomeRefreshes, found)


async def refresh_quietly(ctx: BotContext, user_id: str) -> None:
    """Publish ``user_id``'s Home tab after a change: throttled and failures only logged
    (``HomeRefreshes``)."""
    await home_refreshes(ctx).refresh(user_id)


# --- wiring ----------------------------------------------------------------------------------------


def register(bolt: AsyncApp, ctx: BotContext) -> None:
    """Publish the Home tab when opened; deliver ``slack.home_refresh`` effects (the lists' Open
    buttons are interactions: ``bot.interactions``)."""

    async def on_home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        # Bolt acks an event before its listener; the publish happens after the answer.
        ctx.follow_ups.start(lambda: refresh_home(ctx, event["user"]), "Home tab opened", defer=False)

    bolt.event("app_home_opened")(on_home_opened)

    async def deliver_refresh(row: dict[str, Any]) -> dict[str, Any] | None:
        user = (row.get("payload") or {}).get("user")
        if user:
            await refresh_quietly(ctx, str(user))
        return None

    ctx.app.add_outbox_handler(HOME_REFRESH, deliver_refresh)
    for kind in REFRESHING_KINDS:
        handler = ctx.app.outbox_handlers.get(kind)
        if handler is not None:
            ctx.app.add_outbox_handler(kind, refreshing(ctx, handler))


#: Effects after which the Home tabs of the people concerned are published again: a task was
#: assigned to them, completed, claimed, timed out or decided on (delivered by ``bot.delivery``);
#: a handover refreshes the Homes of the old and new assignees itself (``bot.reminders``).
REFRESHING_KINDS = ("form.assigned", "form.completed", "form.claimed", "form.timed_out", "form.decided")


def _slack_user(ref: str) -> str | None:
    ref = ref.removeprefix("claim:")
    return ref if USER_ID_RE.match(ref) else None


async def concerned(ctx: BotContext, task_id: int | None) -> set[str]:
    """Slack users who got a card about a task (their Home lists it)."""
    if task_id is None:
        return set()
    cards = await store.cards(ctx.app.db, task_id)
    return {u for c in cards if (u := _slack_user(str(c["recipient"])))}


def refreshing(ctx: BotContext, handler: OutboxHandler) -> OutboxHandler:
    """``handler``, then the Home tab of everyone concerned published again (best effort: a
    failed refresh never makes the effect itself retry)."""

    async def wrapped(row: dict[str, Any]) -> dict[str, Any] | None:
        task_id = row.get("task_id") or (row.get("payload") or {}).get("task_id")
        users = await concerned(ctx, int(task_id) if task_id is not None else None)
        result = await handler(row)
        users |= await concerned(ctx, int(task_id) if task_id is not None else None)
        by = (row.get("payload") or {}).get("by")
        if isinstance(by, str) and _slack_user(by):
            users.add(by)
        for user in sorted(users):
            await refresh_quietly(ctx, user)
        return result

    return wrapped
