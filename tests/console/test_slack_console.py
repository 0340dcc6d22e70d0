"""The console with Slack on: sign-in links by Slack DM, and email for assignees outside the
workspace (signed Slack requests are not needed here: the Slack fake answers the Web API)."""

from __future__ import annotations

import re

import aiohttp
from support import FakeClock, eventually, scalar
from test_pages import _csrf

from engine.people.followups import Reminders
from tests.fakeslack import FakeSlack
from tests.slack import StartSlack

STAGES = {
    "buy/workflow.py": """
        from engine import Workflow
        workflow = Workflow("buy", title="Purchases")
        ask = workflow.script("ask")
        approve = workflow.form("approve", assignee=["in@example.com", "supplier@outside.example"])
        workflow.transition(ask, approve)
    """,
    "buy/ask.py": "def run(task, ctx):\n    ctx.send('asked', task.payload)\n",
    "buy/approve.py": """
        from engine.forms import Approval
        form = Approval("Purchase approval", {"What": "{item}"})
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
    """,
}


async def test_an_assignee_outside_the_workspace_gets_an_email_and_a_member_a_dm(
        slack_app: StartSlack, fake_slack: FakeSlack, smtp) -> None:
    inbox, server = smtp
    fake_slack.add_user("in@example.com", "U0INSIDE")
    h = await slack_app(STAGES, smtp_url=f"smtp://127.0.0.1:{server.port}", mail_from="flowbot@example.com")
    await h.app.store.start_run(h.app.registry.get("buy").stage("ask"),
                                {"item": "Laptop"})

    async def mailed() -> bool:
        return len(inbox.messages) == 1
    await eventually(mailed, within=15, what="the outsider's mail")
    assert inbox.messages[0]["To"] == "supplier@outside.example"
    assert "Laptop" in inbox.messages[0].get_body(("plain",)).get_content()
    dms = [c for c in fake_slack.calls("chat.postMessage") if c.response.get("ok")]
    assert [c.response["channel"] for c in dms] == ["DU0INSIDE"]

    async def settled() -> bool:
        return await scalar(h.app.store, "SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0
    await eventually(settled, within=15, what="every effect delivered")
    assert len(inbox.messages) == 1  # once


async def test_a_sign_in_link_arrives_by_slack_dm(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("ann@example.com", "U0ANN")
    h = await slack_app(STAGES)
    h.app.settings = h.app.settings.with_(public_url=h.base_url)  # links name the port bound
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(h.base_url + "/console/signin") as resp:
            page = await resp.text()
            assert "by Slack DM" in page
        async with http.post(h.base_url + "/console/signin",
                             data={"email": "ann@example.com", "_csrf": _csrf(page)}) as resp:
            assert resp.status == 200

        async def dm() -> bool:
            return any(c.response.get("ok") for c in fake_slack.calls("chat.postMessage"))
        await eventually(dm, within=15, what="the sign-in DM")
        text = next(c for c in fake_slack.calls("chat.postMessage") if c.response.get("ok")).params["text"]
        link = re.search(r"<(http://[^|>]+)\|", text)
        assert link, text
        async with http.get(link.group(1)) as resp:
            csrf = _csrf(await resp.text())
        async with http.post(link.group(1), data={"_csrf": csrf}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(h.base_url + "/console/inbox?format=json") as resp:
            assert resp.status == 200


async def test_slash_login_acks_check_your_dms_and_dms_a_link_that_signs_in_as_the_users_email(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("ann@example.com", "U0ANN")
    h = await slack_app(STAGES)
    h.app.settings = h.app.settings.with_(public_url=h.base_url)
    resp = await h.command("U0ANN", "login")
    assert resp.status == 200
    assert "Check your DMs" in resp.json["text"]

    async def dm() -> bool:
        return any(c.response.get("ok") for c in fake_slack.calls("chat.postMessage"))
    await eventually(dm, within=15, what="the sign-in DM")
    sent = next(c for c in fake_slack.calls("chat.postMessage") if c.response.get("ok"))
    assert sent.response["channel"] == "DU0ANN"
    link = re.search(r"<(http://[^|>]+)\|", sent.params["text"])
    assert link, sent.params["text"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(link.group(1)) as got:
            csrf = _csrf(await got.text())
        async with http.post(link.group(1), data={"_csrf": csrf}, allow_redirects=False) as spent:
            assert spent.status == 303
        async with http.get(h.base_url + "/console/inbox?format=json") as inbox:
            assert inbox.status == 200
        # Signed in as the email Slack knows for U0ANN (assignees are written as emails).
        async with http.get(h.base_url + "/console/signin") as page:
            assert "ann@example.com" in await page.text()
        # The link worked once.
        async with http.get(link.group(1)) as got:
            csrf = _csrf(await got.text())
        async with http.post(link.group(1), data={"_csrf": csrf}) as again:
            assert again.status == 410


FOLLOWED = {
    "buy/workflow.py": """
        from engine import Workflow
        workflow = Workflow("buy", title="Purchases")
        ask = workflow.script("ask")
        approve = workflow.form("approve", assignee=lambda task: task.payload["approvers"], remind_after=3600,
                                escalate_after=4 * 3600, escalate_to="{escalate_to}")
        workflow.transition(ask, approve)
    """,
    "buy/ask.py": STAGES["buy/ask.py"],
    "buy/approve.py": STAGES["buy/approve.py"],
}


async def _followed_run(h, inbox, approvers: list[str], escalate_to: str) -> int:
    await h.app.store.start_run(h.app.registry.get("buy").stage("ask"),
                                {"item": "Laptop", "approvers": approvers, "escalate_to": escalate_to})

    async def task() -> int | None:
        return await scalar(h.app.store, "SELECT id FROM tasks WHERE kind = 'form'")
    return int(await eventually(task, within=15, what="the form task"))


async def test_an_assignee_outside_the_workspace_is_reminded_by_email_and_an_insider_in_slack(
        slack_app: StartSlack, fake_slack: FakeSlack, smtp) -> None:
    inbox, server = smtp
    fake_slack.add_user("in@example.com", "U0INSIDE")
    clock = FakeClock()
    h = await slack_app(FOLLOWED, clock=clock, smtp_url=f"smtp://127.0.0.1:{server.port}",
                        mail_from="flowbot@example.com")
    h.app.settings = h.app.settings.with_(public_url=h.base_url)
    task_id = await _followed_run(h, inbox, ["in@example.com", "supplier@outside.example"], "boss@example.com")

    async def assigned() -> bool:
        return len(inbox.messages) == 1 and len(fake_slack.calls("chat.postMessage")) >= 1
    await eventually(assigned, within=15, what="the assignment mail and DM")
    clock.advance(3600)
    assert (await Reminders(h.app).tick()).reminded == [task_id]

    async def reminded() -> bool:
        return len(inbox.messages) == 2 and any(c.params.get("thread_ts") for c in fake_slack.calls("chat.postMessage"))
    await eventually(reminded, within=15, what="the reminder mail and the Slack reminder")
    mailed = inbox.messages[1]
    assert mailed["To"] == "supplier@outside.example"
    assert mailed["Subject"] == "[flowbot] Reminder: Purchase approval"
    thread = [c for c in fake_slack.calls("chat.postMessage") if c.params.get("thread_ts")]
    assert [c.response["channel"] for c in thread] == ["DU0INSIDE"]
    # The reminder's link opens the task's form signed in as the supplier.
    link = inbox.link(1)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(link) as got:
            csrf = _csrf(await got.text())
        async with http.post(link, data={"_csrf": csrf}) as opened:
            assert opened.status == 200
            assert f"/console/tasks/{task_id}" in str(opened.url)
            assert "Purchase approval" in await opened.text()

    async def settled() -> bool:
        return await scalar(h.app.store, "SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0
    await eventually(settled, within=15, what="every effect delivered")
    assert len(inbox.messages) == 2  # once each


async def test_a_task_escalated_to_someone_outside_the_workspace_reaches_them_by_email(
        slack_app: StartSlack, fake_slack: FakeSlack, smtp) -> None:
    inbox, server = smtp
    clock = FakeClock()
    h = await slack_app(FOLLOWED, clock=clock, smtp_url=f"smtp://127.0.0.1:{server.port}",
                        mail_from="flowbot@example.com")
    # Only outsiders: the reminder goes by email alone (no card to thread under, nobody to DM).
    task_id = await _followed_run(h, inbox, ["supplier@outside.example"], "boss@outside.example")

    async def assigned() -> bool:
        return len(inbox.messages) == 1
    await eventually(assigned, within=15, what="the assignment mail")
    clock.advance(3600)
    assert (await Reminders(h.app).tick()).reminded == [task_id]

    async def reminded() -> bool:
        return len(inbox.messages) == 2
    await eventually(reminded, within=15, what="the reminder mail")
    clock.advance(3 * 3600)
    assert (await Reminders(h.app).tick()).escalated == [task_id]

    async def mailed() -> bool:
        return len(inbox.messages) == 3
    await eventually(mailed, within=15, what="assignment, reminder and escalation mails")
    assert [(m["To"], m["Subject"]) for m in inbox.messages] == [
        ("supplier@outside.example", "[flowbot] Purchase approval"),
        ("supplier@outside.example", "[flowbot] Reminder: Purchase approval"),
        ("boss@outside.example", "[flowbot] Purchase approval"),
    ]
    assert await scalar(h.app.store, "SELECT count(*) FROM outbox WHERE status = 'failed'") == 0
