"""Email to people outside Slack: assignment notices and reminders with a one-time link to the
task's web form, and console sign-in links. Delivered through the durable outbox (kinds below) by SMTP
(``aiosmtplib``), so a mail is written with the change that caused it and sent after commit.

``SMTP_URL`` is ``smtp://[user:password@]host[:port]`` (``smtps://`` for TLS from the start,
``?starttls=1`` to upgrade a plain connection); ``FLOWBOT_MAIL_FROM`` the sender.
"""

from __future__ import annotations

import email.message
import email.utils
import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from engine.errors import ConfigError
from engine.forms import Approval
from engine.people import actions as people
from engine.people import links
from engine.runtime.app import App
from engine.runtime.outbox import PermanentFailure, RetryLater, note_progress, progress
from engine.runtime.runner import task_of
from engine.store import console_queries, queries

log = logging.getLogger(__name__)

#: An assignment for one email address: ``{"task_id", "to"}``.
ASSIGNMENT = "email.assignment"
#: A reminder for one email address (an assignee outside the Slack workspace): ``{"task_id", "to"}``.
REMINDER = "email.reminder"
#: A console sign-in link for one person: ``{"to"}`` (the link is made when the mail is sent, so
#: no live token sits in the outbox).
SIGNIN = "email.signin"


@dataclass(frozen=True)
class Smtp:
    """Where and how to send mail."""

    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool

    @classmethod
    def parse(cls, url: str) -> Smtp:
        """Read ``SMTP_URL``."""
        parts = urlparse(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(f"SMTP_URL must look like smtp://user:password@host:port, got {url!r}")
        tls = parts.scheme == "smtps"
        query = parse_qs(parts.query)
        return cls(parts.hostname, parts.port or (465 if tls else 25),
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None,
                   tls, query.get("starttls", ["0"])[0] in ("1", "true", "yes"))


async def send(smtp: Smtp, sender: str, to: str, subject: str, body: str, *, message_id: str) -> None:
    """Send one plain-text mail; RetryLater when the server is unreachable or busy."""
    import aiosmtplib

    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Message-ID"] = message_id  # the same id on a retry: receivers can drop a duplicate
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg.set_content(body)
    try:
        await aiosmtplib.send(msg, hostname=smtp.host, port=smtp.port, username=smtp.username,
                              password=smtp.password, use_tls=smtp.use_tls, start_tls=smtp.start_tls or None,
                              timeout=30)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise PermanentFailure(f"mail to {to} refused: {exc}") from None
    except ValueError as exc:  # not an address SMTP can carry: no retry makes it one
        raise PermanentFailure(f"mail to {to!r}: {exc}") from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise RetryLater(f"mail to {to}: {exc}", delay=30.0) from None


def is_email(entry: Any) -> bool:
    """Whether an assignee entry is an email address."""
    return isinstance(entry, str) and "@" in entry and not entry.startswith("@")


async def queue_assignment(app: App, task_id: int, to: str) -> bool:
    """Queue an assignment mail for ``to`` (a person outside Slack), once per task and address;
    whether a new one was queued."""
    return await _queue(app, ASSIGNMENT, task_id, to)


async def queue_reminder(app: App, task_id: int, to: str) -> bool:
    """Queue a reminder mail for ``to`` (a person outside Slack while Slack is on), once per task
    and address (a task is reminded once); whether a new one was queued."""
    return await _queue(app, REMINDER, task_id, to)


async def _queue(app: App, kind: str, task_id: int, to: str) -> bool:
    # The check and the insert share a transaction; a retried Slack delivery that queued the
    # mail before it failed finds it and queues nothing more.
    async with app.db.transaction() as tx:
        found = await tx.fetch_one(console_queries.MAIL_QUEUED, {"task_id": task_id, "kind": kind, "to": to})
        if found is not None:
            return False
        task = await tx.fetch_one(queries.GET_TASK, {"id": task_id})
        run_id = str(task["run_id"]) if task else None
        await app.store.add_effects(tx, [(kind, {"task_id": task_id, "to": to}, task_id, run_id)],
                                    app.store.clock())
        await tx.notify()
    return True


def assignment_text(title: str, asked_by: str, workflow: str, facts: list[tuple[str, str]], link: str) -> str:
    """The body of an assignment mail: what is asked, by whom, and the link."""
    lines = [f"{title}", "", f"{asked_by} asks you to act on a step of \"{workflow}\"."]
    if facts:
        lines.append("")
        lines += [f"  {label}: {value}" for label, value in facts]
    lines += ["", "Open it (the link signs you in, works once and expires in 7 days):", link, "",
              "-- flowbot"]
    return "\n".join(lines)


def install(app: App, *, assigned_too: bool) -> None:
    """Register the mail handlers on ``app`` (when SMTP is configured). With ``assigned_too``
    (Slack is off) ``form.assigned`` mails every email assignee too."""
    settings = app.settings
    assert settings.smtp_url and settings.mail_from
    smtp = Smtp.parse(settings.smtp_url)
    sender = settings.mail_from
    domain = sender.rsplit("@", 1)[-1]

    async def mail_assignment(task_id: int, to: str, effect_id: int, prefix: str = "") -> None:
        task = await app.db.fetch_one(queries.GET_TASK, {"id": task_id})
        if task is None or task["status"] != "pending":
            return  # done or gone before the mail went: nothing to ask
        stage = app.store.stage_of(task)
        form = await people.load_form(stage, task_of(task))
        facts = form.facts.render(task["payload"]) if isinstance(form, Approval) else []
        asked_by = str(task.get("created_by") or "flowbot")
        if asked_by in ("engine", "") or asked_by.startswith(("job:", "hook:")):
            asked_by = f"The {task['workflow']} workflow"
        now = app.store.clock()
        token = await links.create(app.db, to, now, purpose=links.TASK, task_id=task_id)
        body = assignment_text(form.title, asked_by, task["workflow"], facts, links.url(app.settings.base_url(), token))
        await send(smtp, sender, to, f"[flowbot] {prefix}{form.title}", body,
                   message_id=f"<flowbot-{effect_id}-{abs(hash(to)) % 10**8}@{domain}>")

    async def assignment(row: dict[str, Any]) -> None:
        p = row["payload"]
        await mail_assignment(int(p["task_id"]), str(p["to"]), row["id"])

    async def reminder(row: dict[str, Any]) -> None:
        p = row["payload"]
        await mail_assignment(int(p["task_id"]), str(p["to"]), row["id"], prefix="Reminder: ")

    def current_assignees(prefix: str) -> Any:
        """A handler mailing the task's email assignees as they are now (after an escalation or a
        handover: the new ones), each once per effect."""

        async def handler(row: dict[str, Any]) -> dict[str, Any]:
            task = await app.db.fetch_one(queries.GET_TASK, {"id": int(row["payload"]["task_id"])})
            users = [u for u in ((task or {}).get("assignee") or {}).get("users") or [] if is_email(u)]
            sent = await progress(app.db, row["id"])
            for to in users:
                if to in sent:
                    continue  # mailed before a retry of this effect
                await mail_assignment(int(row["payload"]["task_id"]), to, row["id"], prefix=prefix)
                await note_progress(app.db, row["id"], {to: True})
            return {"mailed": users}

        return handler

    async def signin(row: dict[str, Any]) -> None:
        to = str(row["payload"]["to"])
        token = await links.create(app.db, to, app.store.clock())
        body = ("Sign in to flowbot with this link (it works once and expires in 15 minutes):\n"
                f"{links.url(app.settings.base_url(), token)}\n\nIf you did not ask for it, ignore this mail.\n")
        await send(smtp, sender, to, "[flowbot] Your sign-in link", body,
                   message_id=f"<flowbot-{row['id']}@{domain}>")

    app.add_outbox_handler(ASSIGNMENT, assignment)
    app.add_outbox_handler(REMINDER, reminder)
    app.add_outbox_handler(SIGNIN, signin)
    if assigned_too:
        # Slack is off: the assignments, reminders, escalations and handovers Slack would DM.
        from engine.people import followups
        from engine.people.actions import HANDOVER

        app.add_outbox_handler("form.assigned", current_assignees(""))
        app.add_outbox_handler(followups.REMINDER, current_assignees("Reminder: "))
        app.add_outbox_handler(followups.ESCALATED, current_assignees(""))
        app.add_outbox_handler(HANDOVER, current_assignees(""))
        passes = followups.Reminders(app, settings=followups.ReminderSettings.from_settings(app.settings))
        app.add_background(passes.run)


class MailPlugin:
    """Registers the mail handlers on every flowbot process whose settings configure SMTP (the
    processes running the outbox are the ones that send)."""

    name = "mail"

    def add_commands(self, subparsers: Any, settings_factory: Any) -> None:
        """No commands of its own."""

    async def setup(self, app: App) -> None:
        """Install the handlers when SMTP is configured (and mail every assignee while Slack is off)."""
        if app.settings.mail_enabled:
            install(app, assigned_too=not app.settings.slack_enabled)

    async def close(self) -> None:
        """Nothing to release."""


#: The ``flowbot.plugins`` entry point.
plugin = MailPlugin()
