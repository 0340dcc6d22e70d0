"""The console's task page for timeouts and approvals needing several people, over real HTTP: it
shows the deadline and who has decided so far; a kept decision, a late answer after the timeout,
a second decision and the run's own starter each get a page that says what happened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from browsing import Console, console_settings, start_console
from support import drain
from test_pages import get_json, sign_in

from engine.store import waits

STAGES = {
    "buy/workflow.py": """
        from engine import Workflow
        workflow = Workflow("buy")
        ask = workflow.script("ask")
        two = workflow.form("two", assignee=["max@example.com", "ann@example.com", "sam@example.com"],
                            module="review_two", timeout="5d", on_timeout="declined")
        quick = workflow.form("quick", assignee="max@example.com", module="review_own", timeout="1s",
                              on_timeout="declined")
        done = workflow.script("done")
        for form in (two, quick):
            workflow.transition(ask, form, on=form.name)
            workflow.transition(form, done)
    """,
    "buy/ask.py": """
        def run(task, ctx):
            ctx.run["started_by"] = "ann@example.com"
            ctx.send(task["to"], task.payload)
    """,
    "buy/review_two.py": """
        from engine.forms import Approval
        form = Approval("Laptop", {"Amount": "{amount} EUR"}, approvers=2, allow_self_approval=False)
        def run(task, answers, ctx):
            ctx.run["decisions"] = answers["decisions"]
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/review_own.py": """
        from engine.forms import Approval
        form = Approval("Laptop")
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/done.py": "def run(task, ctx):\n    ctx.run['outcome'] = task.type\n",
}


@pytest.fixture
async def shop(database_url: str, tmp_path: Path):
    async for c in start_console(console_settings(database_url, tmp_path, STAGES)):
        yield c


async def decide(http: aiohttp.ClientSession, shop: Console, task_id: int, csrf: str,
                 decision: str = "approved") -> tuple[int, str]:
    async with http.post(f"{shop.base}/console/tasks/{task_id}",
                         data={"_csrf": csrf, "decision": decision, "comment": "ok"}) as resp:
        return resp.status, await resp.text()


async def test_an_approval_needing_two_shows_who_decided_and_refuses_the_starter(shop, http) -> None:
    run_id = await shop.trigger("buy", {"to": "two", "amount": 900}, stage="ask")
    task_id = await shop.pending_form(run_id)
    csrf = await sign_in(http, shop, "max@example.com")
    async with http.get(f"{shop.base}/console/tasks/{task_id}") as resp:
        page = await resp.text()
    assert "Needs 2 approvals (0 so far)" in page and "Answer by" in page
    status, text = await decide(http, shop, task_id, csrf)
    assert status == 200 and "1 of 2 approvals so far" in text
    status, data = await get_json(http, f"{shop.base}/console/tasks/{task_id}")
    assert status == 200
    assert data["policy"]["needed"] == 2 and [d["by"] for d in data["policy"]["decisions"]] == ["max@example.com"]
    assert data["policy"]["deadline"]
    status, text = await decide(http, shop, task_id, csrf)
    assert status == 409 and "already decided" in text

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ann:
        ann_csrf = await sign_in(ann, shop, "ann@example.com")
        status, text = await decide(ann, shop, task_id, ann_csrf)
        assert status == 403 and "You started this run" in text
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as sam:
        sam_csrf = await sign_in(sam, shop, "sam@example.com")
        status, text = await decide(sam, shop, task_id, sam_csrf)
        assert status == 200
    await drain(shop.app.store)
    run = await shop.app.store.get_run(run_id)
    assert run["context"]["outcome"] == "approved"
    assert [d["by"] for d in run["context"]["decisions"]] == ["max@example.com", "sam@example.com"]


async def test_an_answer_after_the_timeout_is_told_the_timeout_closed_it(shop, http) -> None:
    run_id = await shop.trigger("buy", {"to": "quick", "amount": 1}, stage="ask")
    task_id = await shop.pending_form(run_id)
    csrf = await sign_in(http, shop, "max@example.com")
    await asyncio.sleep(1.1)
    assert await waits.expire(shop.app.store) == 1
    status, text = await decide(http, shop, task_id, csrf)
    assert status == 409 and "timed out" in text and "flowbot closed it" in text


async def test_in_a_real_browser_an_approver_sees_who_decided_and_that_their_decision_is_kept(shop, page) -> None:
    run_id = await shop.trigger("buy", {"to": "two", "amount": 900}, stage="ask")
    task_id = await shop.pending_form(run_id)
    link = await shop.link("max@example.com", task_id=task_id)
    await page.goto(link)
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(f"**/console/tasks/{task_id}")
    await page.get_by_role("heading", name="Needs 2 approvals (0 so far)").wait_for()
    assert "Answer by" in await page.locator("#deadline").inner_text()
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_role("heading", name="Approved. Thank you.").wait_for()
    assert "1 of 2 approvals so far" in await page.locator("main").inner_text()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as sam:
        await sign_in(sam, shop, "sam@example.com")
        async with sam.get(f"{shop.base}/console/tasks/{task_id}") as resp:
            text = await resp.text()
    assert "Needs 2 approvals (1 so far)" in text and "max@example.com approved" in text
