"""The HTTP API on a real aiohttp server (loopback) over the test database.

Bearer-token auth on ``/api/*``; errors as JSON ``{"error": ...}`` with the right status; bad
input (no token, unknown workflow, non-JSON, non-object payload, oversized body) creates nothing.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from support import scalar, write_stages

from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.runtime.worker import Worker, WorkerOptions
from engine.settings import Settings
from engine.web.server import serve
from tests.opsworld import conforms

TOKEN = "test-token-0123456789"
MAX_BODY = 64 * 1024
MAX_PAYLOAD = 8 * 1024

STAGES = {
    "shop/workflow.py": """
        from engine import Workflow
        workflow = Workflow("shop", title="Shop orders", description="Orders in, invoices out.")
        order = workflow.script("order")
        invoice = workflow.script("invoice", max_attempts=5)
        ship = workflow.script("ship")
        check = workflow.form("check", assignee="{clerk}")
        both = workflow.script("both", join="all")
        digest = workflow.job("digest", schedule="0 9 * * MON", timezone="Europe/Berlin")
        workflow.transition(order, invoice, on="ordered")
        workflow.transition(order, ship, on=["ordered", "reshipped"])
        workflow.transition(order, check, on="odd")
        workflow.transition(invoice, both)
        workflow.transition(ship, both)
    """,
    "shop/order.py": """
        def run(task, ctx):
            ctx.send("ordered", task.payload)
    """,
    "shop/invoice.py": "def run(task, ctx):\n    ctx.send('invoiced', {'invoice': 1})\n",
    "shop/ship.py": "def run(task, ctx):\n    ctx.send('shipped', {'parcel': 2})\n",
    "shop/both.py": "def run(task, ctx):\n    ctx.run['done'] = task.payload\n",
    "shop/check.py": "def form(task):\n    return None\n\ndef run(task, answers, ctx):\n    pass\n",
    "shop/digest.py": "def run(ctx):\n    pass\n",
}


class Api:
    """A running flowbot HTTP server and a client for it."""

    def __init__(self, app: App, base: str, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.base = base
        self.session = session

    async def call(self, method: str, path: str, *, token: str | None = TOKEN, **kw: Any) -> tuple[int, Any]:
        headers = kw.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=headers, **kw) as resp:
            text = await resp.text()
            assert resp.content_type == "application/json", (resp.status, text)
            conforms(self.base, method, resp.url.path, resp.url.query_string, resp.status, text.encode())
            return resp.status, json.loads(text)

    async def counts(self) -> tuple[int, int]:
        """(runs, tasks) in the database."""
        return (await scalar(self.app.store, "SELECT count(*) FROM runs"),
                await scalar(self.app.store, "SELECT count(*) FROM tasks"))


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(database_url=database_url, home=tmp_path / "home",
                        stages_dir=write_stages(tmp_path / "stages", STAGES), api_token=TOKEN,
                        max_body_bytes=MAX_BODY, max_payload_bytes=MAX_PAYLOAD)
    async with open_app(settings, load_plugins_=False, pool_size=4) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))
        port = await asyncio.wait_for(bound, 10)
        try:
            async with aiohttp.ClientSession() as session:
                yield Api(app, f"http://127.0.0.1:{port}", session)
        finally:
            stop.set()
            await server


# -- auth -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token", TOKEN + "x"])
async def test_api_routes_need_the_bearer_token(api, token) -> None:
    for method, path in [("GET", "/api/workflows"), ("GET", "/api/runs"), ("GET", "/api/tasks"),
                         ("GET", "/api/workflows/shop"), ("POST", "/api/workflows/shop/runs")]:
        status, body = await api.call(method, path, token=token, json={"payload": {}})
        assert status == 401, (method, path)
        assert "bearer token" in body["error"]
    assert await api.counts() == (0, 0)


async def test_a_basic_auth_header_is_not_a_bearer_token(api) -> None:
    status, _ = await api.call("GET", "/api/workflows", token=None, headers={"Authorization": f"Basic {TOKEN}"})
    assert status == 401


async def test_healthz_needs_no_token_and_says_the_database_answers(api) -> None:
    async with api.session.get(api.base + "/healthz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True}


async def test_readyz_is_ready_only_while_the_schema_is_at_the_migrations_head(api) -> None:
    from engine.store import migrate

    async with api.session.get(api.base + "/readyz") as resp:
        assert resp.status == 200
        assert await resp.json() == {"ok": True, "schema": migrate.heads()}
    async with api.app.db.transaction() as tx:  # as if a newer flowbot had migrated it
        await tx.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    async with api.session.get(api.base + "/readyz") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"]
        body = await resp.json()
        assert body["ok"] is False and "flowbot migrate" in body["error"]
    async with api.session.get(api.base + "/healthz") as resp:  # alive all the same
        assert resp.status == 200


async def test_a_burst_of_connections_while_the_loop_is_busy_waits_for_accept_and_is_answered(api) -> None:
    # The event loop is blocked (this coroutine does not await) while 300 clients connect: the
    # kernel completes every handshake into the listen backlog. With aiohttp's default backlog
    # (128) it drops the 130th and later, and those clients retry only after a second.
    port = int(api.base.rsplit(":", 1)[1])
    clients = [socket.socket() for _ in range(300)]
    try:
        for client in clients:
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
        connected: set[socket.socket] = set()
        deadline = time.monotonic() + 0.5
        while len(connected) < len(clients) and time.monotonic() < deadline:
            _, writable, _ = select.select([], [c for c in clients if c not in connected], [], 0.05)
            connected.update(c for c in writable if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        assert len(connected) == len(clients)
        for client in clients:
            client.send(b"GET /healthz HTTP/1.1\r\nHost: flowbot\r\nConnection: close\r\n\r\n")
        loop = asyncio.get_running_loop()

        async def answer(client: socket.socket) -> bytes:
            received = b""
            while chunk := await loop.sock_recv(client, 4096):
                received += chunk
            return received

        answers = await asyncio.wait_for(asyncio.gather(*(answer(c) for c in clients)), 30)
        assert all(a.startswith(b"HTTP/1.1 200 ") for a in answers)
    finally:
        for client in clients:
            client.close()


async def test_the_token_is_generated_once_into_flowbot_home_when_unset(tmp_path) -> None:
    settings = Settings(home=tmp_path / "home")
    token = settings.resolve_api_token()
    assert token and len(token) >= 32
    saved = tmp_path / "home" / "api_token"
    assert saved.read_text().strip() == token
    assert saved.stat().st_mode & 0o077 == 0, "the token file is private"
    assert Settings(home=tmp_path / "home").resolve_api_token() == token


# -- workflows and the graph --------------------------------------------------------------------------


async def test_list_workflows(api) -> None:
    status, body = await api.call("GET", "/api/workflows")
    assert status == 200
    assert body == [{"name": "shop", "title": "Shop orders", "stages": 6}]


async def test_the_graph_export_has_nodes_edges_and_metadata(api) -> None:
    status, graph = await api.call("GET", "/api/workflows/shop")
    assert status == 200
    assert (graph["name"], graph["title"], graph["description"]) == ("shop", "Shop orders", "Orders in, invoices out.")
    nodes = {n["id"]: n for n in graph["nodes"]}
    assert list(nodes) == ["order", "invoice", "ship", "check", "both", "digest"]
    assert {k: nodes["order"][k] for k in ("kind", "module", "start", "max_attempts")} == {
        "kind": "script", "module": "order.py", "start": True, "max_attempts": 3}
    assert nodes["invoice"]["max_attempts"] == 5 and nodes["invoice"]["start"] is False
    assert nodes["check"]["kind"] == "form" and nodes["check"]["assignee"] == "{clerk}"
    assert nodes["both"]["join"] == "all"
    assert (nodes["digest"]["kind"], nodes["digest"]["schedule"], nodes["digest"]["timezone"]) == (
        "job", "0 9 * * MON", "Europe/Berlin")
    assert nodes["order"]["file"].endswith("shop/workflow.py") and nodes["order"]["line"] == 3
    assert graph["edges"] == [
        {"source": "order", "target": "invoice", "on": ["ordered"]},
        {"source": "order", "target": "ship", "on": ["ordered", "reshipped"]},
        {"source": "order", "target": "check", "on": ["odd"]},
        {"source": "invoice", "target": "both", "on": None},
        {"source": "ship", "target": "both", "on": None},
    ]


async def test_an_unknown_workflow_is_404(api) -> None:
    status, body = await api.call("GET", "/api/workflows/nope")
    assert (status, body) == (404, {"error": 'no workflow named "nope"'})


# -- starting runs ----------------------------------------------------------------------------------


async def test_starting_a_run_returns_201_with_the_run_id_and_a_worker_completes_it(api) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", json={"payload": {"sku": "A-1"}})
    assert status == 201
    run_id = body["run_id"]
    assert await api.counts() == (1, 1)

    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(api.app.store, WorkerOptions(poll_interval=0.2)).run(stop))
    try:
        for _ in range(200):
            status, report = await api.call("GET", f"/api/runs/{run_id}")
            if report["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await worker
    assert status == 200
    assert report["id"] == run_id and report["workflow"] == "shop" and report["status"] == "completed"
    assert report["trigger"] == {"kind": "api", "stage": "order"}
    assert [s["stage"] for s in report["steps"]] == ["order", "invoice", "ship", "both"]
    for step in report["steps"]:
        assert {"stage", "task_id", "type", "status", "attempts", "started_at", "finished_at", "error"} <= set(step)
        assert step["status"] == "completed" and step["attempts"] == 1
    assert report["context"] == {"done": {"invoice": 1, "parcel": 2}}
    assert report["unrouted"] == []

    status, runs = await api.call("GET", "/api/runs?workflow=shop&status=completed")
    assert status == 200 and [r["id"] for r in runs] == [run_id]
    status, tasks = await api.call("GET", f"/api/tasks?run={run_id}&stage=invoice")
    assert status == 200 and [(t["stage"], t["status"]) for t in tasks] == [("invoice", "completed")]
    status, none = await api.call("GET", "/api/runs?status=failed")
    assert (status, none) == (200, [])


async def test_runs_are_listed_newest_first_and_limited(api) -> None:
    ids = []
    for n in range(3):
        _, body = await api.call("POST", "/api/workflows/shop/runs", json={"payload": {"n": n}})
        ids.append(body["run_id"])
    status, runs = await api.call("GET", "/api/runs?limit=2")
    assert status == 200 and [r["id"] for r in runs] == ids[::-1][:2]
    status, body = await api.call("GET", "/api/runs?limit=lots")
    assert status == 400 and "limit" in body["error"]


async def test_an_empty_body_starts_a_run_with_an_empty_payload(api) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", data=b"")
    assert status == 201
    _, report = await api.call("GET", f"/api/runs/{body['run_id']}")
    assert report["steps"][0]["payload"] == {}


async def test_unknown_runs_are_404(api) -> None:
    for rid in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        status, body = await api.call("GET", f"/api/runs/{rid}")
        assert status == 404 and rid in body["error"]
    status, body = await api.call("GET", "/api/tasks?run=not-a-uuid")
    assert status == 404 and body["error"] == "no run not-a-uuid"


async def test_a_unique_prefix_of_a_run_id_is_accepted_wherever_a_run_id_is(api) -> None:
    _, body = await api.call("POST", "/api/workflows/shop/runs", json={"payload": {"n": 1}})
    run_id = body["run_id"]
    status, report = await api.call("GET", f"/api/runs/{run_id[:8]}")
    assert status == 200 and report["id"] == run_id
    status, tasks = await api.call("GET", f"/api/tasks?run={run_id[:8]}")
    assert status == 200 and [t["run_id"] for t in tasks] == [run_id]


async def test_a_prefix_shared_by_several_runs_is_400_asking_for_more(api) -> None:
    for run_id in ("abcd0000-0000-7000-8000-000000000001", "abcd0000-0000-7000-8000-000000000002"):
        await scalar(api.app.store, "INSERT INTO runs (id, workflow, status, created_at, updated_at) VALUES "
                                    "(CAST(:id AS uuid), 'shop', 'running', now(), now()) RETURNING 1", id=run_id)
    status, body = await api.call("GET", "/api/runs/abcd0000")
    assert status == 400 and body["error"] == "abcd0000 is the start of several run ids: give more of it"
    status, report = await api.call("GET", "/api/runs/abcd0000-0000-7000-8000-00000000000")
    assert status == 400
    status, report = await api.call("GET", "/api/runs/ABCD0000-0000-7000-8000-000000000002")
    assert status == 200 and report["id"] == "abcd0000-0000-7000-8000-000000000002"


async def test_an_unknown_status_filter_is_400_listing_the_valid_ones(api) -> None:
    status, body = await api.call("GET", "/api/runs?status=bogus")
    assert status == 400
    assert body["error"] == "unknown run status 'bogus': use one of running, waiting, completed, failed, cancelled"
    status, body = await api.call("GET", "/api/tasks?status=done")
    assert status == 400
    assert body["error"] == ("unknown task status 'done': use one of pending, locked, completed, failed, cancelled, "
                             "scheduled")


async def test_timestamps_in_lists_are_iso_8601(api) -> None:
    import datetime as dt

    await api.call("POST", "/api/workflows/shop/runs", json={})
    _, [run] = await api.call("GET", "/api/runs")
    _, [task] = await api.call("GET", "/api/tasks")
    for stamp in (run["created_at"], run["updated_at"], task["created_at"]):
        assert "T" in stamp and dt.datetime.fromisoformat(stamp).tzinfo is not None, stamp


# -- bad input creates nothing -------------------------------------------------------------------------


async def test_starting_a_run_of_an_unknown_workflow_is_404(api) -> None:
    status, body = await api.call("POST", "/api/workflows/nope/runs", json={"payload": {}})
    assert (status, body) == (404, {"error": 'no workflow named "nope"'})
    assert await api.counts() == (0, 0)


async def test_an_unknown_start_stage_is_404(api) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", json={"payload": {}, "stage": "nope"})
    assert status == 404 and 'has no stage "nope"' in body["error"]
    assert await api.counts() == (0, 0)


async def test_an_unknown_key_in_the_body_is_400_and_starts_nothing(api) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", json={"paylod": {"n": 1}})
    assert status == 400
    assert body["error"] == "unknown key(s) 'paylod' in the body: it may have 'payload', 'stage' and 'test'"
    assert await api.counts() == (0, 0)


async def test_a_run_cannot_start_at_a_job(api) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", json={"stage": "digest"})
    assert status == 400 and "is a job" in body["error"]
    assert await api.counts() == (0, 0)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b'{"payload": {}'])
async def test_a_non_json_body_is_400(api, raw) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", data=raw,
                                  headers={"Content-Type": "application/json"})
    assert status == 400 and body["error"].startswith("body is not valid JSON")
    assert await api.counts() == (0, 0)


@pytest.mark.parametrize(("sent", "message"), [
    ([1, 2], "body must be a JSON object"),
    ("text", "body must be a JSON object"),
    ({"payload": [1, 2]}, "payload must be a JSON object (a dict), got list"),
    ({"payload": "x"}, "payload must be a JSON object (a dict), got str"),
    ({"payload": None}, "payload must be a JSON object (a dict), got NoneType"),
])
async def test_a_non_object_payload_is_400(api, sent, message) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", json=sent)
    assert status == 400 and message in body["error"], body
    assert await api.counts() == (0, 0)


async def test_a_payload_over_the_payload_limit_is_refused(api) -> None:
    status, body = await api.call("POST", "/api/workflows/shop/runs", json={"payload": {"blob": "x" * MAX_PAYLOAD}})
    assert status == 400 and f"over the {MAX_PAYLOAD}-byte limit" in body["error"]
    assert await api.counts() == (0, 0)


async def test_an_oversized_body_is_413(api) -> None:
    big = b'{"payload": {"b": "' + b"x" * MAX_BODY + b'"}}'
    status, body = await api.call("POST", "/api/workflows/shop/runs", data=big,
                                  headers={"Content-Type": "application/json"})
    assert status == 413 and f"over the {MAX_BODY}-byte limit" in body["error"]
    assert await api.counts() == (0, 0)
