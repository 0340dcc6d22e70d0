"""The console's pages over real HTTP on loopback: sign-in, sessions, CSRF, access, JSON twins."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from browsing import Console

EXPENSE = {"employee": "ann@example.com", "amount": 12, "currency": "EUR", "description": "Taxi",
           "manager_email": "max@example.com"}


async def sign_in(http: aiohttp.ClientSession, console: Console, person: str, *, role: str = "member") -> str:
    """Spend a one-time link as the browser does; the session's CSRF token."""
    link = await console.link(person, role=role)
    async with http.get(link) as resp:
        csrf = _csrf(await resp.text())
    async with http.post(link, data={"_csrf": csrf}, allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
    async with http.get(console.base + "/console/inbox") as resp:
        return _csrf(await resp.text())


def _csrf(html: str) -> str:
    match = re.search(r'name="_csrf" value="([^"]+)"', html) or re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert match, html[:500]
    return match.group(1)


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url, params={"format": "json"}) as resp:
        return resp.status, await resp.json()


async def test_a_signed_out_visitor_is_sent_to_the_sign_in_page(console, http) -> None:
    async with http.get(console.base + "/console/board", allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"].startswith("/console/signin?next=")
    async with http.get(console.base + "/console/inbox?format=json") as resp:
        assert resp.status == 401


async def test_the_session_cookie_is_httponly_and_samesite_lax(console, http) -> None:
    link = await console.link("ann@example.com")
    async with http.get(link) as resp:
        cookie = resp.headers.getall("Set-Cookie")[0]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain http on loopback
    async with aiohttp.ClientSession() as fresh, fresh.get(link, headers={"X-Forwarded-Proto": "https"}) as resp:
        assert "Secure" in resp.headers.getall("Set-Cookie")[0]  # behind a proxy speaking https


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(console, http) -> None:
    run_id = await console.trigger("expense", EXPENSE, stage="review")
    task_id = await console.pending_form(run_id)
    await sign_in(http, console, "max@example.com")
    async with http.post(f"{console.base}/console/tasks/{task_id}", data={"decision": "approved"}) as resp:
        assert resp.status == 403
        assert "CSRF" in await resp.text()
    async with http.post(f"{console.base}/console/tasks/{task_id}",
                         data={"decision": "approved", "_csrf": "forged"}) as resp:
        assert resp.status == 403
    report = await console.app.store.report(run_id)
    assert report is not None
    assert [s["status"] for s in report["steps"] if s["stage"] == "review"] == ["pending"]


async def test_a_link_is_spent_once_and_a_wrong_one_signs_nobody_in(console, http) -> None:
    link = await console.link("ann@example.com")
    async with http.get(link) as resp:
        csrf = _csrf(await resp.text())
    async with http.post(link + "x", data={"_csrf": csrf}, allow_redirects=False) as resp:
        assert resp.status == 410
    async with http.post(link, data={"_csrf": csrf}, allow_redirects=False) as resp:
        assert resp.status == 303
    async with http.get(link) as resp:
        csrf = _csrf(await resp.text())
    async with http.post(link, data={"_csrf": csrf}, allow_redirects=False) as resp:
        assert resp.status == 410


async def test_a_person_who_is_not_the_assignee_is_refused_and_the_task_stays_open(console, http) -> None:
    run_id = await console.trigger("expense", EXPENSE, stage="review")
    task_id = await console.pending_form(run_id)
    csrf = await sign_in(http, console, "eve@example.com")
    async with http.get(f"{console.base}/console/tasks/{task_id}") as resp:
        assert resp.status == 403
        assert "assigned to someone else" in await resp.text()
    async with http.post(f"{console.base}/console/tasks/{task_id}",
                         data={"decision": "approved", "_csrf": csrf}) as resp:
        assert resp.status == 403
    status, inbox = await get_json(http, console.base + "/console/inbox")
    assert status == 200 and inbox["tasks"] == []
    report = await console.app.store.report(run_id)
    assert report is not None and report["status"] == "waiting"


async def test_declining_needs_a_comment_then_one_submission_wins(console, http) -> None:
    run_id = await console.trigger("expense", EXPENSE, stage="review")
    task_id = await console.pending_form(run_id)
    csrf = await sign_in(http, console, "MAX@example.com")
    url = f"{console.base}/console/tasks/{task_id}"
    async with http.post(url, data={"decision": "declined", "_csrf": csrf}) as resp:
        assert resp.status == 422
        assert "comment" in (await resp.text()).lower()
    async with http.post(url, data={"decision": "declined", "comment": "Not ours", "_csrf": csrf}) as resp:
        assert resp.status == 200, await resp.text()
        assert "Declined" in await resp.text()
    async with http.post(url, data={"decision": "approved", "_csrf": csrf}) as resp:
        assert resp.status == 409
        assert "max@example.com" in await resp.text()
    report = await console.app.store.report(run_id)
    assert report is not None
    assert report["context"].get("decision") == "declined"


async def test_the_inbox_lists_my_tasks_and_start_forms(console, http) -> None:
    run_id = await console.trigger("expense", EXPENSE, stage="review")
    task_id = await console.pending_form(run_id)
    await sign_in(http, console, "max@example.com")
    status, inbox = await get_json(http, console.base + "/console/inbox")
    assert status == 200
    assert [t["id"] for t in inbox["tasks"]] == [task_id]
    assert inbox["tasks"][0]["title"] == "Expense approval"
    assert {"workflow": "expense", "stage": "submit", "title": "Expense approval"} in inbox["starts"]


async def test_the_board_counts_runs_by_status_and_filters_them(console, http) -> None:
    waiting = await console.trigger("expense", EXPENSE, stage="review")
    await console.trigger("expense", {**EXPENSE, "description": "Hotel <b>Lyon</b>"}, stage="review")
    await sign_in(http, console, "admin@example.com", role="admin")
    status, data = await get_json(http, console.base + "/console/board")
    assert status == 200
    counts = {c["key"]: c["count"] for c in data["columns"]}
    assert counts["waiting"] == 2 and counts["completed"] == 0
    async with http.get(console.base + "/console/board", params={"format": "json", "text": "taxi"}) as resp:
        found = await resp.json()
    ids = [r["id"] for c in found["columns"] for r in c["runs"]]
    assert ids == [waiting]
    async with http.get(console.base + "/console/board", params={"format": "json", "by": "stage",
                                                                  "workflow": "expense"}) as resp:
        by_stage = await resp.json()
    assert {c["key"]: c["count"] for c in by_stage["columns"]}["review"] == 2
    async with http.get(console.base + "/console/board", params={"since": "yesterday"}) as resp:
        assert resp.status == 400


async def test_a_member_sees_only_the_runs_they_started(console, http) -> None:
    await console.trigger("expense", EXPENSE, stage="review")
    await sign_in(http, console, "ann@example.com")
    status, data = await get_json(http, console.base + "/console/board")
    assert status == 200
    assert sum(c["count"] for c in data["columns"]) == 0
    async with http.get(console.base + "/console/outbox") as resp:
        assert resp.status == 403


async def test_the_run_page_shows_steps_graph_and_escapes_payloads(console, http) -> None:
    run_id = await console.trigger("expense", {**EXPENSE, "description": "<script>alert(1)</script>"}, stage="review")
    await sign_in(http, console, "admin@example.com", role="admin")
    async with http.get(f"{console.base}/console/runs/{run_id}") as resp:
        html = await resp.text()
        assert resp.status == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<svg" in html and 'id="n_review"' in html
    status, data = await get_json(http, f"{console.base}/console/runs/{run_id}")
    assert status == 200 and data["status"] == "waiting"
    assert [s["stage"] for s in data["steps"]] == ["review"]


async def test_every_page_renders_for_an_admin(console, http) -> None:
    await console.trigger("expense", EXPENSE, stage="review")
    await sign_in(http, console, "admin@example.com", role="admin")
    for path in ["/console/inbox", "/console/board", "/console/board?by=stage&workflow=onboard",
                 "/console/workflows", "/console/workflows/expense", "/console/tasks", "/console/tasks?status=pending",
                 "/console/outbox", "/console/start/expense/submit", "/console/signin"]:
        async with http.get(console.base + path) as resp:
            assert resp.status == 200, (path, await resp.text())
            assert "text/html" in resp.content_type


async def test_pages_answer_503_with_retry_after_when_the_database_is_down(console, http) -> None:
    await sign_in(http, console, "admin@example.com", role="admin")
    from support import free_port

    from engine.store.db import Database

    # The pages now talk to a port nothing listens on: every statement fails as if the server were gone.
    down = Database(f"postgresql://flowbot@127.0.0.1:{free_port()}/flowbot", pool_size=1)
    real, console.app.db = console.app.db, down
    try:
        await _requests_get_503(http, console)
    finally:
        console.app.db = real
        await down.close()


async def _requests_get_503(http: aiohttp.ClientSession, console: Console) -> None:
    for path in ["/console/inbox", "/console/board", "/console/board?format=json"]:
        async with http.get(console.base + path) as resp:
            assert resp.status == 503, path
            assert resp.headers["Retry-After"] == "5"


async def test_a_person_named_in_flowbot_admins_signs_in_by_link_as_an_admin(console, http) -> None:
    console.app.settings = console.app.settings.with_(admins=("root@example.com",))
    await sign_in(http, console, "ROOT@example.com")
    async with http.get(console.base + "/console/outbox") as resp:
        assert resp.status == 200
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        await sign_in(other, console, "ann@example.com")
        async with other.get(console.base + "/console/outbox") as resp:
            assert resp.status == 403


def test_flowbot_admins_reads_emails_and_slack_ids_and_refuses_anything_else() -> None:
    import pytest

    from engine.errors import ConfigError
    from engine.settings import Settings

    assert Settings.from_env({"FLOWBOT_ADMINS": "Ann@Example.com, U0ROOT  bob@example.com"}).admins == (
        "ann@example.com", "U0ROOT", "bob@example.com")
    assert Settings.from_env({}).admins == ()
    with pytest.raises(ConfigError, match="FLOWBOT_ADMINS"):
        Settings.from_env({"FLOWBOT_ADMINS": "root"})
