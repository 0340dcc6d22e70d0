"""A two-stage workflow runs end to end on a real Postgres."""

from __future__ import annotations

import asyncio

from engine.runtime.worker import Worker, WorkerOptions
from engine.store.tasks import Store

STAGES = {
    "pair/workflow.py": """
        from engine import Workflow
        workflow = Workflow("pair")
        first = workflow.script("first")
        second = workflow.script("second")
        workflow.transition(first, second, on="next")
    """,
    "pair/first.py": """
        def run(task, ctx):
            ctx.run["seen"] = task["n"]
            ctx.send("next", {"n": task["n"] + 1})
    """,
    "pair/second.py": """
        async def run(task, ctx):
            ctx.run["second"] = task["n"]
    """,
}


async def test_a_run_of_two_scripts_completes_with_merged_context(make_stages, store_for) -> None:
    store: Store = store_for(make_stages(STAGES))
    run_id, _ = await store.start_run(store.registry.get("pair").stage("first"), {"n": 1})
    stop = asyncio.Event()
    worker = Worker(store, WorkerOptions(poll_interval=0.2))
    task = asyncio.create_task(worker.run(stop))
    for _ in range(100):
        report = await store.report(run_id)
        assert report is not None
        if report["status"] == "completed":
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    assert report["status"] == "completed"
    assert [s["stage"] for s in report["steps"]] == ["first", "second"]
    assert report["context"] == {"seen": 1, "second": 2}
