"""Interactivity: the buttons of task cards, form modals (pages, validation, submission) and
external-select options.

Every listener acks first (Slack wants an answer within 3 seconds); a modal submission is the
exception that decides before acking, because its validation errors and next page ride on the
ack. Who may act is decided by ``engine.people.actions`` (an assignee, or a member of the task's team);
anyone else gets an ephemeral explanation and nothing changes. Of two racing answers the engine
completes exactly one; the other person is told who won.

Acks stay fast under load: a submission reads its session, task and run context in one
statement and commits through a group commit (``Completions``) that completes every answer
waiting at once in one transaction; clicks' after-ack work runs a few at a time and gives way
to requests awaiting their ack (``bot.acks.Priority``): acks first.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from bot import messages, modals
from bot.blocks import escape
from bot.cards import ACTION_APPROVE, ACTION_DECLINE, ACTION_OPEN, ACTION_REASSIGN
from bot.context import BotContext
from bot.delivery import ACTION_CLAIM
from bot.views import errors_response, parse_submission, suggest_options
from engine.errors import FlowbotError
from engine.forms import APPROVED, DECLINED, Approval, Form, FormError
from engine.people import actions as people
from engine.runtime.runner import task_of
from engine.store.db import Row
from engine.store.groupcommit import GroupCommit, GroupRead
from engine.store.tasks import Finished, Store
from engine.workflow import Stage

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

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
    """The app's grouped reads of submitted form sessions (``people.get_submissions``): a
    burst of submissions reads its sessions, tasks and run contexts in one statement, once the
    submissions stop arriving (``SUBMISSION_READ_SETTLE_SECONDS``)."""
    found = ctx.app.state.get(STATE_SUBMISSION_READS)
    if found is None:
        async def fetch(ids: list[str]) -> dict[str, Submission]:
            return await people.get_submissions(ctx.app.db, ids, now=ctx.store.clock())

        found = ctx.app.state[STATE_SUBMISSION_READS] = GroupRead(
            fetch, max_in_flight=1, settle=SUBMISSION_READ_SETTLE_SECONDS)
    return cast(GroupRead[str, Submission], found)


def register(bolt: AsyncApp, ctx: BotContext) -> None:
    """Add the card buttons, the form modal submission and the options listener to ``bolt``."""

    def acked_then(work: Callable[[dict[str, Any], int], Awaitable[object]], what: str, *,
                   defer: bool = True) -> Callable[..., Awaitable[None]]:
        """A card button's listener: ack, then ``work(body, task_id)`` after the ack
        (``defer=False``: at once, for work that opens a modal before its trigger id expires)."""

        async def listener(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            ctx.follow_ups.start(lambda: work(body, int(action["value"])), what, defer=defer)

        return listener

    def answered_in_ack(callback_id: str,
                        answer: Callable[[BotContext, str, dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        """A modal whose answer (errors, next view, or close) rides on the ack of its submission:
        answered by the HTTP endpoint directly (``ctx.view_answers``), by Bolt in Socket Mode."""

        async def answer_view(user_id: str, view: dict[str, Any]) -> dict[str, Any]:
            return await answer(ctx, user_id, view)

        async def listener(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
            # Urgent until answered, as the HTTP endpoint holds each of its requests.
            with ctx.priority.urgent():
                fields = await answer_view(body["user"]["id"], view)
            await ack(**fields)

        ctx.view_answers[callback_id] = answer_view
        bolt.view_submission(callback_id)(listener)

    async def on_options(ack: Any, body: dict[str, Any]) -> None:
        await ack(**await options(ctx, body))

    # Bolt tries listeners in this order: submissions (the slowest acks) first.
    answered_in_ack(modals.CALLBACK_FORM, submission)
    bolt.action(ACTION_APPROVE)(acked_then(lambda body, task: decide(ctx, body, task, APPROVED), "Approve"))
    bolt.action(ACTION_DECLINE)(acked_then(lambda body, task: decide(ctx, body, task, DECLINED), "Decline"))
    bolt.action(re.compile(rf"^{re.escape(ACTION_OPEN)}$"))(acked_then(
        lambda body, task: open_task_form(ctx, body["trigger_id"], body["user"]["id"], task, where=body),
        "Open", defer=False))
    bolt.action(ACTION_CLAIM)(acked_then(lambda body, task: claim(ctx, body, task), "Claim"))
    bolt.action(ACTION_REASSIGN)(acked_then(lambda body, task: offer_reassign(ctx, body, task), "Reassign",
                                            defer=False))
    answered_in_ack(modals.CALLBACK_REASSIGN, reassign_submission)
    bolt.options(re.compile(".*"))(on_options)


# --- answering a person ------------------------------------------------------------------------


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


# --- context of a task -------------------------------------------------------------------------


async def _form_of(ctx: BotContext, task: Row) -> tuple[Stage, Form]:
    stage = ctx.store.stage_of(task)
    return stage, await people.load_form(stage, task_of(task))


# --- buttons -----------------------------------------------------------------------------------


async def decide(ctx: BotContext, body: dict[str, Any], task_id: int, decision: str) -> None:
    """Approve or Decline on an approval card (Decline asks for a comment when the form wants one)."""
    user = body["user"]["id"]
    # The task and its run's context in one read; the completion below is guarded on 'pending'.
    task, run_context = await people.get_task_in_run(ctx.app.db, task_id)
    if task is None:
        allowed = people.Result(people.GONE, message="the task no longer exists")
    else:
        allowed = await people.check(ctx.store, task_id, user, ctx.directory, task=task)
    if not allowed.ok:
        await tell(ctx, body, refusal(allowed))
        return
    assert allowed.task is not None
    try:
        _stage, form = await _form_of(ctx, allowed.task)
    except Exception as exc:
        await tell(ctx, body, messages.form_unavailable(f"{type(exc).__name__}: {exc}"))
        return
    if not isinstance(form, Approval):
        await open_task_form(ctx, body["trigger_id"], user, task_id, where=body)
        return
    if decision == DECLINED and form.comment_on_decline:
        await _open(ctx, body, user, allowed.task, form.decline_form(), purpose=PURPOSE_DECLINE)
        return
    result = await people.submit(ctx.store, task_id, form.answers(decision), user, ctx.directory,
                                 max_payload_bytes=ctx.settings.max_payload_bytes, task=allowed.task,
                                 run_context=run_context, form=form, commit=completions(ctx).committer(user))
    if not result.ok:
        await tell(ctx, body, refusal(result))


async def claim(ctx: BotContext, body: dict[str, Any], task_id: int) -> None:
    """A team member takes a team task (first claim wins; the cards follow through the outbox)."""
    user = body["user"]["id"]
    result = await people.claim(ctx.store, task_id, user, ctx.directory)
    if not result.ok:
        await tell(ctx, body, refusal(result))


async def open_task_form(ctx: BotContext, trigger_id: str, user_id: str, task_id: int,
                         *, where: dict[str, Any] | None = None) -> people.Result:
    """Open the modal of a pending form task for ``user_id`` (if they may act on it).

    ``where`` is the interaction body, to answer a refusal ephemerally where they clicked.
    """
    body = where or {"user": {"id": user_id}, "trigger_id": trigger_id}
    body = {**body, "trigger_id": trigger_id}
    allowed = await people.check(ctx.store, task_id, user_id, ctx.directory)
    if not allowed.ok:
        await tell(ctx, body, refusal(allowed))
        return allowed
    assert allowed.task is not None
    try:
        _stage, form = await _form_of(ctx, allowed.task)
    except Exception as exc:
        await tell(ctx, body, messages.form_unavailable(f"{type(exc).__name__}: {exc}"))
        return people.Result(people.FAILED, task=allowed.task, message=str(exc))
    await _open(ctx, body, user_id, allowed.task, form, purpose=PURPOSE_FORM)
    return allowed


async def _open(ctx: BotContext, body: dict[str, Any], user_id: str, task: Row, form: Form, *,
                purpose: str) -> None:
    page = form.first_page({})
    sid = await people.open_session(ctx.app.db, user_id=user_id, workflow=task["workflow"], stage=task["stage"],
                                    task_id=task["id"], page=page.name, purpose=purpose, now=ctx.store.clock())
    try:
        view = modals.form_view(form, task["payload"], session_id=sid, page=page)
    except FormError as exc:
        log.warning("form of task %s cannot be shown: %s", task["id"], exc, extra={"action": "form_unshowable"})
        await tell(ctx, body, messages.form_unavailable(str(exc)))
        return
    # The session already points at the first page: saving again after views.open could undo a
    # page the person submitted meanwhile.
    await ctx.client.views_open(trigger_id=body["trigger_id"], view=view)


async def open_start_form(ctx: BotContext, trigger_id: str, user_id: str, stage: Stage,
                          payload: dict[str, Any] | None = None) -> str:
    """Open a workflow's start form (``/flowbot start``); its submission starts the run.
    Returns the form session id. Raises FormError when the form cannot be shown."""
    form = await people.load_form(stage, task_of({"id": None, "type": "start", "payload": payload or {},
                                                  "run_id": None, "stage": stage.name}))
    page = form.first_page({})
    sid = await people.open_session(ctx.app.db, user_id=user_id, workflow=stage.workflow.name, stage=stage.name,
                                    payload=payload or {}, page=page.name, purpose=PURPOSE_START,
                                    now=ctx.store.clock())
    view = modals.form_view(form, payload or {}, session_id=sid, page=page)
    await ctx.client.views_open(trigger_id=trigger_id, view=view)
    return sid


# --- reassigning from a card ------------------------------------------------------------------


async def offer_reassign(ctx: BotContext, body: dict[str, Any], task_id: int) -> None:
    """A card's Reassign button: a person picker for someone who may act on the task."""
    from bot.home import task_title

    allowed = await people.check(ctx.store, task_id, body["user"]["id"], ctx.directory)
    if not allowed.ok:
        await tell(ctx, body, refusal(allowed))
        return
    assert allowed.task is not None
    title = escape(await task_title(ctx, allowed.task))
    await ctx.client.views_open(trigger_id=body["trigger_id"], view=modals.reassign_view(task_id, title))


async def reassign_submission(ctx: BotContext, user_id: str, view: dict[str, Any]) -> dict[str, Any]:
    """The ack of the Reassign modal: the task handed over (the modal closes), the error under
    the picker, or why nothing changed."""
    from bot import reminders

    try:
        task_id = int(str(view.get("private_metadata") or ""))
    except ValueError:
        return _notice(messages.gone("the modal names no task"))
    picked = ((view.get("state") or {}).get("values") or {}).get(modals.REASSIGN_INPUT) or {}
    to = (picked.get(modals.REASSIGN_INPUT) or {}).get("selected_user")
    if not to:
        return errors_response({modals.REASSIGN_INPUT: messages.REASSIGN_PICK})
    result = await reminders.reassign(ctx, task_id, str(to), user_id)
    if result.status == people.INVALID:
        return errors_response({modals.REASSIGN_INPUT: result.message or messages.REASSIGN_PICK})
    if not result.ok:
        return _notice(refusal(result))
    return {}


# --- modal submission --------------------------------------------------------------------------


def _notice(text: str) -> dict[str, Any]:
    return {"response_action": "update", "view": modals.notice_view(messages.NOTICE_TITLE, text)}


def _field_error(form: Form, page: str | None, text: str) -> dict[str, Any]:
    """An error shown under the page's first input (keeps the person's answers on screen)."""
    inputs = form.page(page).inputs
    if not inputs:
        return _notice(text)
    return errors_response({inputs[0].name: text})


async def _session_form(ctx: BotContext, session: Row, task: Row | None = None
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
        return _notice(messages.session_expired())
    session, task_row, run_context = found
    if session["task_id"] is not None and task_row is None:
        return _notice(messages.gone(f"task {session['task_id']} does not exist"))
    try:
        stage, form, payload, task, own_form = await _session_form(ctx, session, task_row)
    except FlowbotError as exc:
        return _notice(messages.gone(str(exc)))
    page = form.page(session["page"])
    values = (view.get("state") or {}).get("values") or {}
    page_answers = parse_submission(form, values, page)
    answers = {**(session["answers"] or {}), **page_answers}
    errors = form.validate(answers, page=page)
    if errors:
        return errors_response(errors)
    following = form.next_page(page, answers)
    if following is not None:
        await people.save_session(ctx.app.db, sid, answers=page_answers, page=following.name)
        try:
            next_view = modals.form_view(form, payload, session_id=sid, page=following, answers=answers)
        except FormError as exc:
            return _field_error(form, page.name, messages.form_unavailable(str(exc)))
        return {"response_action": "update", "view": next_view}
    if session["purpose"] == PURPOSE_DECLINE:
        assert isinstance(own_form, Approval)
        answers = own_form.answers(DECLINED, answers.get("comment"))
    limit = ctx.settings.max_payload_bytes
    if task is None:
        work = people.start(ctx.store, stage, payload, answers, user_id, max_payload_bytes=limit,
                            trigger={"kind": "slack", "user": user_id, "stage": stage.name}, form=own_form)
    else:
        work = people.submit(ctx.store, int(task["id"]), answers, user_id, ctx.directory, max_payload_bytes=limit,
                             task=task, run_context=run_context, form=own_form,
                             commit=completions(ctx).committer(user_id, session=sid))
    running = asyncio.ensure_future(work)
    # Slack drops an ack later than 3 s: a slow stage finishes after the ack, and the person
    # hears of a failure by DM instead of in the modal. (``asyncio.wait`` leaves the work running
    # at the deadline, with one wake-up less per answer than ``wait_for`` of a ``shield``.)
    await asyncio.wait((running,), timeout=SUBMIT_BUDGET_SECONDS)
    if not running.done():
        ctx.follow_ups.start(lambda: _report_later(ctx, user_id, sid, running), "late submission", defer=False)
        return _notice(messages.still_working())
    result = running.result()
    if result.status == people.INVALID:
        return errors_response(result.errors)
    if result.status == people.FAILED:
        return _field_error(form, page.name, messages.stage_failed(result.message))
    if not result.ok:
        return _notice(refusal(result))
    if task is None:  # a task's completion closed its session in the same batch
        await people.close_session(ctx.app.db, sid)
    return {}


async def _report_later(ctx: BotContext, user_id: str, sid: str, running: asyncio.Future[people.Result]) -> None:
    """A submission that outlived its ack finished: close the session, or DM why it failed."""
    try:
        result = await running
    except Exception as exc:
        log.exception("late submission failed", extra={"action": "late_submission_error"})
        result = people.Result(people.FAILED, message=f"{type(exc).__name__}: {exc}")
    if result.ok:
        await people.close_session(ctx.app.db, sid)
        return
    if result.status == people.INVALID:
        text = messages.stage_failed("; ".join(f"{k}: {v}" for k, v in result.errors.items()))
    else:
        text = refusal(result)
    await ctx.client.chat_postMessage(channel=user_id, text=text)


# --- external select options -------------------------------------------------------------------


async def options(ctx: BotContext, body: dict[str, Any]) -> dict[str, Any]:
    """Options of an external select typed into (``options_from(query, payload)`` of the field)."""
    view = body.get("view") or {}
    session = await people.get_session(ctx.app.db, str(view.get("private_metadata") or ""), now=ctx.store.clock())
    if session is None:
        return {"options": []}
    try:
        _stage, form, payload, _task, _own = await _session_form(ctx, session)
        return suggest_options(form, str(body.get("action_id")), str(body.get("value") or ""), payload)
    except Exception:
        log.exception("options of %s failed", body.get("action_id"), extra={"action": "options_error"})
        return {"options": []}
