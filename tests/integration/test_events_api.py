"""Events over the API (``POST /api/events``, real HTTP on loopback) and the CLI (``flowbot events
send`` in a subprocess): a waiting run goes on; bad input is a clear error that stores nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import cli_env, drain, flowbot, scalar, write_stages

from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.web.server import serve

TOKEN = "test-token-events-0123456789"

STAGES = {
    "order/workflow.py": """
        from engine import Workflow
        workflow = Workflow("order")
        place = workflow.script("place")
        payment = workflow.wait("payment", event="payment.received", key="{order_id}")
        ship = workflow.script("ship")
        remind = workflow.script("remind")
        workflow.transition(place, payment, on="placed")
        workflow.transition(place, remind, on="remind")
        workflow.transition(payment, ship)
    """,
    "order/place.py": """
        def run(task, ctx):
            ctx.send("placed", task.payload)
            ctx.send("remind", {}, delay="1d")
    """,
    "order/ship.py": "def run(task, ctx):\n    ctx.run['paid'] = task['amount']\n",
    "psp/workflow.py": """
        from engine import Workflow
        workflow = Workflow("psp")
        webhook = workflow.hook("webhook", path="psp", auth=None)
    """,
    "psp/webhook.py": """
        def run(request, ctx):
            body = request.data
            ctx.emit("payment.received", key=body["order"], payload={"amount": body["amount"]})
            return {"ok": True}
    """,
    "order/remind.py": "def run(task, ctx):\n    pass\n",
}


class Client:
    def __init__(self, app: App, base: str, session: aiohttp.ClientSession) -> None:
        self.app, self.base, self.session = app, base, session

    async def call(self, method: str, path: str, *, token: str | None = TOKEN, **kw: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + path, headers=headers, **kw) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(database_url=database_url, home=tmp_path / "home",
                        stages_dir=write_stages(tmp_path / "stages", STAGES), api_token=TOKEN,
                        max_payload_bytes=4096)
    async with open_app(settings, load_plugins_=False, pool_size=4) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))
        port = await asyncio.wait_for(bound, 10)
        try:
            async with aiohttp.ClientSession() as session:
                yield Client(app, f"http://127.0.0.1:{port}", session)
        finally:
            stop.set()
            await server


async def waiting_run(app: App, order_id: str) -> str:
    run_id, _ = await app.store.start_run(app.registry.get("order").stage("place"), {"order_id": order_id})
    await drain(app.store)
    assert (await app.store.get_run(run_id))["status"] == "waiting"
    return run_id


async def test_posting_an_event_completes_the_wait_on_its_key(api) -> None:
    run_id = await waiting_run(api.app, "42")
    status, body = await api.call("POST", "/api/events",
                                  json={"name": "payment.received", "key": 42, "payload": {"amount": 30}})
    assert status == 201 and body["matched"] == 1 and body["key"] == "42"
    await drain(api.app.store)
    status, report = await api.call("GET", f"/api/runs/{run_id}")
    assert status == 200 and report["context"] == {"paid": 30}
    assert {s["stage"]: s["status"] for s in report["steps"]}["remind"] == "scheduled"
    status, tasks = await api.call("GET", "/api/tasks?status=scheduled")
    assert [t["stage"] for t in tasks] == ["remind"] and tasks[0]["due_at"]


async def test_a_hook_emitting_the_event_completes_the_wait(api) -> None:
    run_id = await waiting_run(api.app, "H-1")
    async with api.session.post(api.base + "/hooks/psp", json={"order": "H-1", "amount": 77}) as resp:
        assert resp.status == 200, await resp.text()
    await drain(api.app.store)
    assert (await api.app.store.get_run(run_id))["context"] == {"paid": 77}
    assert await scalar(api.app.store, "SELECT source FROM events") == "hook:psp/webhook"


@pytest.mark.parametrize("body", [
    {"key": "1"}, {"name": "bad name!", "key": "1"}, {"name": "paid", "key": ""}, {"name": "paid"},
    {"name": "paid", "key": "1", "payload": [1]}, {"name": "paid", "key": "1", "extra": 1},
    {"name": "paid", "key": "1", "payload": {"big": "x" * 5000}}, [1],
])
async def test_a_bad_event_is_refused_and_stores_nothing(api, body) -> None:
    status, answer = await api.call("POST", "/api/events", json=body)
    assert status == 400 and answer["error"]
    assert await scalar(api.app.store, "SELECT count(*) FROM events") == 0


async def test_the_graph_shows_what_a_wait_stage_waits_for(api) -> None:
    status, graph = await api.call("GET", "/api/workflows/order")
    assert status == 200
    node = next(n for n in graph["nodes"] if n["id"] == "payment")
    assert (node["kind"], node["event"], node["key"], node["timeout"]) == (
        "wait", "payment.received", "{order_id}", None)


async def test_an_event_needs_the_token_and_json(api) -> None:
    status, _ = await api.call("POST", "/api/events", token=None, json={"name": "paid", "key": "1"})
    assert status == 401
    status, answer = await api.call("POST", "/api/events", data=b"{nope")
    assert status == 400 and "not valid JSON" in answer["error"]
    assert await scalar(api.app.store, "SELECT count(*) FROM events") == 0


async def test_flowbot_events_send_completes_the_wait(database_url, tmp_path, make_stages, store_for) -> None:
    stages = write_stages(tmp_path / "cli_stages", STAGES)
    store = store_for(make_stages(STAGES))
    run_id, _ = await store.start_run(store.registry.get("order").stage("place"), {"order_id": "A-7"})
    await drain(store)
    env = cli_env(database_url, stages)
    out = await asyncio.to_thread(flowbot, "events", "send", "payment.received", "--key", "A-7",
                                  "--payload", '{"amount": 5}', "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["matched"] == 1
    await drain(store)
    assert (await store.get_run(run_id))["context"] == {"paid": 5}
    listed = await asyncio.to_thread(flowbot, "tasks", "--status", "scheduled", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert [t["stage"] for t in json.loads(listed.stdout)] == ["remind"]


async def test_flowbot_events_send_refuses_bad_input_in_a_line(database_url, tmp_path) -> None:
    env = cli_env(database_url, write_stages(tmp_path / "cli_stages", STAGES))
    for args in (["payment.received", "--key", "A", "--payload", "{nope"],
                 ["payment.received", "--key", "A", "--payload", "[1]"],
                 ["bad name", "--key", "A"]):
        out = await asyncio.to_thread(flowbot, "events", "send", *args, env=env)
        assert out.returncode == 1 and out.stderr.startswith("flowbot: "), out.stderr
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 2
