"""Postgres goes away under load and comes back: flowbot rides through it.

A server of the test's own (``pgserver.PgServer``: the session's Postgres is shared) is stopped
with a fast shutdown, an immediate shutdown, a SIGKILL of its postmaster, or replaced by another
server on the same address, while runs are started through the API and hook deliveries (with and
without a delivery id) arrive, each retried by its client until acknowledged. flowbot (its HTTP
server and a worker, in this process) must stay up, answer 503 with ``Retry-After`` and never a
4xx meanwhile, be healthy within 2 s of the server being back, and complete every acknowledged
run and delivery exactly once. An idle run right after the restart is woken by NOTIFY (LISTEN was
re-established), not by the worker's 5 s poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from pgserver import PgServer
from support import eventually, free_port, write_stages

from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.runtime.worker import Worker, WorkerOptions
from engine.settings import Settings
from engine.store import migrate
from engine.store.embedded import sqlalchemy_url
from engine.web.server import serve

TOKEN = "outage-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAGES = {
    "pair/workflow.py": """
        from engine import Workflow
        workflow = Workflow("pair")
        feed = workflow.hook("feed", path="feed", auth=None)
        first = workflow.script("first")
        second = workflow.script("second")
        workflow.transition(feed, first)
        workflow.transition(first, second, on="next")
    """,
    "pair/feed.py": """
        def run(request, ctx):
            ctx.send("item", request.data)
    """,
    "pair/first.py": """
        def run(task, ctx):
            ctx.send("next", {"n": task["n"]})
    """,
    "pair/second.py": """
        async def run(task, ctx):
            ctx.run["n"] = task["n"]
    """,
}
#: Seconds a client waits before retrying a refused request.
RETRY = 0.2


# -- the server the tests take away --------------------------------------------------------------


@pytest.fixture(scope="module")
def own_pg() -> Iterator[PgServer]:
    """A Postgres server for this module only, with a migrated template database."""
    # A short path: the server's unix socket lives in it too.
    server = PgServer(Path(f"/tmp/flowbot-own-{os.getpid()}"), free_port()).init()
    server.start()
    try:
        asyncio.run(_template(server))
        yield server
    finally:
        server.destroy()


async def _template(server: PgServer, name: str = "own_template") -> None:
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    await migrate.upgrade(server.url(name))


async def _create(server: PgServer, name: str, template: str = "own_template") -> None:
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
    finally:
        await conn.close()


@pytest.fixture
async def database_url(own_pg: PgServer) -> AsyncIterator[str]:
    """This module's tests (the Slack one included) run on ``own_pg``: a fresh database each."""
    name = f"o_{uuid.uuid4().hex[:10]}"
    await _create(own_pg, name)
    yield sqlalchemy_url(own_pg.url(name))
    if own_pg.postmaster() is None:  # a test failed while it was down
        own_pg.start()
    conn = await asyncpg.connect(own_pg.url())
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


# -- flowbot and its load -------------------------------------------------------------------------


@dataclass
class Flowbot:
    """flowbot's HTTP server and a worker, running on the test's database."""

    app: App
    base: str
    parts: list[asyncio.Task[None]]

    async def status(self, http: aiohttp.ClientSession, path: str) -> tuple[int, dict[str, str]]:
        async with http.get(self.base + path) as resp:
            await resp.read()
            return resp.status, dict(resp.headers)

    async def completed(self, run_ids: set[str]) -> int:
        row = await self.app.db.fetch_one(_sql("SELECT count(*) AS n FROM runs WHERE id = ANY(CAST(:ids AS uuid[])) "
                                               "AND status = 'completed'"), {"ids": sorted(run_ids)})
        return int(row["n"]) if row else 0


def _sql(statement: str) -> Any:
    from sqlalchemy import text

    return text(statement)


@contextlib.asynccontextmanager
async def running(url: str, tmp_path: Path, listen_url: str | None = None) -> AsyncIterator[Flowbot]:
    settings = Settings(database_url=url, listen_url=listen_url, home=tmp_path / "home", api_token=TOKEN,
                        stages_dir=write_stages(tmp_path / "stages", STAGES))
    async with open_app(settings, load_plugins_=False) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        parts = [asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result)),
                 # The default poll (5 s): a run finishing faster after the restart was woken by NOTIFY.
                 asyncio.create_task(Worker(app.store, WorkerOptions()).run(stop))]
        port = await asyncio.wait_for(bound, 10)
        try:
            yield Flowbot(app, f"http://127.0.0.1:{port}", parts)
        finally:
            stop.set()
            await asyncio.gather(*parts)


@dataclass
class Load:
    """Runs through the API and hook deliveries (keyed and not), each retried until acknowledged."""

    fb: Flowbot
    http: aiohttp.ClientSession
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    #: Answers that break the rules (anything but 2xx, or a 503 without Retry-After).
    wrong: list[tuple[int, str]] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)
    keyed: dict[str, list[str]] = field(default_factory=dict)
    acked_at: list[float] = field(default_factory=list)
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    n: int = 0

    async def _send(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
        while True:
            try:
                async with self.http.post(self.fb.base + path, json=body, headers=headers) as resp:
                    text = await resp.text()
                    status, retry_after = resp.status, resp.headers.get("Retry-After")
            except aiohttp.ClientError as exc:  # flowbot itself must stay up
                self.wrong.append((0, repr(exc)))
                return {}
            self.answers[status] += 1
            if status < 300:
                self.acked_at.append(time.monotonic())
                return dict(json.loads(text))
            if status != 503 or not retry_after:
                self.wrong.append((status, text))
                return {}
            await asyncio.sleep(RETRY)

    async def _api_run(self, n: int) -> None:
        answer = await self._send("/api/workflows/pair/runs", {"payload": {"n": n}, "stage": "first"}, AUTH)
        if answer:
            self.runs.add(answer["run_id"])

    async def _delivery(self, n: int, key: str | None) -> None:
        answer = await self._send("/hooks/feed", {"n": n}, {"Idempotency-Key": key} if key else {})
        if answer:
            self.runs.update(answer["run_ids"])
            if key:
                self.keyed[key] = answer["run_ids"]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def drive(self, seconds: float, *, runs_per_s: int = 40, deliveries_per_s: int = 20) -> None:
        """Send for ``seconds``: API runs and deliveries (every other one with a delivery id)."""
        tick = 0.05
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(round(runs_per_s * tick)):
                self.n += 1
                self._spawn(self._api_run(self.n))
            for _ in range(round(deliveries_per_s * tick)):
                self.n += 1
                self._spawn(self._delivery(self.n, f"d-{self.n}" if self.n % 2 else None))
            await asyncio.sleep(tick)

    async def finish(self, within: float = 15.0) -> None:
        """Wait until every request sent was acknowledged (or refused wrongly)."""
        if self.pending:
            await asyncio.wait_for(asyncio.gather(*self.pending), within)


async def ride_through(fb: Flowbot, take_down: Any, bring_back: Any) -> dict[str, float]:
    """Load before, during and after an outage; the checks every kind of outage shares. Returns
    the figures: seconds from the server back to /healthz 200, to the first run acknowledged,
    and of an idle two-stage run after it."""
    figures: dict[str, float] = {}
    async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as probe:
        load = Load(fb, http)
        await load.drive(1.0)
        await asyncio.to_thread(take_down)
        driving = asyncio.create_task(load.drive(1.5))
        await asyncio.sleep(0.5)
        for path in ("/healthz", "/readyz"):
            status, headers = await fb.status(probe, path)
            assert status == 503 and "Retry-After" in headers, (path, status)
        await driving
        await asyncio.to_thread(bring_back)
        back = time.monotonic()
        await eventually(lambda: _healthy(fb, probe), within=10, interval=0.02, what="/healthz 200")
        figures["healthy"] = time.monotonic() - back
        assert (await fb.status(probe, "/readyz"))[0] == 200
        await load.drive(1.0)
        await load.finish()
        figures["first_ack"] = min(t for t in load.acked_at if t >= back) - back

        assert not load.wrong, load.wrong[:5]
        assert load.answers[503] > 0, load.answers  # the outage was seen
        assert set(load.answers) <= {200, 201, 503}, load.answers
        assert figures["healthy"] < 2.0, figures
        await eventually(lambda: _all_completed(fb, load.runs), within=15,
                         what=f"{len(load.runs)} acknowledged runs completed")
        await _exactly_once(fb, load)
        assert not any(p.done() for p in fb.parts), "a part of flowbot stopped"

        # Idle now: one more run is woken by NOTIFY on the re-established LISTEN, not the 5 s poll.
        await asyncio.sleep(0.3)
        started = time.monotonic()
        body = {"payload": {"n": 0}, "stage": "first"}
        async with probe.post(fb.base + "/api/workflows/pair/runs", json=body, headers=AUTH) as r:
            assert r.status == 201
            run_id = (await r.json())["run_id"]
        await eventually(lambda: _all_completed(fb, {run_id}), within=4.0, interval=0.005, what="the idle run")
        figures["idle_run"] = time.monotonic() - started
    return figures


async def _all_completed(fb: Flowbot, runs: set[str]) -> bool:
    return await fb.completed(runs) == len(runs)


async def _exactly_once(fb: Flowbot, load: Load) -> None:
    """Each acknowledged run ran each of its stages once; each delivery id made one record, one run."""
    rows = await fb.app.db.fetch_all(_sql(
        "SELECT run_id, stage, count(*) AS n, bool_and(status = 'completed') AS done FROM tasks "
        "WHERE run_id = ANY(CAST(:ids AS uuid[])) GROUP BY run_id, stage"), {"ids": sorted(load.runs)})
    assert len(rows) == 2 * len(load.runs)
    assert all(r["n"] == 1 and r["done"] for r in rows), [r for r in rows if r["n"] != 1 or not r["done"]][:5]
    deliveries = await fb.app.db.fetch_all(_sql(
        "SELECT delivery_id, count(*) AS n, min(run_ids::text) AS runs FROM hook_deliveries "
        "WHERE delivery_id IS NOT NULL GROUP BY delivery_id"))
    found = {r["delivery_id"]: r for r in deliveries}
    for key, run_ids in load.keyed.items():
        assert found[key]["n"] == 1 and json.loads(found[key]["runs"]) == run_ids, key
    runs_by_key = await fb.app.db.fetch_all(_sql(
        "SELECT trigger->>'delivery_id' AS key, count(*) AS n FROM runs "
        "WHERE trigger->>'delivery_id' IS NOT NULL GROUP BY 1 HAVING count(*) > 1"))
    assert not runs_by_key, runs_by_key


# -- the outages ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fast", "immediate", "kill"])
async def test_a_postgres_restart_under_load_is_ridden_through_with_503s_and_nothing_lost_or_doubled(
        how: str, own_pg: PgServer, database_url: str, tmp_path: Path) -> None:
    def take_down() -> None:
        if how == "kill":
            own_pg.kill()
        else:
            own_pg.stop(how)

    async with running(database_url, tmp_path) as fb:
        figures = await ride_through(fb, take_down, own_pg.start)
    print(f"\n{how}: healthy {figures['healthy'] * 1000:.0f} ms after the restart, first run acknowledged "
          f"after {figures['first_ack'] * 1000:.0f} ms, idle two-stage run {figures['idle_run'] * 1000:.0f} ms")
    assert figures["idle_run"] < 1.0, figures


@pytest.mark.slow
async def test_a_restart_behind_pgbouncer_is_ridden_through_too(
        own_pg: PgServer, database_url: str, tmp_path: Path) -> None:
    from tests.pgbouncer import PgBouncer, find_pgbouncer

    binary = find_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed (run .ci/install-deps)")
    # PgBouncer holds a query while it has no server for query_wait_timeout, then fails it: a
    # short one makes that a quick 503 (as docs/deployment.md advises).
    bouncer = PgBouncer(binary, own_pg.root.with_name(own_pg.root.name + "-bouncer"), own_pg.url(), free_port(),
                        query_wait_timeout=1).start()
    name = database_url.rsplit("/", 1)[1]
    try:
        async with running(bouncer.url(name), tmp_path, listen_url=database_url) as fb:
            figures = await ride_through(fb, lambda: own_pg.stop("fast"), own_pg.start)
    finally:
        bouncer.stop()
    print(f"\nbehind pgbouncer: healthy {figures['healthy'] * 1000:.0f} ms after the restart, idle two-stage run "
          f"{figures['idle_run'] * 1000:.0f} ms")
    assert figures["idle_run"] < 1.0, figures


@pytest.mark.slow
async def test_a_failover_to_another_server_at_the_same_address_is_followed(
        own_pg: PgServer, database_url: str, tmp_path: Path) -> None:
    # The replacement: another data directory, its own copy of the schema, the same port later.
    replacement = PgServer(own_pg.root.with_name(own_pg.root.name + "-b"), free_port()).init()
    name = database_url.rsplit("/", 1)[1]
    try:
        replacement.start()
        await _template(replacement)
        await _create(replacement, name)
        replacement.stop()
        replacement.port = own_pg.port

        async with running(database_url, tmp_path) as fb:
            async with aiohttp.ClientSession() as http:
                async with http.post(fb.base + "/api/workflows/pair/runs", json={"payload": {"n": 1}, "stage": "first"},
                                     headers=AUTH) as r:
                    assert r.status == 201
                await asyncio.to_thread(own_pg.stop, "fast")
                status, headers = await fb.status(http, "/healthz")
                assert status == 503 and "Retry-After" in headers
                async with http.post(fb.base + "/api/workflows/pair/runs", json={"payload": {"n": 2}, "stage": "first"},
                                     headers=AUTH) as r:
                    assert r.status == 503 and "Retry-After" in r.headers, await r.text()
                await asyncio.to_thread(replacement.start)
                back = time.monotonic()
                await eventually(lambda: _healthy(fb, http), within=2.0, interval=0.02, what="/healthz 200")
                healthy = time.monotonic() - back
                # The new server has none of the old runs: flowbot works on it as it is.
                assert await fb.app.db.fetch_all(_sql("SELECT id FROM runs")) == []
                await asyncio.sleep(0.3)
                started = time.monotonic()
                async with http.post(fb.base + "/api/workflows/pair/runs", json={"payload": {"n": 3}, "stage": "first"},
                                     headers=AUTH) as r:
                    assert r.status == 201
                    run_id = (await r.json())["run_id"]
                await eventually(lambda: _all_completed(fb, {run_id}), within=4.0, interval=0.005,
                                 what="a run on the new server")
                assert time.monotonic() - started < 1.0  # woken by NOTIFY on the new server
                assert healthy < 2.0
    finally:
        replacement.destroy()
        if own_pg.postmaster() is None:
            own_pg.start()


async def _healthy(fb: Flowbot, http: aiohttp.ClientSession) -> bool:
    return (await fb.status(http, "/healthz"))[0] == 200


# -- Slack: the person hears to try again ---------------------------------------------------------

SLACK_STAGES = {
    "ticket/workflow.py": """
        from engine import Workflow
        workflow = Workflow("ticket", title="Ticket")
        open_ = workflow.script("open")
        fix = workflow.form("fix", assignee="U0ANN")
        workflow.transition(open_, fix)
    """,
    "ticket/open.py": "def run(task, ctx):\n    ctx.send('ticket', task.payload)\n",
    "ticket/fix.py": """
        from engine.forms import Approval
        form = Approval("Fix it", {"What": "{what}"})
        def run(task, answers, ctx):
            pass
    """,
}


async def test_while_the_database_is_down_slack_tells_the_person_to_try_again(
        slack_app: Any, fake_slack: Any, own_pg: PgServer) -> None:
    from bot.cards import ACTION_APPROVE
    from bot.modals import CALLBACK_FORM

    fake_slack.add_user("ann@example.com", "U0ANN")
    h = await slack_app(SLACK_STAGES)
    await asyncio.to_thread(own_pg.stop, "fast")
    try:
        # A slash command needing the database: acked, then answered at its response_url.
        resp = await h.command("U0ANN", "start ticket what=printer", response_url=h.fake.url + "respond")
        assert resp.status == 200
        said = await eventually(lambda: _texts(fake_slack, "respond"), what="the command's answer")
        assert "try again" in said[0]
        # A button on a card: acked, then an ephemeral message where it was clicked.
        resp = await h.click("U0ANN", ACTION_APPROVE, "1")
        assert resp.status == 200
        said = await eventually(lambda: _texts(fake_slack, "chat.postEphemeral"), what="the click's answer")
        assert "try again" in said[0]
        # A form submission: the modal stays open with the message on its field.
        view = {"id": "V1", "type": "modal", "callback_id": CALLBACK_FORM, "private_metadata": str(uuid.uuid4()),
                "blocks": [{"type": "input", "block_id": "note", "label": {"type": "plain_text", "text": "Note"},
                            "element": {"type": "plain_text_input", "action_id": "note"}}]}
        resp = await h.submit("U0ANN", view, {"note": {"type": "plain_text_input", "value": "done"}})
        assert resp.status == 200
        assert resp.json["response_action"] == "errors", resp.json
        assert "try again" in resp.json["errors"]["note"]
    finally:
        await asyncio.to_thread(own_pg.start)
    # Back: the same command works.
    resp = await h.command("U0ANN", "start ticket what=printer", response_url=h.fake.url + "respond")
    assert resp.status == 200
    said = await eventually(lambda: _texts(fake_slack, "respond", at_least=2), what="the second answer")
    assert "try again" not in said[1]


async def _texts(fake: Any, method: str, at_least: int = 1) -> list[str] | None:
    texts = [str(c.params.get("text")) for c in fake.calls(method)]
    return texts if len(texts) >= at_least else None


async def test_a_claim_whose_answer_was_lost_in_the_outage_is_released_when_the_database_is_back(
        own_pg: PgServer, database_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=database_url, home=tmp_path / "home",
                        stages_dir=write_stages(tmp_path / "stages", STAGES))
    async with open_app(settings, load_plugins_=False) as app:
        store = app.store
        worker = Worker(store, WorkerOptions(poll_interval=0.2))
        run_id, _ = await store.start_run(app.registry.get("pair").stage("first"), {"n": 1})
        # The worker's claim locked the task as the connection went away: the task is the
        # worker's in the database, but the worker never heard of it.
        assert len(await store.claim(worker.id, 10)) == 1
        stop = asyncio.Event()
        await asyncio.to_thread(own_pg.stop, "fast")
        running_worker = asyncio.create_task(worker.run(stop))
        try:
            await asyncio.sleep(0.5)  # its claims fail meanwhile
            await asyncio.to_thread(own_pg.start)
            # Not after the 30 s lease: as soon as the worker claims again.
            await eventually(lambda: _all_completed_in(app, run_id), within=5, what="the run completed")
        finally:
            stop.set()
            await running_worker
        events = await app.db.fetch_all(_sql(
            "SELECT e.reason FROM task_events e JOIN tasks t ON t.id = e.task_id "
            "WHERE t.run_id = :run AND t.stage = 'first' ORDER BY e.id"), {"run": uuid.UUID(run_id)})
        assert "claim answer lost" in [e["reason"] for e in events]


async def _all_completed_in(app: App, run_id: str) -> bool:
    report = await app.store.report(run_id)
    return bool(report and report["status"] == "completed")
