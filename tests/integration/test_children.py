"""Runs that start runs (``ctx.start``) on a real Postgres: children start with the stage's
completion (or not at all), linked to their parent in reports; ``wait_for_children`` goes on once
they have all finished, with their outcomes; a job fans children out through the fan-out path.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from support import FakeClock, drain, run_once, scalar

from engine.runtime.report import render
from engine.runtime.runner import run_script
from engine.store import waits
from engine.store.db import NOTIFY_CHANNEL
from engine.store.tasks import Store
from engine.triggers.jobs.firing import find_job, fire

STAGES = {
    "batch/workflow.py": """
        from engine import Workflow
        workflow = Workflow("batch")
        split = workflow.script("split")
        children = workflow.wait_for_children("children", timeout="1h", on_timeout="late")
        report = workflow.script("report")
        late = workflow.script("late")
        nightly = workflow.job("nightly", schedule="daily at 02:00")
        workflow.transition(split, children)
        workflow.transition(children, report, on="children.finished")
        workflow.transition(children, late, on="late")
    """,
    "batch/split.py": """
        def run(task, ctx):
            for n in task["items"]:
                ctx.start(task.get("to", "invoice"), {"n": n})
            if task.get("fail"):
                raise RuntimeError("split failed")
            ctx.send("split", {"count": len(task["items"])})
    """,
    "batch/report.py": """
        def run(task, ctx):
            ctx.run["children"] = task["children"]
            ctx.run["counts"] = task["children_counts"]
    """,
    "batch/late.py": "def run(task, ctx):\n    ctx.run['late'] = True\n",
    "batch/nightly.py": """
        import os

        def run(ctx):
            for n in range(int(os.environ.get("CHILDREN_BENCH", "1200"))):
                ctx.start("invoice", {"n": n})
    """,
    "invoice/workflow.py": """
        from engine import Workflow
        workflow = Workflow("invoice")
        process = workflow.script("process", max_attempts=1)
    """,
    "invoice/process.py": """
        def run(task, ctx):
            if task["n"] == 13:
                raise ValueError("unlucky invoice")
            ctx.run["total"] = task["n"] * 10
    """,
}


@pytest.fixture
def store(make_stages, store_for) -> Store:
    return store_for(make_stages(STAGES), clock=FakeClock())


async def split(store: Store, items: list[int], **extra: object) -> str:
    run_id, _ = await store.start_run(store.registry.get("batch").stage("split"), {"items": items, **extra})
    return run_id


async def test_ctx_start_starts_child_runs_linked_to_the_parent(store) -> None:
    parent = await split(store, [1, 2])
    await run_once(store)
    rows = await store.report(parent)
    assert rows["children_counts"] in ({"running": 2}, {"completed": 2})
    child = rows["children"][0]
    child_report = await store.report(child["id"])
    assert child_report["workflow"] == "invoice"
    assert child_report["parent_run_id"] == parent
    assert child_report["trigger"]["kind"] == "parent" and child_report["trigger"]["stage"] == "batch/split"
    assert f"parent    {parent}" in render(child_report)
    assert "children  2" in render(rows)


async def test_a_stage_that_raises_starts_no_children(store) -> None:
    await split(store, [1, 2, 3], fail=True)
    await run_once(store)
    assert await scalar(store, "SELECT count(*) FROM runs WHERE workflow = 'invoice'") == 0


async def test_starting_an_unknown_workflow_fails_the_stage_with_a_clear_error(store) -> None:
    parent = await split(store, [1], to="nope")
    await run_once(store)
    error = await scalar(store, "SELECT error FROM tasks WHERE run_id = CAST(:r AS uuid)", r=parent)
    assert "batch/split: ctx.start('nope')" in error and 'no workflow named "nope"' in error


async def test_wait_for_children_goes_on_with_their_outcomes_once_all_have_finished(store) -> None:
    parent = await split(store, [1, 13, 2])
    await run_once(store)  # the split: children started, the parent waits
    assert (await store.get_run(parent))["status"] == "waiting"
    assert await waits.expire(store) == 0  # children still open
    await drain(store)
    assert await waits.expire(store) == 1
    await drain(store)
    report = await store.report(parent)
    assert report["status"] == "completed"
    counts, children = report["context"]["counts"], report["context"]["children"]
    assert counts == {"completed": 2, "failed": 1}
    by_n = {c["context"].get("total"): c for c in children}
    assert by_n[10]["status"] == "completed" and by_n[20]["status"] == "completed"
    failed = next(c for c in children if c["status"] == "failed")
    assert "unlucky invoice" in failed["error"] and failed["workflow"] == "invoice"


async def test_wait_for_children_with_no_children_goes_on_at_once(store) -> None:
    parent = await split(store, [])
    await drain(store)
    report = await store.report(parent)
    assert report["status"] == "completed" and report["context"]["counts"] == {}


async def test_wait_for_children_times_out_with_its_on_timeout_task(store) -> None:
    parent = await split(store, [1])
    await run_once(store)
    store.clock.advance(3600)
    assert await waits.expire(store) == 1
    await drain(store)
    assert (await store.get_run(parent))["context"] == {"late": True}


async def test_a_finished_child_wakes_the_workers_so_the_parent_goes_on_at_once(store) -> None:
    parent = await split(store, [1])
    await run_once(store)
    woken = asyncio.Event()
    async with store.db.listen(NOTIFY_CHANNEL, lambda _payload: woken.set()):
        rows = await store.claim("w1", 10)
        [finished] = [await run_script(store.stage_of(r), r, max_payload_bytes=1 << 16) for r in rows]
        assert finished.routes.tasks == []  # the child's last stage sends nothing of its own
        await store.commit("w1", [finished])
        await asyncio.wait_for(woken.wait(), 5)
    assert await waits.expire(store) == 1
    await drain(store)
    assert (await store.get_run(parent))["status"] == "completed"


async def test_a_job_fans_children_out_through_the_fan_out_path(store, monkeypatch) -> None:
    monkeypatch.setenv("CHILDREN_BENCH", "12000")
    job = find_job(store.registry, "batch/nightly")
    result = await fire(store, job, dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.UTC))
    assert result.status == "fired", result.error
    assert result.runs_created == 12000
    children = "SELECT count(*) FROM runs WHERE workflow = 'invoice' AND parent_run_id IS NULL"
    assert await scalar(store, children) == 12000
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'process' AND status = 'pending'") == 12000
    trigger = await scalar(store, "SELECT trigger FROM runs WHERE workflow = 'invoice' LIMIT 1")
    assert trigger["kind"] == "job" and trigger["job"] == "batch/nightly"
    assert await scalar(store, "SELECT count(DISTINCT (payload->>'n')::int) FROM tasks") == 12000


async def test_cancelling_a_parent_cancels_its_open_children_each_in_its_audit_trail(store) -> None:
    from engine.ops import runs as run_ops
    from engine.ops.actor import local_admin
    from engine.ops.base import Ops
    from engine.ops.directory import People

    parent = await split(store, [1, 2, 3])
    await run_once(store)  # the split: three children, each with its script waiting
    children = [c["id"] for c in (await store.report(parent))["children"]]
    assert len(children) == 3
    await run_once(store, limit=1)  # one child finishes before the cancel
    finished = [c for c in children if (await store.get_run(c))["status"] == "completed"]
    ops = Ops(store, People(store.db), max_payload_bytes=256 * 1024)
    done = await run_ops.cancel(ops, parent, local_admin(), "wrong batch")
    assert sorted(done["children_cancelled"]) == sorted(set(children) - set(finished))
    assert await drain(store) == []  # nothing of the tree runs any more
    for child in children:
        report = await store.report(child)
        if child in finished:
            assert report["status"] == "completed" and report["audit"] == []
            continue
        assert report["status"] == "cancelled" and f"its parent run {parent} was cancelled" in report["error"]
        assert [(a["action"], a["detail"]["parent_run_id"]) for a in report["audit"]] == [("cancel", parent)]
    audit = (await store.report(parent))["audit"]
    assert [a["action"] for a in audit] == ["cancel"] and len(audit[0]["detail"]["children_cancelled"]) == 2
