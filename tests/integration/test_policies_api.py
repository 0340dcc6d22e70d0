"""Timeouts and approvals needing several people over the API and the CLI's listing: a kept
decision answers ``recorded`` with who has decided so far, the starter is a 403, an answer after
the timeout a 409 that says so, and task listings carry the deadline (every answer checked
against the OpenAPI document)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support import drain, write_stages

from engine.settings import Settings
from engine.store import waits
from tests.opsworld import TOKEN, Client, served

STAGES = {
    "buy/workflow.py": """
        from engine import Team, Workflow
        workflow = Workflow("buy")
        ask = workflow.script("ask")
        two = workflow.form("two", assignee=["max@example.com", "ann@example.com", "sam@example.com"],
                            module="review", timeout="1s", on_timeout="declined")
        crew = workflow.form("crew", assignee=Team("@crew"), module="review")
        done = workflow.script("done")
        workflow.transition(ask, two)
        workflow.transition(two, done)
        workflow.transition(crew, done)
    """,
    "teams.toml": 'crew = ["max@example.com", "sam@example.com", "tom@example.com"]\n',
    "buy/ask.py": "def run(task, ctx):\n    ctx.send('two', task.payload)\n",
    "buy/review.py": """
        from engine.forms import Approval
        form = Approval("Laptop", approvers=2, allow_self_approval=False)
        def run(task, answers, ctx):
            ctx.run["decisions"] = answers["decisions"]
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/done.py": "def run(task, ctx):\n    ctx.run['outcome'] = task.type\n",
}


@pytest.fixture
async def world(database_url: str, tmp_path: Path):
    stages = write_stages(tmp_path / "stages", STAGES)
    settings = Settings(database_url=database_url, home=tmp_path / "home", stages_dir=stages, api_token=TOKEN,
                        host="127.0.0.1", port=0, poll_interval=0.2)
    async with served(settings) as found:
        yield found


async def start(app: Any, api: Client) -> tuple[str, int]:
    status, body = await api.as_person("ann@example.com").call("POST", "/api/workflows/buy/runs",
                                                                {"payload": {}, "stage": "ask"})
    assert status == 201, body
    await drain(app.store)
    _, tasks = await api.call("GET", f"/api/tasks?run={body['run_id']}&stage=two")
    return body["run_id"], tasks[0]["id"]


async def approve(api: Client, who: str, task_id: int) -> tuple[int, Any]:
    return await api.as_person(who).call("POST", f"/api/tasks/{task_id}/submit",
                                         {"answers": {"decision": "approved"}})


async def test_decisions_over_the_api_are_kept_until_enough_and_the_starter_is_refused(world) -> None:
    app, _, api = world
    run_id, task_id = await start(app, api)
    _, tasks = await api.call("GET", f"/api/tasks?run={run_id}&stage=two")
    assert tasks[0]["deadline"]
    status, body = await approve(api, "ann@example.com", task_id)
    assert status == 403 and body["reason"].startswith("you started this run")
    status, body = await approve(api, "max@example.com", task_id)
    assert status == 200 and body["status"] == "recorded" and (body["approvals"], body["needed"]) == (1, 2)
    assert [d["by"] for d in body["decisions"]] == ["max@example.com"]
    status, body = await approve(api, "max@example.com", task_id)
    assert status == 409 and body["reason"] == "decided"
    status, body = await approve(api, "sam@example.com", task_id)
    assert status == 200 and body["status"] == "completed"
    await drain(app.store)
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert report["context"]["outcome"] == "approved"


async def test_an_answer_after_the_timeout_is_a_conflict_that_says_so(world) -> None:
    import asyncio

    app, _, api = world
    run_id, task_id = await start(app, api)
    await asyncio.sleep(1.1)
    assert await waits.expire(app.store) == 1
    status, body = await approve(api, "max@example.com", task_id)
    assert status == 409 and body["reason"] == "timed out" and body["by"] == "flowbot (timeout)"
    _, report = await api.call("GET", f"/api/runs/{run_id}")
    assert [a["actor"] for a in report["audit"]][-1:] == ["flowbot (timeout)"]


async def test_a_team_approval_needing_several_is_decided_by_members_without_a_claim(world) -> None:
    _, _, api = world
    status, body = await api.call("POST", "/api/workflows/buy/runs", {"payload": {}, "stage": "crew"})
    assert status == 201, body
    _, tasks = await api.call("GET", f"/api/tasks?run={body['run_id']}&stage=crew")
    task_id = tasks[0]["id"]
    status, refused = await api.as_person("max@example.com").call("POST", f"/api/tasks/{task_id}/claim", {})
    assert status == 409 and "nobody claims it" in refused["error"]
    assert (await approve(api, "max@example.com", task_id))[1]["status"] == "recorded"
    assert (await approve(api, "tom@example.com", task_id))[1]["status"] == "completed"
