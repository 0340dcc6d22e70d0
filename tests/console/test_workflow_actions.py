"""Starting a run with a payload and firing a job from a Workflows page follow the engine's one
access rule (start: starters, operators, admins; fire a job: operators, admins) and leave an
audit record, whoever does them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from browsing import Console, console_settings, start_console
from sqlalchemy import text
from test_pages import sign_in

FILES = {
    "ops/workflow.py": """
        from engine import Workflow
        workflow = Workflow("ops", title="Operations", operators=["olivia@example.com"],
                            starters=["sam@example.com"])
        begin = workflow.script("begin")
        nightly = workflow.job("nightly", schedule="0 3 * * *")
        handle = workflow.script("handle")
        workflow.transition(nightly, handle, on="item")
    """,
    "ops/begin.py": "def run(task, ctx):\n    ctx.run['got'] = task.payload\n",
    "ops/nightly.py": "def run(ctx):\n    ctx.send('item', {'n': 1})\n    ctx.send('item', {'n': 2})\n",
    "ops/handle.py": "def run(task, ctx):\n    pass\n",
}


@pytest.fixture
async def ops_console(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    async for console in start_console(console_settings(database_url, tmp_path, FILES)):
        yield console


async def _as(console: Console, person: str, role: str = "member") -> tuple[aiohttp.ClientSession, str]:
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    return http, await sign_in(http, console, person, role=role)


async def _audit(console: Console, action: str) -> list[dict]:
    rows = await console.app.db.fetch_all(
        text("SELECT actor, acting_as, edge, workflow, run_id, detail FROM audit WHERE action = :a ORDER BY id"),
        {"a": action})
    return [dict(r) for r in rows]


async def test_an_operator_who_is_not_admin_starts_a_run_and_fires_a_job_from_the_workflows_page(ops_console) -> None:
    http, csrf = await _as(ops_console, "olivia@example.com")
    async with http:
        async with http.get(ops_console.base + "/console/workflows/ops") as resp:
            page = await resp.text()
        assert "Start a run" in page and "Fire now" in page
        async with http.post(ops_console.base + "/console/workflows/ops/runs",
                             data={"_csrf": csrf, "stage": "begin", "payload": '{"why": "by hand"}'},
                             allow_redirects=False) as resp:
            assert resp.status == 303
            run_id = resp.headers["Location"].rsplit("/", 1)[1]
        async with http.post(ops_console.base + "/console/workflows/ops/jobs/nightly/fire",
                             data={"_csrf": csrf}) as resp:
            assert resp.status == 200
            assert "ops/nightly: fired, 2 run(s) started" in await resp.text()
    run = await ops_console.app.store.get_run(run_id)
    assert run is not None and run["trigger"] == {"kind": "web", "user": "olivia@example.com", "stage": "begin"}
    started = await _audit(ops_console, "start")
    assert [(a["actor"], a["acting_as"], a["edge"], a["workflow"], str(a["run_id"])) for a in started] == [
        ("olivia@example.com", "operator", "web", "ops", run_id)]
    fired = await _audit(ops_console, "job.fire")
    assert [(a["actor"], a["acting_as"], a["edge"], a["detail"]["job"]) for a in fired] == [
        ("olivia@example.com", "operator", "web", "ops/nightly")]
    fires = await ops_console.app.db.fetch_all(text("SELECT id, manual FROM job_fires"))
    assert [r["manual"] for r in fires] == [True] and fired[0]["detail"]["fire_id"] == fires[0]["id"]


async def test_a_starter_may_start_but_not_fire_and_a_member_may_do_neither_and_nothing_changes(ops_console) -> None:
    sam, sam_csrf = await _as(ops_console, "sam@example.com")
    async with sam:
        async with sam.get(ops_console.base + "/console/workflows/ops") as resp:
            page = await resp.text()
        assert "Start a run" in page and "Fire now" not in page
        async with sam.post(ops_console.base + "/console/workflows/ops/runs",
                            data={"_csrf": sam_csrf, "stage": "begin", "payload": "{}"}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with sam.post(ops_console.base + "/console/workflows/ops/jobs/nightly/fire",
                            data={"_csrf": sam_csrf}) as resp:
            assert resp.status == 403
            assert "only its operators or admins may" in await resp.text()
    ann, ann_csrf = await _as(ops_console, "ann@example.com")
    async with ann:
        async with ann.get(ops_console.base + "/console/workflows/ops") as resp:
            page = await resp.text()
        assert "Start a run" not in page and "Fire now" not in page
        async with ann.post(ops_console.base + "/console/workflows/ops/runs",
                            data={"_csrf": ann_csrf, "stage": "begin", "payload": "{}"}) as resp:
            assert resp.status == 403
        async with ann.post(ops_console.base + "/console/workflows/ops/jobs/nightly/fire",
                            data={"_csrf": ann_csrf}) as resp:
            assert resp.status == 403
    runs = await ops_console.app.db.fetch_all(text("SELECT trigger FROM runs"))
    assert [r["trigger"]["user"] for r in runs] == ["sam@example.com"]
    assert await ops_console.app.db.fetch_all(text("SELECT id FROM job_fires")) == []
    assert [a["actor"] for a in await _audit(ops_console, "start")] == ["sam@example.com"]


async def test_a_bad_payload_or_stage_is_refused_with_the_reason_and_starts_nothing(ops_console) -> None:
    http, csrf = await _as(ops_console, "root@example.com", role="admin")
    async with http:
        url = ops_console.base + "/console/workflows/ops/runs"
        for data, status in [({"stage": "begin", "payload": "[1]"}, 422),
                             ({"stage": "begin", "payload": "{not json"}, 422),
                             ({"stage": "nope", "payload": "{}"}, 404),
                             ({"stage": "nightly", "payload": "{}"}, 409)]:
            async with http.post(url, data={"_csrf": csrf, **data}) as resp:
                assert resp.status == status, (data, await resp.text())
        async with http.post(ops_console.base + "/console/workflows/ops/jobs/nope/fire", data={"_csrf": csrf}) as resp:
            assert resp.status == 404
    assert await ops_console.app.db.fetch_all(text("SELECT id FROM runs")) == []
