"""Job fan-out on a real Postgres: sends are written in batches while the job still runs
(engine.jobs.stream), as binary COPY (engine.fanout, engine.pgcopy), and still commit with the
fire row or not at all.

The batch size is lowered so that a few thousand sends cross several batches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from support import eventually, scalar

from engine.context import Send
from engine.store.tasks import Store
from engine.triggers.jobs import stream
from engine.triggers.jobs.firing import find_job, fire

UTC = dt.UTC
FIRE = dt.datetime(2026, 11, 16, 3, 0, tzinfo=UTC)
CHUNK = 1_000

STAGES = {
    "spread/workflow.py": """
        from engine import Workflow
        workflow = Workflow("spread")
        many = workflow.job("many", schedule="daily at 03:00")
        mixed = workflow.job("mixed", schedule="daily at 04:00")
        failing = workflow.job("failing", schedule="daily at 05:00")
        naming = workflow.job("naming", schedule="daily at 06:00")
        nul = workflow.job("nul", schedule="daily at 07:00")
        endless = workflow.job("endless", schedule="daily at 08:00")
        handle = workflow.script("handle", max_attempts=5, lease=90)
        review = workflow.form("review", assignee="{who}")
        left = workflow.script("left")
        merge = workflow.script("merge", join="all")
        workflow.transition(many, handle, on="item")
        workflow.transition(mixed, handle, on=["item", "both"])
        workflow.transition(mixed, review, on=["ask", "both"])
        workflow.transition(mixed, left, on="join")
        workflow.transition(mixed, merge, on="join")
        workflow.transition(left, merge)
        workflow.transition(failing, handle, on="item")
        workflow.transition(naming, handle, on="item")
        workflow.transition(nul, handle, on="item")
        workflow.transition(endless, handle, on="item")
    """,
    # A sync job (it runs in a thread, so its batches are written while it is still sending).
    "spread/many.py": """
        import os

        def run(ctx):
            n = int(os.environ.get("SPREAD_N", "3500"))
            ctx.run["batch"] = "first"
            for i in range(n):
                if i == n // 2:
                    ctx.run["batch"] = "final"  # after some batches were written
                ctx.send("item", {"i": i, "name": "Zoë ✓", "nested": {"ok": True, "none": None}})
    """,
    "spread/mixed.py": """
        def run(ctx):
            ctx.send("item", {"n": 1})
            ctx.send("ask", {"who": "U0ASK"})
            ctx.send("both", {"who": "U0BOTH"})
            ctx.send("join", {"n": 4})
            ctx.send("nobody", {"n": 5})
    """,
    "spread/failing.py": """
        def run(ctx):
            for i in range(3500):
                ctx.send("item", {"i": i})
            raise RuntimeError("the source went away")
    """,
    "spread/naming.py": """
        def run(ctx):
            for i in range(2500):
                ctx.send("item", {"i": i})
            ctx.send("item", {"late": True}, run_id="00000000-0000-0000-0000-000000000000")
    """,
    "spread/nul.py": """
        def run(ctx):
            for i in range(2500):
                ctx.send("item", {"i": i, "text": "bad \\u0000" if i == 1200 else "fine"})
    """,
    "spread/endless.py": """
        import os

        def run(ctx):
            try:
                while True:
                    ctx.send("item", {"n": 1})
            finally:
                with open(os.environ["ENDLESS_DONE"], "w") as f:
                    f.write("stopped")
    """,
    "spread/handle.py": "def run(task, ctx):\n    pass\n",
    "spread/left.py": "def run(task, ctx):\n    ctx.send('done', {})\n",
    "spread/merge.py": "def run(task, ctx):\n    pass\n",
    "spread/review.py": """
        def form(task):
            return None

        def run(task, answers, ctx):
            pass
    """,
}


@pytest.fixture
def store(make_stages: Any, store_for: Any, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setattr(stream, "STREAM_CHUNK", CHUNK)
    result: Store = store_for(make_stages(STAGES))
    return result


async def rows(store: Store, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with store.db.transaction() as tx:
        return await tx.fetch_all(text(sql), params)


async def test_a_sync_job_streams_its_sends_in_batches_and_every_run_gets_the_final_context(store: Store) -> None:
    result = await fire(store, find_job(store.registry, "spread/many"), FIRE)
    assert (result.status, result.runs_created, result.tasks) == ("fired", 3500, 3500)
    runs = await rows(store, "SELECT id, status, context, trigger, workflow FROM runs ORDER BY id")
    assert len(runs) == 3500
    # ctx.run changed half-way: runs written before that were brought up to date.
    assert {r["context"]["batch"] for r in runs} == {"final"}
    assert {(r["status"], r["workflow"]) for r in runs} == {("running", "spread")}
    assert {r["trigger"]["fire_id"] for r in runs} == {result.fire_id}
    ids = [uuid.UUID(str(r["id"])) for r in runs]
    assert {i.version for i in ids} == {7} and len(set(ids)) == 3500
    tasks = await rows(store, "SELECT * FROM tasks ORDER BY (payload->>'i')::int")
    assert [t["payload"]["i"] for t in tasks] == list(range(3500))
    first = tasks[0]
    assert first["payload"] == {"i": 0, "name": "Zoë ✓", "nested": {"ok": True, "none": None}}
    assert (first["stage"], first["kind"], first["type"], first["status"]) == ("handle", "script", "item", "pending")
    assert (first["max_attempts"], first["lease_seconds"], first["attempts"]) == (5, 90, 0)
    assert first["created_by"] == "job:spread/many" and first["assignee"] is None
    assert first["created_at"] == first["available_at"] and first["created_at"].tzinfo is not None
    assert abs((first["created_at"] - dt.datetime.now(UTC)).total_seconds()) < 60
    assert len({t["run_id"] for t in tasks}) == 3500


async def test_forms_joins_and_unrouted_sends_of_a_job_take_their_own_paths(store: Store) -> None:
    result = await fire(store, find_job(store.registry, "spread/mixed"), FIRE)
    assert (result.status, result.runs_created) == ("fired", 4)
    assert [u["type"] for u in result.unrouted] == ["nobody"]
    tasks = await rows(store, "SELECT t.stage, t.kind, t.type, t.assignee, r.status AS run_status "
                              "FROM tasks t JOIN runs r ON r.id = t.run_id ORDER BY t.type, t.stage")
    assert [(t["type"], t["stage"], t["run_status"]) for t in tasks] == [
        ("ask", "review", "waiting"),  # only a form: the run waits on people
        ("both", "handle", "running"),
        ("both", "review", "running"),
        ("item", "handle", "running"),
        ("join", "left", "running"),
    ]
    assert {t["type"]: t["assignee"] for t in tasks if t["kind"] == "form"} == {
        "ask": {"users": ["U0ASK"]}, "both": {"users": ["U0BOTH"]}}
    # Each form task is queued for assignment; the join waits for its other branch.
    assert await scalar(store, "SELECT count(*) FROM outbox WHERE kind = 'form.assigned'") == 2
    assert await scalar(store, "SELECT count(*) FROM join_arrivals WHERE stage = 'merge'") == 1


async def fails_leaving_nothing(store: Store, job: str, error: str) -> None:
    """Fire ``job``: it fails with ``error`` in its error, and none of its batches remain."""
    result = await fire(store, find_job(store.registry, job), FIRE)
    assert result.status == "failed" and error in (result.error or "")
    assert await scalar(store, "SELECT count(*) FROM runs") == 0
    assert await scalar(store, "SELECT count(*) FROM tasks") == 0


async def test_a_sync_job_that_raises_after_several_batches_commits_only_its_failed_fire(store: Store) -> None:
    await fails_leaving_nothing(store, "spread/failing", "the source went away")
    assert await scalar(store, "SELECT status FROM job_fires WHERE job = 'spread/failing'") == "failed"


async def test_a_send_naming_an_unknown_run_undoes_the_batches_already_written(store: Store) -> None:
    await fails_leaving_nothing(store, "spread/naming", "does not exist")


async def test_a_batch_postgres_refuses_fails_the_job_and_undoes_every_batch(store: Store) -> None:
    await fails_leaving_nothing(store, "spread/nul", "\\u0000")
    assert await scalar(store, "SELECT status FROM job_fires WHERE job = 'spread/nul'") == "failed"


async def test_a_fire_cancelled_mid_fan_out_commits_nothing_and_stops_the_job_thread(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = tmp_path / "done"
    monkeypatch.setenv("ENDLESS_DONE", str(done))
    firing = asyncio.create_task(fire(store, find_job(store.registry, "spread/endless"), FIRE))
    await asyncio.sleep(0.5)  # batches are being written meanwhile
    firing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await firing
    # The job's thread cannot be cancelled; its next send tells it the fire is over.
    async def stopped() -> bool:
        return done.exists()

    await eventually(stopped, within=10, what="the job thread to stop")
    assert await scalar(store, "SELECT count(*) FROM runs") == 0
    assert await scalar(store, "SELECT count(*) FROM job_fires") == 0


async def test_the_tasks_of_a_fan_out_are_claimed_and_completed_like_any_other(store: Store) -> None:
    await fire(store, find_job(store.registry, "spread/many"), FIRE)
    claimed = await store.claim("w1", 10)
    assert len(claimed) == 10 and {c["stage"] for c in claimed} == {"handle"}
    assert all(c["attempts"] == 1 for c in claimed)


async def test_rows_copied_as_a_transactions_first_statement_roll_back_with_it(store: Store) -> None:
    stage = store.registry.get("spread").stage("many")
    batch = store.fresh_runs(stage, trigger={"kind": "test"}, now=dt.datetime.now(UTC))
    batch.add(Send("item", {"i": 1}))
    with pytest.raises(RuntimeError, match="undo"):
        async with store.db.transaction() as tx:
            started = await store.write_fresh(tx, batch)
            assert started.tasks == 1
            raise RuntimeError("undo")
    assert await scalar(store, "SELECT count(*) FROM runs") == 0
    assert await scalar(store, "SELECT count(*) FROM tasks") == 0
