"""Form modal submissions: pages, validation errors, and the completion of the task.

A modal submission decides before its ack, because its validation errors and next page ride on
the ack (Slack wants it within 3 seconds). Acks stay fast under load: a submission reads its
session, task and run context in one grouped statement (``submission_reads``) and commits
through a group commit (``Completions``) that completes every answer waiting at once in one
transaction. Of two racing answers the engine completes exactly one; the other person is told
who won.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from bot import messages, modals
from bot.answers import refusal
from bot.blocks import escape
from bot.context import BotContext, authorize, slack_actor
from bot.views import errors_response, parse_submission
from engine.errors import DatabaseUnavailable, FlowbotError
from engine.forms import DECLINED, Approval, Form, FormError
from engine.ops.access import Action
from engine.ops.base import ops_of
from engine.people import actions as people
from engine.people import sessions
from engine.runtime.runner import task_of
from engine.store.db import Row
from engine.store.groupcommit import GroupCommit, GroupRead
from engine.store.tasks import Finished, Store
from engine.workflow import Stage

log = logging.getLogger(__name__)

#: Purposes of a form session.
PURPOSE_FORM = "form"
PURPOSE_DECLINE = "decline"
PURPOSE_START = "start"

#: How long a modal submission may run the stage's code before the ack goes out (Slack allows 3 s).
SUBMIT_BUDGET_SECONDS = 2.5
#: ``app.state`` key of the group commit of form completions.
STATE_COMPLETIONS = "slack.completions"
#: ``app.state`` key of the grouped reads of submitted form sessions.
STATE_SUBMISSION_READS = "slack.submission_reads"
#: The longest a read of submitted form sessions waits for more submissions of a burst to
#: arrive (``GroupRead.settle``); a lone one waits two event-loop iterations. A burst of 200 was
#: read in a statement of 5-9 sessions and then one of the rest. In one statement, bench/slack.py
#: p99 median over 20 bursts each, alternated: 80.0 -> 72.6 ms (under 100 ms in 15 -> 20 of
#: them), and in a second A/B 79.8 -> 75.8 ms (20 -> 18). 30 ms, not 10: on a slower machine
#: (or minute) a burst of 200 arrives over 30-37 ms.
SUBMISSION_READ_SETTLE_SECONDS = 0.03


class Completions:
    """Group commit of form completions: at most ``max_in_flight`` transactions at a time, each
    completing every answer that was waiting when it began (up to ``max_batch``).

    A lone answer on an idle server commits at once; under a burst, one transaction completes
    many tasks, whoever answered them (each guarded on 'pending', so of racing answers exactly
    one wins), while the next batch gathers. Four batches may be in flight: the first answers of
    a burst go alone, in small commits whose round trips crawl while the loop answers the rest
    of the burst, and a batch waiting for one of them to end waited that long too (bench/slack.py,
    p99 median over the rounds: one in flight ~105 ms, two ~88 ms (8 rounds each, with the 0.5 ms
    GIL switch interval of ``engine.cli.main.tune_for_serving``); two 88-92 ms, three 84 ms, four
    83-85 ms (35 rounds each, same hour)). Two answers to the same task never share a
    transaction: the later one goes to another, finds the task completed and loses (its update
    waits for the first one's row lock; both lock their runs first, in id order). When a
    transaction of several answers fails, each is retried alone, so one bad answer fails only
    its own submission. Nothing is reported won before its commit. An answer from a modal names
    its form session (``Finished.session``): the completion that wins closes it, in the same
    statement.
    """

    def __init__(self, store: Store, *, max_batch: int = 100, max_in_flight: int = 4) -> None:
        self.store = store
        self._group: GroupCommit[tuple[Finished, str]] = GroupCommit(
            self._execute, what="form completions", key=lambda entry: entry[0].task["id"],
            max_batch=max_batch, max_in_flight=max_in_flight)

    @property
    def batch_sizes(self) -> collections.deque[int]:
        """Sizes of the last batches of answers taken together (tests, diagnostics)."""
        return self._group.batch_sizes

    def committer(self, actor: str, session: str | None = None) -> Callable[[Finished], Awaitable[bool]]:
        """``people.submit``'s ``commit`` for answers by ``actor`` (from form ``session``)."""
        return lambda finished: self.commit(finished, actor, session)

    async def commit(self, finished: Finished, actor: str, session: str | None = None) -> bool:
        """Complete ``finished`` as done by ``actor``: True once committed (and ``session``
        closed), False if the task was no longer pending. Raises the database error when its
        transaction failed."""
        return await self._group.commit((dataclasses.replace(finished, session=session), actor))

    async def _execute(self, entries: list[tuple[Finished, str]]) -> set[int]:
        result = await self.store.commit(None, [f for f, _ in entries], from_status="pending",
                                         actor=[actor for _, actor in entries])
        completed = set(result.completed)
        return {n for n, (finished, _) in enumerate(entries) if finished.task["id"] in completed}


def completions(ctx: BotContext) -> Completions:
    """The app's group commit of form completions (one per App)."""
    found = ctx.app.state.get(STATE_COMPLETIONS)
    if found is None:
        found = ctx.app.state[STATE_COMPLETIONS] = Completions(ctx.store)
    return cast(Completions, found)


Submission = tuple[Row, Row | None, dict[str, Any]]


def submission_reads(ctx: BotContext) -> GroupRead[str, Submission]:
    """The app's grouped reads of submitted form sessions (``sessions.get_submissions``): a
    burst of submissions reads its sessions, tasks and run contexts in one statement, once the
    submissions stop arriving (``SUBMISSION_READ_SETTLE_SECONDS``)."""
    found = ctx.app.state.get(STATE_SUBMISSION_READS)
    if found is None:
        async def fetch(ids: list[str]) -> dict[str, Submission]:
            return await sessions.get_submissions(ctx.app.db, ids, now=ctx.store.clock())

        found = ctx.app.state[STATE_SUBMISSION_READS] = GroupRead(
            fetch, max_in_flight=1, settle=SUBMISSION_READ_SETTLE_SECONDS)
    return cast(GroupRead[str, Submission], found)

def notice(text: str) -> dict[str, Any]:
    return {"response_action": "update", "view": modals.notice_view(messages.NOTICE_TITLE, text)}


def _field_error(form: Form, page: str | None, text: str) -> dict[str, Any]:
    """An error shown under the page's first input (keeps the person's answers on screen)."""
    inputs = form.page(page).inputs
    if not inputs:
        return notice(text)
    return errors_response({inputs[0].name: text})


async def session_form(ctx: BotContext, session: Row, task: Row | None = None
                        ) -> tuple[Stage, Form, dict[str, Any], Row | None, Form]:
    """(stage, form shown, payload, task, the stage's own form) of a form session; ``task`` is
    the session's task row when the caller read it already."""
    wf = ctx.app.registry.get(session["workflow"])
    stage = wf.stage(session["stage"])
    if session["task_id"] is not None:
        if task is None:
            task = await people.get_task(ctx.app.db, int(session["task_id"]))
        form = await people.load_form(stage, task_of(task))
        payload = dict(task["payload"])
    else:
        task = None
        payload = dict(session["payload"] or {})
        form = await people.load_form(stage, task_of({"id": None, "type": "start", "payload": payload,
                                                      "run_id": None, "stage": stage.name}))
    if session["purpose"] == PURPOSE_DECLINE and isinstance(form, Approval):
        return stage, form.decline_form(), payload, task, form
    return stage, form, payload, task, form


async def submission(ctx: BotContext, user_id: str, view: dict[str, Any]) -> dict[str, Any]:
    """The ack of a form modal's submission: errors, the next page, a notice, or nothing (close)."""
    sid = str(view.get("private_metadata") or "")
    # The session, its task and the run's context in one read, shared with the submissions
    # arriving meanwhile (the ack waits on every round trip).
    found = await submission_reads(ctx).get(sid)
    if found is None or found[0]["user_id"] != user_id:
        return notice(messages.session_expired())
    session, task_row, run_context = found
    if session["task_id"] is not None and task_row is None:
        return notice(messages.gone(f"task {session['task_id']} does not exist"))
    try:
        stage, form, payload, task, own_form = await session_form(ctx, session, task_row)
    except DatabaseUnavailable:
        raise  # the person is told to try again (``answered_in_ack``)
    except FlowbotError as exc:
        return notice(messages.gone(str(exc)))
    page = form.page(session["page"])
    values = (view.get("state") or {}).get("values") or {}
    page_answers = parse_submission(form, values, page)
    answers = {**(session["answers"] or {}), **page_answers}
    errors = form.validate(answers, page=page)
    if errors:
        return errors_response(errors)
    following = form.next_page(page, answers)
    if following is not None:
        await sessions.save_session(ctx.app.db, sid, answers=page_answers, page=following.name)
        try:
            next_view = modals.form_view(form, payload, session_id=sid, page=following, answers=answers)
        except FormError as exc:
            return _field_error(form, page.name, messages.form_unavailable(str(exc)))
        return {"response_action": "update", "view": next_view}
    if session["purpose"] == PURPOSE_DECLINE:
        assert isinstance(own_form, Approval)
        answers = own_form.answers(DECLINED, answers.get("comment"))
    limit = ctx.settings.max_payload_bytes
    actor = await slack_actor(ctx, user_id)
    if task is None:
        grant = await ops_of(ctx.app).require_or_none(actor, Action.START, workflow=stage.workflow.name)
        if grant is None:
            return notice(messages.not_a_starter(escape(stage.workflow.title)))
        work = people.start(ctx.store, stage, payload, answers, user_id, max_payload_bytes=limit,
                            trigger={"kind": "slack", "user": user_id, "stage": stage.name}, form=own_form,
                            audit=actor.record("start", grant.relation))
    else:
        allowed, record = await authorize(ctx, int(task["id"]), user_id, Action.SUBMIT, task=task)
        if not allowed.ok:
            return notice(await refusal(ctx, allowed, user_id))
        work = people.submit(ctx.store, int(task["id"]), answers, user_id, ctx.directory, max_payload_bytes=limit,
                             task=task, run_context=run_context, form=own_form,
                             commit=completions(ctx).committer(user_id, session=sid), authorized=True, audit=record)
    running = asyncio.ensure_future(work)
    # Slack drops an ack later than 3 s: a slow stage finishes after the ack, and the person
    # hears of a failure by DM instead of in the modal. (``asyncio.wait`` leaves the work running
    # at the deadline, with one wake-up less per answer than ``wait_for`` of a ``shield``.)
    await asyncio.wait((running,), timeout=SUBMIT_BUDGET_SECONDS)
    if not running.done():
        ctx.follow_ups.start(lambda: _report_later(ctx, user_id, sid, running), "late submission", defer=False)
        return notice(messages.still_working())
    result = running.result()
    if result.status == people.INVALID:
        return errors_response(result.errors)
    if result.status == people.FAILED:
        return _field_error(form, page.name, messages.stage_failed(result.message))
    if not result.ok:
        return notice(await refusal(ctx, result, user_id))
    if task is None or result.status == people.RECORDED:  # (a completion closed its session with it)
        await sessions.close_session(ctx.app.db, sid)
    return {}


async def _report_later(ctx: BotContext, user_id: str, sid: str, running: asyncio.Future[people.Result]) -> None:
    """A submission that outlived its ack finished: close the session, or DM why it failed."""
    try:
        result = await running
    except Exception as exc:
        log.exception("late submission failed", extra={"action": "late_submission_error"})
        result = people.Result(people.FAILED, message=f"{type(exc).__name__}: {exc}")
    if result.ok:
        await sessions.close_session(ctx.app.db, sid)
        return
    if result.status == people.INVALID:
        text = messages.stage_failed("; ".join(f"{k}: {v}" for k, v in result.errors.items()))
    else:
        text = await refusal(ctx, result, user_id)
    await ctx.client.chat_postMessage(channel=user_id, text=text)


# --- external select options -------------------------------------------------------------------
