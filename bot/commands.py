"""The ``/flowbot`` slash command: start, status, tasks, reassign, cancel, retry, login, help.

Slack wants an answer within 3 seconds, so the listener acks at once (``help`` and malformed
commands are answered right in the ack, which needs no I/O) and does the rest after the ack
(``bot.acks.FollowUps``), answering through the command's ``response_url`` (ephemeral).

Who may start a workflow is ``Workflow(..., starters=[...])``: emails, Slack user ids, user
groups (``S…`` / ``@handle``), channels (``C…``) or ``Team``s; without ``starters`` everyone may.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot import messages, store
from bot.blocks import chunks, context, escape, header, section
from bot.context import BotContext, slack_actor
from engine.context import check_payload
from engine.errors import DatabaseUnavailable, FlowbotError, Refused, UnknownWorkflow
from engine.forms import FormError
from engine.ops import runs as run_ops
from engine.ops.access import Action
from engine.ops.base import ops_of
from engine.people import actions as people
from engine.workflow import StageKind, Workflow

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp

log = logging.getLogger(__name__)

COMMAND = messages.COMMAND
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Payload key the command sets to the Slack user who started the run (never taken from the text).
STARTED_BY = "started_by"
SUBCOMMANDS = ("start", "status", "tasks", "reassign", "cancel", "retry", "login", "help")
TASKS_SHOWN = 20
RUNS_SHOWN = 10
STEPS_SHOWN = 40


@dataclass
class Reply:
    """What the person sees: an ephemeral text (and blocks) — or nothing (a modal opened)."""

    text: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def args(self) -> dict[str, Any]:
        """Keyword arguments of ``respond`` / ``ack``."""
        out: dict[str, Any] = {"text": self.text or "", "response_type": "ephemeral"}
        if self.blocks:
            out["blocks"] = self.blocks
        return out


@dataclass
class Command:
    """One ``/flowbot`` invocation."""

    user_id: str
    text: str
    trigger_id: str | None = None
    channel_id: str | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> Command:
        """From Slack's slash command body."""
        return cls(str(body["user_id"]), str(body.get("text") or ""), body.get("trigger_id"), body.get("channel_id"))


#: What Slack escapes in command text (the manifest sets ``should_escape``): its entities
#: (``<@U…|name>``, ``<#C…|name>``, ``<!subteam^S…|@handle>``, ``<mailto:…|…>``, ``<https://…>``)
#: and the three characters ``&amp;`` ``&lt;`` ``&gt;`` the person typed.
_SLACK_ESCAPE_RE = re.compile(r"<([^<>]*)>|&(amp|lt|gt);")
_ENTITY_CHARS = {"amp": "&", "lt": "<", "gt": ">"}


def _entity(inner: str) -> str:
    target, _bar, label = inner.partition("|")
    if target[:1] in ("@", "#"):
        return target[1:]  # <@U123|sam> → U123, <#C123|general> → C123
    if target.startswith("!"):
        special = target[1:]
        if special.startswith("subteam^"):
            return special.split("^", 1)[1]  # <!subteam^S123|@staff> → S123
        if special.startswith("date^"):
            return label or special
        return label or "@" + special  # <!here> → @here
    if target.startswith("mailto:"):
        return target[len("mailto:"):]
    return target  # a link: its address


def _chars(text: str) -> str:
    return re.sub(r"&(amp|lt|gt);", lambda m: _ENTITY_CHARS[m.group(1)], text)


def unescape(text: str) -> str:
    """Command text as the person typed it, with mentions, channels and user groups as their
    ids: ``<@U123|sam>`` → ``U123``, ``<#C123|general>`` → ``C123``, ``<mailto:a@b.c|a@b.c>`` →
    ``a@b.c``, ``<https://x.y|x.y>`` → ``https://x.y``, ``&lt;`` → ``<`` (one pass, so a typed
    ``&amp;lt;`` stays ``&lt;``)."""

    def replace(m: re.Match[str]) -> str:
        return _ENTITY_CHARS[m.group(2)] if m.group(2) else _chars(_entity(m.group(1)))

    return _SLACK_ESCAPE_RE.sub(replace, text)


def split(text: str) -> list[str]:
    """The words of a command, unescaped (``key="two words"`` stays one word); ValueError on
    bad quotes."""
    return [unescape(word) for word in shlex.split(text.replace("“", '"').replace("”", '"'))]


def parse_value(raw: str) -> Any:
    """``42`` → 42, ``true`` → True, ``{"a": 1}`` → a dict; anything else stays text."""
    if raw[:1] in "-0123456789[{" or raw in ("true", "false", "null"):
        try:
            return json.loads(raw)
        except ValueError:
            pass
    return raw


def parse_payload(args: list[str]) -> tuple[dict[str, Any], str | None]:
    """``key=value`` words as a payload, or the first word that is not one."""
    payload: dict[str, Any] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or not KEY_RE.match(key):
            return {}, arg
        payload[key] = parse_value(value)
    return payload, None


def quick_reply(ctx: BotContext, text: str) -> Reply | None:
    """The answer that fits in the ack (no I/O): help, an unknown subcommand, bad quoting.
    None when the command needs work after the ack."""
    try:
        words = split(text)
    except ValueError:
        return Reply(messages.usage(f"{COMMAND} start <workflow> key=value ..."))
    if not words or words[0] == "help":
        wfs = sorted((w.name, w.title) for w in ctx.app.registry.workflows.values() if startable(w))
        return Reply(messages.help_text(wfs))
    if words[0] not in SUBCOMMANDS:
        return Reply(messages.unknown_subcommand(escape(words[0])))
    return None


def startable(wf: Workflow) -> bool:
    """Whether a workflow has somewhere a person can start it (a start form or one start script)."""
    starts = wf.start_stages()
    return any(s.kind is StageKind.FORM for s in starts) or len(starts) == 1


# --- permission ---------------------------------------------------------------------------------


async def may_start(ctx: BotContext, wf: Workflow, user_id: str) -> bool:
    """Whether ``user_id`` may start ``wf``: the engine's access rule (its ``starters``, or
    everyone when it names none; its operators)."""
    actor = await slack_actor(ctx, user_id)
    return await ops_of(ctx.app).require_or_none(actor, Action.START, workflow=wf.name) is not None


async def may_see_run(ctx: BotContext, report: dict[str, Any], user_id: str) -> bool:
    """Whether ``user_id`` may see a run's report in Slack: the engine's access rule (they started
    it or are asked in it; its workflow's operators and viewers), or they answered one of its forms."""
    run = await ctx.store.get_run(report["id"])
    grant = await ops_of(ctx.app).require_or_none(
        await slack_actor(ctx, user_id), Action.READ_RUN, workflow=report["workflow"], run=run,
        assignees=[s["assignee"] for s in report["steps"] if s.get("assignee")])
    if grant is not None:
        return True
    return await store.took_part(ctx.app.db, report["id"], user_id)


# --- subcommands -----------------------------------------------------------------------------------


async def start(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``start <workflow> [key=value ...]``: open its start form, or start a run."""
    if not args:
        return Reply(messages.usage(f"{COMMAND} start <workflow> [key=value ...]"))
    try:
        wf = ctx.app.registry.get(args[0])
    except UnknownWorkflow:
        return Reply(messages.unknown_workflow(escape(args[0]), sorted(ctx.app.registry.workflows)))
    if not await may_start(ctx, wf, cmd.user_id):
        return Reply(messages.not_a_starter(escape(wf.title)))
    payload, bad = parse_payload(args[1:])
    if bad is not None:
        return Reply(messages.bad_argument(escape(bad)))
    payload[STARTED_BY] = cmd.user_id
    try:
        payload = check_payload(payload, limit=ctx.settings.max_payload_bytes, where=f"{COMMAND} start")
    except FlowbotError as exc:
        return Reply(messages.start_failed(escape(wf.title), escape(str(exc))))
    starts = wf.start_stages()
    forms = [s for s in starts if s.kind is StageKind.FORM]
    if forms:
        if not cmd.trigger_id:
            return Reply(messages.not_startable(escape(wf.title), "its start form needs a trigger id"))
        from bot import interactions

        try:
            await interactions.open_start_form(ctx, cmd.trigger_id, cmd.user_id, forms[0], payload)
        except FormError as exc:
            return Reply(messages.start_failed(escape(wf.title), escape(str(exc))))
        return Reply()
    if len(starts) != 1:
        reason = "it has no start stage" if not starts else "it has several start stages"
        return Reply(messages.not_startable(escape(wf.title), reason))
    try:
        started = await run_ops.trigger(ops_of(ctx.app), wf.name, payload, await slack_actor(ctx, cmd.user_id),
                                        stage=starts[0].name, trigger={"command": COMMAND},
                                        context={STARTED_BY: cmd.user_id})
    except DatabaseUnavailable:
        raise  # the person hears to try again (``work``), not that the start failed
    except FlowbotError as exc:
        return Reply(messages.start_failed(escape(wf.title), escape(str(exc))))
    run_id = started["run_id"]
    from bot.home import refresh_quietly

    await refresh_quietly(ctx, cmd.user_id)
    return Reply(messages.run_started(escape(wf.title), run_id))


async def find_run(ctx: BotContext, ref: str) -> str | None:
    """A run id from a full id or a prefix of at least 4 characters (unambiguous)."""
    ref = ref.strip().lower()
    if len(ref) < 4 or not re.fullmatch(r"[0-9a-f-]+", ref):
        return None
    ids = await ctx.app.store.run_ids_by_prefix(ref)
    return ids[0] if len(ids) == 1 else None


def report_blocks(ctx: BotContext, data: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's execution report as message blocks."""
    from bot.home import workflow_title

    title = workflow_title(ctx, data["workflow"])
    blocks = [header(f"{title}: {data['status']}"), context(f"run `{data['id']}`")]
    steps = data.get("steps") or []
    lines = [messages.step_line(s["stage"], s["status"], s.get("completed_by")) for s in steps[:STEPS_SHOWN]]
    blocks += [section(piece) for piece in chunks("\n".join(lines))] if lines else []
    if len(steps) > STEPS_SHOWN:
        blocks.append(context(messages.more_items(len(steps) - STEPS_SHOWN)))
    if data.get("error"):
        blocks.append(section(f":x: `{escape(str(data['error']).splitlines()[0])}`"))
    unrouted = data.get("unrouted") or []
    if unrouted:
        blocks.append(context(f"{len(unrouted)} task(s) no transition took"))
    return blocks


async def status(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``status [run-id]``: one run's report (``may_see_run``), or my recent runs."""
    from bot.home import recent_runs, run_blocks

    if args:
        run_id = await find_run(ctx, args[0])
        data = await ctx.store.report(run_id) if run_id else None
        if data is None or not await may_see_run(ctx, data, cmd.user_id):
            return Reply(messages.unknown_run(escape(args[0])))
        return Reply(f"{data['workflow']}: {data['status']}", report_blocks(ctx, data))
    runs = await recent_runs(ctx, cmd.user_id, limit=RUNS_SHOWN)
    if not runs:
        return Reply(messages.NO_RUNS)
    return Reply(messages.HOME_RUNS, [section(f"*{messages.HOME_RUNS}*"), *run_blocks(ctx, runs, RUNS_SHOWN)])


async def tasks(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``tasks``: what waits for me, each with an Open button."""
    from bot.home import TASKS_COUNTED, pending_tasks, task_blocks

    rows = await pending_tasks(ctx, cmd.user_id, limit=TASKS_COUNTED)
    if not rows:
        return Reply(messages.NO_TASKS)
    return Reply(messages.TASKS_TITLE,
                 [section(f"*{messages.TASKS_TITLE}*"), *await task_blocks(ctx, rows, TASKS_SHOWN)])


async def reassign(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``reassign <task-id> <@someone|email>``: hand one of my tasks to someone else."""
    from bot import reminders
    from bot.answers import refusal

    if len(args) != 2 or not args[0].isdigit():
        return Reply(messages.usage(f"{COMMAND} reassign <task-id> <@someone|email>"))
    result = await reminders.reassign(ctx, int(args[0]), args[1], cmd.user_id)
    if result.status == people.INVALID:
        return Reply(f":warning: {escape(result.message or '')}. Nothing was changed.")
    if not result.ok:
        return Reply(await refusal(ctx, result, cmd.user_id))
    to = reminders.describe((result.task or {}).get("assignee") or {})
    from bot.home import refresh_quietly

    await refresh_quietly(ctx, cmd.user_id)
    return Reply(messages.reassign_done(int(args[0]), to))


async def cancel(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``cancel <run-id> [reason]``: the engine's cancel, as this Slack user (operators may)."""
    if not args:
        return Reply(messages.usage(f"{COMMAND} cancel <run-id> [reason]"))
    try:
        actor = await slack_actor(ctx, cmd.user_id)
        done = await run_ops.cancel(ops_of(ctx.app), args[0], actor, " ".join(args[1:]) or None)
    except Refused as exc:
        return Reply(messages.refused(escape(str(exc))))
    return Reply(messages.run_cancelled(done["run_id"], done["tasks_cancelled"]))


async def retry(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``retry <run-id>``: the engine's retry of a failed run, as this Slack user."""
    if len(args) != 1:
        return Reply(messages.usage(f"{COMMAND} retry <run-id>"))
    try:
        done = await run_ops.retry(ops_of(ctx.app), args[0], await slack_actor(ctx, cmd.user_id))
    except Refused as exc:
        return Reply(messages.refused(escape(str(exc))))
    return Reply(messages.run_retried(done["run_id"], done["retried"]))


async def login(ctx: BotContext, cmd: Command, args: list[str]) -> Reply:
    """``/flowbot login``: queue a one-time console sign-in link for the person, sent by DM (the
    sign-in page's Slack path: ``bot.delivery``'s ``console.signin`` makes the link when it sends,
    so no live token waits in the outbox). Written before the ack, so the ack can say it is on
    its way; one insert, well inside Slack's 3 seconds."""
    from bot.delivery import CONSOLE_SIGNIN

    app = ctx.app
    async with app.db.transaction() as tx:
        await app.store.add_effects(tx, [(CONSOLE_SIGNIN, {"to": cmd.user_id}, None, None)], app.store.clock())
        await tx.notify()
    return Reply(messages.LOGIN_SENT)


Handler = Callable[[BotContext, Command, list[str]], Awaitable[Reply]]
HANDLERS: dict[str, Handler] = {"start": start, "status": status, "tasks": tasks, "reassign": reassign,
                                "cancel": cancel, "retry": retry, "login": login}


async def handle(ctx: BotContext, cmd: Command) -> Reply:
    """What ``/flowbot <text>`` does and answers (``quick_reply`` first)."""
    quick = quick_reply(ctx, cmd.text)
    if quick is not None:
        return quick
    words = split(cmd.text)
    return await HANDLERS[words[0]](ctx, cmd, words[1:])


# --- wiring ------------------------------------------------------------------------------------------


def register(bolt: AsyncApp, ctx: BotContext) -> None:
    """``/flowbot``: ack within the 3 seconds, then the work after the ack."""

    async def on_command(ack: Any, body: dict[str, Any], respond: Any) -> None:
        quick = quick_reply(ctx, str(body.get("text") or ""))
        if quick is not None:
            await ack(**quick.args())
            return
        if str(body.get("text") or "").split()[:1] == ["login"]:
            try:
                reply = await login(ctx, Command.of(body), [])
            except DatabaseUnavailable:
                reply = Reply(messages.try_again())
            await ack(**reply.args())
            return
        await ack()
        ctx.follow_ups.start(lambda: work(Command.of(body), respond), f"{COMMAND} command", defer=False)

    async def work(cmd: Command, respond: Any) -> None:
        try:
            reply = await handle(ctx, cmd)
        except DatabaseUnavailable:
            reply = Reply(messages.try_again())
        except Exception as exc:
            log.exception("%s %s failed", COMMAND, cmd.text, extra={"action": "command_error"})
            reply = Reply(messages.command_failed(f"{type(exc).__name__}: {exc}"))
        if reply.text is not None:
            await respond(**reply.args())

    bolt.command(COMMAND)(on_command)
