"""Email for people outside Slack, through a real SMTP server on loopback (aiosmtpd): assignment
mails with a one-time link to the task's form, sign-in links, delivered once through the outbox."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from browsing import Console, Inbox, Server, console_settings, start_console
from sqlalchemy import text
from support import drain
from test_pages import _csrf

from engine.loader import find_stage
from engine.people import mail
from engine.people.followups import Reminders
from engine.runtime.outbox import OutboxDispatcher

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def mailing(database_url: str, tmp_path: Path, smtp: tuple[Inbox, Server]) -> AsyncIterator[Console]:
    """A console serving the shipped examples, with SMTP configured and Slack off."""
    _inbox, controller = smtp
    settings = console_settings(database_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{controller.port}",
                                mail_from="flowbot@example.com")
    settings = settings.with_(stages_dir=ROOT / "stages")
    async for console in start_console(settings):
        await mail.plugin.setup(console.app)
        settings = settings.with_(public_url=console.base)
        console.app.settings = settings
        yield console


async def _deliver(console: Console, at: dt.datetime | None = None) -> int:
    clock = (lambda: at) if at else console.app.store.clock
    return await OutboxDispatcher(console.app.db, console.app.outbox_handlers, clock=clock).deliver_due()


CLAIM = {"employee": "Ann", "amount": 42.5, "currency": "EUR", "description": "Taxi to the airport",
         "manager_email": "max@example.com", "requester": None}


async def test_a_manager_outside_slack_approves_the_expense_example_from_the_email_link(mailing, smtp, page) -> None:
    inbox, _ = smtp
    app = mailing.app
    run_id, _ = await app.store.start_run(find_stage(app.registry, "expense", "review"), CLAIM, type="expense",
                                          trigger={"kind": "test"})
    assert await _deliver(mailing) == 1
    assert len(inbox.messages) == 1
    msg = inbox.messages[0]
    assert msg["To"] == "max@example.com" and msg["From"] == "flowbot@example.com"
    assert msg["Subject"] == "[flowbot] Expense approval"
    body = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Taxi to the airport" in body and "42.5 EUR" in body and "expense" in body

    await page.goto(inbox.link())
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("heading", name="Expense approval").wait_for()
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_role("heading", name="Approved. Thank you.").wait_for()
    await drain(app.store)
    report = await app.store.report(run_id)
    assert report is not None and report["status"] == "completed"
    assert report["context"]["payment"].startswith("PAY-")
    # Delivered once: another pass sends nothing more.
    assert await _deliver(mailing) == 0
    assert len(inbox.messages) == 1


async def test_an_smtp_outage_delays_the_mail_and_it_is_sent_once_later(mailing, smtp) -> None:
    inbox, controller = smtp
    app = mailing.app
    controller.stop()
    await app.store.start_run(find_stage(app.registry, "expense", "review"), CLAIM, type="expense",
                              trigger={"kind": "test"})
    assert await _deliver(mailing) == 1
    row = await app.db.fetch_one(text("SELECT status, attempts, error FROM outbox WHERE kind = 'form.assigned'"))
    assert row is not None and row["status"] == "pending" and "max@example.com" in row["error"]
    controller.start()
    async with app.db.transaction() as tx:
        await tx.execute(text("UPDATE outbox SET available_at = now()"))
    assert await _deliver(mailing) == 1
    assert [m["To"] for m in inbox.messages] == ["max@example.com"]
    row = await app.db.fetch_one(text("SELECT status FROM outbox WHERE kind = 'form.assigned'"))
    assert row is not None and row["status"] == "delivered"


async def test_a_person_asks_for_a_sign_in_link_by_email_and_attempts_are_rate_limited(mailing, smtp) -> None:
    inbox, _ = smtp
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(mailing.base + "/console/signin") as resp:
            csrf = _csrf(await resp.text())
        async with http.post(mailing.base + "/console/signin",
                             data={"email": "Zoe@Example.com", "_csrf": csrf}) as resp:
            assert resp.status == 200
            assert "on its way" in await resp.text()
        assert await _deliver(mailing) == 1
        assert inbox.messages[-1]["To"] == "zoe@example.com"
        link = inbox.link()
        async with http.get(link) as resp:
            csrf = _csrf(await resp.text())
        async with http.post(link, data={"_csrf": csrf}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(mailing.base + "/console/inbox") as resp:
            assert resp.status == 200
            csrf = _csrf(await resp.text())  # a new token once signed in
        statuses = []
        for _ in range(12):
            async with http.post(mailing.base + "/console/signin", data={"email": "zoe@example.com",
                                                                       "_csrf": csrf}) as resp:
                statuses.append(resp.status)
        # 10 attempts per address and email in 15 minutes: the first one above counted too.
        assert statuses == [200] * 9 + [429] * 3


async def test_reminders_and_escalations_reach_people_outside_slack_by_email(mailing, smtp) -> None:
    inbox, _ = smtp
    app = mailing.app
    await app.store.start_run(find_stage(app.registry, "expense", "review"), CLAIM, type="expense",
                              trigger={"kind": "test"})
    await _deliver(mailing)
    later = app.store.clock() + dt.timedelta(hours=25)  # the example reminds after a day
    assert (await Reminders(app, clock=lambda: later).tick()).reminded
    await _deliver(mailing, later)
    much_later = later + dt.timedelta(days=3)  # and escalates to finance after three
    assert (await Reminders(app, clock=lambda: much_later).tick()).escalated
    await _deliver(mailing, much_later)
    assert [(m["To"], m["Subject"]) for m in inbox.messages] == [
        ("max@example.com", "[flowbot] Expense approval"),
        ("max@example.com", "[flowbot] Reminder: Expense approval"),
        ("finance@example.com", "[flowbot] Expense approval"),
    ]
