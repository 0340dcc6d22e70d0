"""Interactivity: the buttons of task cards (Approve, Decline, Open, Claim, Reassign), the
lists' Open buttons, and external-select options; form submissions are ``bot.submissions``.

Every listener acks first (Slack wants an answer within 3 seconds) and does its work after the
ack; work that opens a modal runs at once, before its trigger id expires. Who may act is decided
by ``engine.people.actions`` (an assignee, or a member of the task's team); anyone else gets an
ephemeral explanation and nothing changes. Clicks' after-ack work runs a few at a time and gives
way to requests awaiting their ack (``bot.acks.Priority``): acks first.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot import messages, modals
from bot.answers import or_try_again, refusal, tell, try_again_answer
from bot.blocks import escape
from bot.cards import ACTION_APPROVE, ACTION_DECLINE, ACTION_OPEN, ACTION_REASSIGN
from bot.context import BotContext, authorize
from bot.delivery import ACTION_CLAIM
from bot.home import OPEN_ACTION_RE
from bot.submissions import PURPOSE_DECLINE, PURPOSE_FORM, PURPOSE_START, completions, notice, session_form, submission
from bot.views import errors_response, suggest_options
from engine.errors import DatabaseUnavailable
from engine.forms import APPROVED, DECLINED, Approval, Form, FormError
from engine.ops.access import Action
from engine.people import actions as people
from engine.people import sessions
from engine.runtime.runner import task_of
from engine.store.db import Row
from engine.workflow import Stage

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)

def register(bolt: AsyncApp, ctx: BotContext) -> None:
    """Add the card buttons, the form modal submission and the options listener to ``bolt``."""

    def acked_then(work: Callable[[dict[str, Any], int], Awaitable[object]], what: str, *,
                   defer: bool = True) -> Callable[..., Awaitable[None]]:
        """A card button's listener: ack, then ``work(body, task_id)`` after the ack
        (``defer=False``: at once, for work that opens a modal before its trigger id expires)."""

        async def listener(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            ctx.follow_ups.start(lambda: or_try_again(ctx, body, work(body, int(action["value"]))), what,
                                 defer=defer)

        return listener

    def answered_in_ack(callback_id: str,
                        answer: Callable[[BotContext, str, dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
        """A modal whose answer (errors, next view, or close) rides on the ack of its submission:
        answered by the HTTP endpoint directly (``ctx.view_answers``), by Bolt in Socket Mode."""

        async def answer_view(user_id: str, view: dict[str, Any]) -> dict[str, Any]:
            try:
                return await answer(ctx, user_id, view)
            except DatabaseUnavailable:
                return try_again_answer(view)

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
    # Decline may open its comment modal: at once, before its trigger id expires (3 s after the click).
    bolt.action(ACTION_DECLINE)(acked_then(lambda body, task: decide(ctx, body, task, DECLINED), "Decline",
                                           defer=False))
    bolt.action(re.compile(rf"^{re.escape(ACTION_OPEN)}$"))(acked_then(
        lambda body, task: open_task_form(ctx, body["trigger_id"], body["user"]["id"], task, where=body),
        "Open", defer=False))
    bolt.action(ACTION_CLAIM)(acked_then(lambda body, task: claim(ctx, body, task), "Claim"))
    bolt.action(ACTION_REASSIGN)(acked_then(lambda body, task: offer_reassign(ctx, body, task), "Reassign",
                                            defer=False))
    answered_in_ack(modals.CALLBACK_REASSIGN, reassign_submission)
    bolt.action(OPEN_ACTION_RE)(acked_then(
        lambda body, task: open_task_form(ctx, body["trigger_id"], body["user"]["id"], task), "Open from a list",
        defer=False))
    bolt.options(re.compile(".*"))(on_options)


def opens_a_modal(body: dict[str, Any]) -> bool:
    """Whether a ``block_actions`` request is a click that may open a modal (Open, Decline with
    its comment, Reassign, a list's Open): it must reach its listener before its trigger id
    expires, not after the acks of a burst (``bot.endpoint``)."""
    for action in body.get("actions") or []:
        action_id = str(action.get("action_id") or "")
        if action_id in (ACTION_OPEN, ACTION_DECLINE, ACTION_REASSIGN) or OPEN_ACTION_RE.match(action_id):
            return True
    return False


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
    record = None
    if task is None:
        allowed = people.Result(people.GONE, message="the task no longer exists")
    else:
        allowed, record = await authorize(ctx, task_id, user, Action.SUBMIT, task=task)
    if not allowed.ok:
        await tell(ctx, body, await refusal(ctx, allowed, body["user"]["id"]))
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
                                 run_context=run_context, form=form, commit=completions(ctx).committer(user),
                                 authorized=True, audit=record)
    if not result.ok:
        await tell(ctx, body, await refusal(ctx, result, body["user"]["id"]))


async def claim(ctx: BotContext, body: dict[str, Any], task_id: int) -> None:
    """A team member takes a team task (first claim wins; the cards follow through the outbox)."""
    user = body["user"]["id"]
    allowed, record = await authorize(ctx, task_id, user, Action.CLAIM)
    claimed_by = ((allowed.task or {}).get("assignee") or {}).get("claimed_by")
    if allowed.status == people.FORBIDDEN and claimed_by:  # say who was first, not "not yours"
        result = people.Result(people.ALREADY, task=allowed.task, by=claimed_by, message="claimed")
    elif not allowed.ok:
        result = allowed
    else:
        result = await people.claim(ctx.store, task_id, user, ctx.directory, authorized=True,
                                    audit=record and dataclasses.replace(record, action="claim"))
    if not result.ok:
        await tell(ctx, body, await refusal(ctx, result, body["user"]["id"]))


async def open_task_form(ctx: BotContext, trigger_id: str, user_id: str, task_id: int,
                         *, where: dict[str, Any] | None = None) -> people.Result:
    """Open the modal of a pending form task for ``user_id`` (if they may act on it).

    ``where`` is the interaction body, to answer a refusal ephemerally where they clicked.
    """
    body = where or {"user": {"id": user_id}, "trigger_id": trigger_id}
    body = {**body, "trigger_id": trigger_id}
    allowed, _ = await authorize(ctx, task_id, user_id, Action.SUBMIT)
    if not allowed.ok:
        await tell(ctx, body, await refusal(ctx, allowed, body["user"]["id"]))
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
    sid = await sessions.open_session(ctx.app.db, user_id=user_id, workflow=task["workflow"], stage=task["stage"],
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
    sid = await sessions.open_session(ctx.app.db, user_id=user_id, workflow=stage.workflow.name, stage=stage.name,
                                    payload=payload or {}, page=page.name, purpose=PURPOSE_START,
                                    now=ctx.store.clock())
    view = modals.form_view(form, payload or {}, session_id=sid, page=page)
    await ctx.client.views_open(trigger_id=trigger_id, view=view)
    return sid


# --- reassigning from a card ------------------------------------------------------------------


async def offer_reassign(ctx: BotContext, body: dict[str, Any], task_id: int) -> None:
    """A card's Reassign button: a person picker for someone who may act on the task."""
    from bot.home import task_title

    allowed, _ = await authorize(ctx, task_id, body["user"]["id"], Action.REASSIGN)
    if not allowed.ok:
        await tell(ctx, body, await refusal(ctx, allowed, body["user"]["id"]))
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
        return notice(messages.gone("the modal names no task"))
    picked = ((view.get("state") or {}).get("values") or {}).get(modals.REASSIGN_INPUT) or {}
    to = (picked.get(modals.REASSIGN_INPUT) or {}).get("selected_user")
    if not to:
        return errors_response({modals.REASSIGN_INPUT: messages.REASSIGN_PICK})
    result = await reminders.reassign(ctx, task_id, str(to), user_id)
    if result.status == people.INVALID:
        return errors_response({modals.REASSIGN_INPUT: result.message or messages.REASSIGN_PICK})
    if not result.ok:
        return notice(await refusal(ctx, result, user_id))
    return {}


# --- modal submission --------------------------------------------------------------------------


async def options(ctx: BotContext, body: dict[str, Any]) -> dict[str, Any]:
    """Options of an external select typed into (``options_from(query, payload)`` of the field)."""
    view = body.get("view") or {}
    session = await sessions.get_session(ctx.app.db, str(view.get("private_metadata") or ""), now=ctx.store.clock())
    if session is None:
        return {"options": []}
    try:
        _stage, form, payload, _task, _own = await session_form(ctx, session)
        return suggest_options(form, str(body.get("action_id")), str(body.get("value") or ""), payload)
    except Exception:
        log.exception("options of %s failed", body.get("action_id"), extra={"action": "options_error"})
        return {"options": []}
