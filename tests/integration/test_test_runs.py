"""Test runs: started with `flowbot trigger --test`, the API's ``"test": true`` or the test kit;
shown as such, left out of the workflows page's figures, and removed (children, tasks, events,
effects and audit records too) by `flowbot runs purge --test`, which leaves other runs alone."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from support import cli_env, flowbot, scalar, write_stages

from engine.people import links
from engine.store import console_queries
from engine.store.retention import Policy, Purger
from engine.testing import Flow

STAGES = {
    "orders/workflow.py": """
        from engine import Workflow
        workflow = Workflow("orders", title="Orders")
        take = workflow.script("take")
        done = workflow.wait_for_children("done")
        workflow.transition(take, done, on="taken")
    """,
    "orders/take.py": """
        def run(task, ctx):
            for n in range(task.get("lines", 2)):
                ctx.start("line", {"n": n})
            ctx.send("taken", {})
    """,
    "orders/done.py": "",
    "line/workflow.py": """
        from engine import Workflow
        workflow = Workflow("line", title="Order line")
        pack = workflow.script("pack")
    """,
    "line/pack.py": """
        def run(task, ctx):
            ctx.run["packed"] = task["n"]
            ctx.slack.post("#warehouse", text=f"packed line {task['n']}")
    """,
}


@pytest.fixture
def flowbot_stages(tmp_path: Path) -> Path:
    return write_stages(tmp_path / "stages", STAGES)


async def _api(flow: Flow, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {flow.app.settings.api_token}"}
    async with aiohttp.ClientSession() as session, session.request(
            method, f"{flow.url}/api{path}", json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_a_test_runs_children_are_test_runs_and_go_with_it_while_other_runs_stay(flow: Flow) -> None:
    test_run = await flow.trigger("orders", {"lines": 2})
    assert (await test_run.wait()).status == "completed"
    status, started = await _api(flow, "POST", "/workflows/orders/runs", {"payload": {"lines": 1}})
    assert status == 201
    await flow.settle()
    marked = {str(r["id"]): r["test"] for r in await flow.app.db.fetch_all(text(
        "SELECT id, test FROM runs"), {})}
    assert len(marked) == 5 and sum(marked.values()) == 3 and marked[started["run_id"]] is False
    report = await test_run.report()
    assert report["test"] is True and all(marked[c["id"]] for c in report["children"])

    purger = Purger(flow.app.db, Policy(), clock=flow.app.store.clock)
    assert (await purger.count_tests()).runs == 3
    done = await purger.purge_tests()
    assert done is not None and (done.runs, done.tasks) == (3, 4)  # take, done, and a pack per line
    assert done.outbox == 2 and done.task_events > 0
    left = await flow.app.db.fetch_all(text("SELECT id, test FROM runs"), {})
    assert sorted(str(r["id"]) for r in left) == sorted(k for k, test in marked.items() if not test)
    assert await scalar(flow.app.store, "SELECT count(*) FROM tasks") == 3  # the real run's take and done, its line


async def test_the_api_starts_test_runs_and_refuses_a_test_flag_that_is_not_a_boolean(flow: Flow) -> None:
    status, started = await _api(flow, "POST", "/workflows/line/runs", {"payload": {"n": 1}, "test": True})
    assert status == 201
    status, report = await _api(flow, "GET", f"/runs/{started['run_id']}")
    assert status == 200 and report["test"] is True
    status, listed = await _api(flow, "GET", "/runs")
    assert [r["test"] for r in listed] == [True]
    status, answer = await _api(flow, "POST", "/workflows/line/runs", {"payload": {"n": 1}, "test": "yes"})
    assert status == 400 and '"test" must be true or false' in answer["error"]
    assert len(await flow.runs()) == 1


async def test_test_runs_are_left_out_of_a_workflows_success_rate(flow: Flow) -> None:
    await flow.trigger("line", {"n": 1})
    await _api(flow, "POST", "/workflows/line/runs", {"payload": {"n": 2}})
    await flow.settle()
    since = flow.clock.now - dt.timedelta(days=1)
    figures = await flow.app.db.fetch_one(console_queries.WORKFLOW_FIGURES, {"workflow": "line", "since": since})
    assert figures is not None and figures["completed"] == 1


def test_flowbot_trigger_test_marks_the_run_and_runs_purge_test_removes_only_test_runs(
        database_url: str, tmp_path: Path) -> None:
    env = cli_env(database_url, write_stages(tmp_path / "stages", STAGES), FLOWBOT_HOME=str(tmp_path / "home"))
    started = flowbot("trigger", "line", "--test", "--payload", '{"n": 1}', "--json", env=env)
    test_id = json.loads(started.stdout)["run_id"]
    real_id = json.loads(flowbot("trigger", "line", "--payload", '{"n": 2}', "--json", env=env).stdout)["run_id"]
    listing = flowbot("runs", env=env).stdout
    [test_line] = [line for line in listing.splitlines() if test_id in line]
    [real_line] = [line for line in listing.splitlines() if real_id in line]
    assert "running (test)" in test_line and "(test)" not in real_line
    assert "test run" in flowbot("runs", "show", test_id, env=env).stdout

    refused = flowbot("runs", "purge", env=env)
    assert refused.returncode == 1 and "add --test" in refused.stderr and "Traceback" not in refused.stderr
    dry = flowbot("runs", "purge", "--test", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would purge 1 runs, 1 tasks, 0 task events, 0 outbox rows, 1 audit records" in dry.stdout
    done = flowbot("runs", "purge", "--test", env=env)
    assert done.returncode == 0, done.stderr
    assert "purged 1 runs, 1 tasks, 0 task events, 0 outbox rows, 1 audit records (test runs)" in done.stdout
    after = flowbot("runs", env=env).stdout
    assert test_id not in after and real_id in after


async def test_the_consoles_run_page_marks_a_test_run(flow: Flow) -> None:
    test_run = await flow.trigger("line", {"n": 1})
    status, real = await _api(flow, "POST", "/workflows/line/runs", {"payload": {"n": 2}})
    assert status == 201
    await flow.settle()
    token = await links.create(flow.app.db, "admin@example.com", flow.clock.now, role="admin")
    # unsafe=True: keep the console's cookies although it is reached by IP address.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        link = links.url(flow.url, token)
        async with session.get(link) as page:  # the link's page, then its button (as a browser)
            csrf = re.search(r'name="_csrf" value="([^"]+)"', await page.text())
        assert csrf is not None
        async with session.post(link, data={"_csrf": csrf.group(1)}, allow_redirects=False) as signed_in:
            assert signed_in.status == 303, await signed_in.text()
        pages = {}
        for run_id in (test_run.id, real["run_id"]):
            async with session.get(f"{flow.url}/console/runs/{run_id}") as resp:
                assert resp.status == 200
                pages[run_id] = await resp.text()
    assert '<span class="badge test"' in pages[test_run.id]
    assert '<span class="badge test"' not in pages[real["run_id"]]
