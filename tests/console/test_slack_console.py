"""The console with Slack on: sign-in links by Slack DM, and email for assignees outside the
workspace (signed Slack requests are not needed here: the Slack fake answers the Web API)."""

from __future__ import annotations

import re

import aiohttp
from support import eventually, scalar
from test_pages import _csrf

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
