"""Group commit of hook deliveries: concurrent requests share one statement, each answered only
after it committed, with its own runs; duplicates and failures inside a batch stay isolated.

Real Postgres, real aiohttp server on loopback (the HookServer mounted as ``flowbot web`` does).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import text
from support import scalar

from engine.errors import DatabaseError
from engine.runtime.app import App
from engine.settings import Settings
from engine.store.db import Database
from engine.store.tasks import Store
from engine.triggers.hooks.deliver import Committer, Item, Waker
from engine.triggers.hooks.http import HookServer, mount_hooks

STAGES = {
    "batch/workflow.py": """
        from engine import Workflow
        workflow = Workflow("batch")
        intake = workflow.hook("intake", auth=None)
        handle = workflow.script("handle")
        workflow.transition(intake, handle, on="item")
    """,
    "batch/intake.py": """
        async def run(request, ctx):
            ctx.send("item", request.data)
    """,
    "batch/handle.py": "def run(task, ctx):\n    pass\n",
}

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


async def counts(db: Database) -> dict[str, int]:
    return {table: int(await scalar_db(db, f"SELECT count(*) FROM {table}"))
            for table in ("runs", "tasks", "hook_deliveries")}


async def scalar_db(db: Database, sql: str, **params: Any) -> Any:
    async with db.transaction() as tx:
        return await tx.fetch_value(text(sql), params)


def item(payload: dict[str, Any], delivery_id: str | None = None, *, sends: bool = True) -> Item:
    run_id = uuid.uuid4()
    return Item(hook="batch/intake", delivery_id=delivery_id, method="POST", status=200,
                headers={"Content-Type": "application/json"}, body=json.dumps(payload).encode(),
                run_ids=[run_id] if sends else [], unrouted=[], log=[], now=NOW, workflow="batch",
                trigger={"kind": "hook", "hook": "batch/intake", "delivery_id": delivery_id}, context={},
                tasks=[(run_id, "handle", "item", json.dumps(payload), 3, 300)] if sends else [])


@pytest.fixture
async def committer(db: Database) -> AsyncIterator[Committer]:
    waker = Waker(db)
    c = Committer(db, waker)
    yield c
    await c.close()
    await waker.close()


async def commit_together(committer: Committer, items: list[Item]) -> list[bool | BaseException]:
    """Submit every item in the same loop turn: the statement started by the first one takes all
    that are waiting when it starts."""
    return list(await asyncio.gather(*(committer.commit(i) for i in items), return_exceptions=True))


async def test_concurrent_deliveries_share_one_statement_and_each_gets_its_own_run(
        db: Database, committer: Committer) -> None:
    items = [item({"n": n}) for n in range(12)]

    results = await commit_together(committer, items)

    assert results == [True] * 12
    assert list(committer.batch_sizes) == [12]
    assert await counts(db) == {"runs": 12, "tasks": 12, "hook_deliveries": 12}
    for it in items:
        run_id = it.run_ids[0]
        async with db.transaction() as tx:
            row = await tx.fetch_one(text("SELECT r.workflow, r.status, t.stage, t.payload, t.created_by "
                                          "FROM runs r JOIN tasks t ON t.run_id = r.id WHERE r.id = :id"),
                                     {"id": run_id})
        assert row == {"workflow": "batch", "status": "running", "stage": "handle",
                       "payload": json.loads(it.body), "created_by": "hook:batch/intake"}


async def test_a_delivery_id_twice_in_one_batch_or_already_committed_starts_one_run(
        db: Database, committer: Committer) -> None:
    await committer.commit(item({"first": True}, "earlier"))
    lead = item({"n": 0})
    twins = [item({"twin": n}, "same-id") for n in range(3)]
    again = item({"again": True}, "earlier")

    results = await commit_together(committer, [lead, *twins, again, item({"n": 1})])

    assert results == [True, True, False, False, False, True]
    assert await counts(db) == {"runs": 4, "tasks": 4, "hook_deliveries": 4}
    assert await scalar_db(db, "SELECT count(*) FROM runs WHERE id = :id", id=twins[0].run_ids[0]) == 1
    assert await scalar_db(db, "SELECT count(*) FROM runs WHERE id = ANY(:ids)",
                           ids=[t.run_ids[0] for t in twins[1:]] + [again.run_ids[0]]) == 0


async def test_a_failing_item_fails_only_its_own_request_and_the_rest_of_its_batch_commits(
        db: Database, committer: Committer) -> None:
    # Postgres refuses a NUL character in jsonb: that one item cannot be stored.
    bad = item({"text": "nul \u0000 inside"})
    good = [item({"n": n}) for n in range(4)]

    results = await commit_together(committer, [good[0], good[1], bad, good[2], good[3]])

    assert results[:2] == [True, True] and results[3:] == [True, True]
    assert isinstance(results[2], DatabaseError) and "0000" in str(results[2])
    assert await counts(db) == {"runs": 4, "tasks": 4, "hook_deliveries": 4}
    assert await scalar_db(db, "SELECT count(*) FROM runs WHERE id = :id", id=bad.run_ids[0]) == 0


@pytest.fixture
async def hook_server(db: Database, database_url: str, make_stages: Any,
                      tmp_path: Path) -> AsyncIterator[tuple[str, HookServer, Store]]:
    registry = make_stages(STAGES)
    store = Store(db, registry)
    settings = Settings(database_url=database_url, home=tmp_path / "home", api_token="api-token")
    app = App(settings=settings, db=db, registry=registry, store=store, database_url=database_url)
    http = web.Application()
    server = mount_hooks(http, app)
    runner = web.AppRunner(http, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", server, store
    finally:
        await runner.cleanup()


async def test_concurrent_http_deliveries_are_batched_and_each_answer_names_its_committed_run(
        db: Database, hook_server: tuple[str, HookServer, Store]) -> None:
    url, server, store = hook_server

    async with aiohttp.ClientSession() as http:

        async def post(n: int) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{url}/hooks/intake", json={"n": n}) as resp:
                body = await resp.json()
                # Durable before acknowledged: the run is there as soon as the answer is.
                run_id = body["run_ids"][0]
                found = await scalar(store, "SELECT t.payload FROM tasks t WHERE t.run_id = CAST(:id AS uuid)",
                                     id=run_id)
                assert found == {"n": n}
                return resp.status, body

        results = await asyncio.gather(*(post(n) for n in range(24)))

    assert {status for status, _ in results} == {200}
    run_ids = [body["run_ids"][0] for _, body in results]
    assert len(set(run_ids)) == 24
    assert max(server.committer.batch_sizes) > 1
    assert sum(server.committer.batch_sizes) == 24
    assert await counts(db) == {"runs": 24, "tasks": 24, "hook_deliveries": 24}


async def test_a_delivery_postgres_cannot_store_is_a_422_that_creates_nothing_and_spares_its_neighbours(
        db: Database, hook_server: tuple[str, HookServer, Store]) -> None:
    url, server, _ = hook_server
    bodies = [{"n": n} for n in range(6)]
    bodies[3] = {"text": "nul \u0000 inside"}  # valid JSON, but jsonb refuses the NUL character

    async with aiohttp.ClientSession() as http:

        async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with http.post(f"{url}/hooks/intake", json=body) as resp:
                return resp.status, await resp.json()

        results = await asyncio.gather(*(post(b) for b in bodies))

    assert [status for status, _ in results] == [200, 200, 200, 422, 200, 200]
    assert "0000" in results[3][1]["error"]
    assert await counts(db) == {"runs": 5, "tasks": 5, "hook_deliveries": 5}
    assert sum(server.committer.batch_sizes) >= 5
