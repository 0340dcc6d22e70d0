"""Eight `flowbot worker` processes over 5,000 tasks: each task completed exactly once, none lost.

The workers are real subprocesses on the test database; they start first, then 5,000 runs are
started in one transaction, so all eight wake on the same NOTIFY and race for the same rows.
Each stage execution also appends ``task_id pid`` to a shared file (one ``O_APPEND`` write), so
the test sees not only that each task completed once but that its stage ran once.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from pathlib import Path

from support import cli_env, scalar, spawn, stop, write_stages

from engine.context import Send
from engine.loader import load_workflows
from engine.store.tasks import Store

WORKERS = 8
TASKS = 5_000

STAGES = {
    "bulk/workflow.py": """
        from engine import Workflow
        workflow = Workflow("bulk")
        seed = workflow.script("seed")
        work = workflow.script("work")
        workflow.transition(seed, work, on="item")
    """,
    "bulk/seed.py": """
        def run(task, ctx):
            pass
    """,
    "bulk/work.py": """
        import os

        def run(task, ctx):
            fd = os.open(os.environ["BULK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{task.id} {os.getpid()}\\n".encode())
            finally:
                os.close(fd)
            ctx.run["n"] = task["n"]
    """,
}


async def _wait_started(logs: list[Path], within: float = 90.0) -> None:
    deadline = time.monotonic() + within
    while not all(p.exists() and "worker started" in p.read_text() for p in logs):
        if time.monotonic() > deadline:
            tails = [p.read_text()[-2000:] for p in logs if p.exists()]
            raise AssertionError("workers did not start:\n" + "\n".join(tails))
        await asyncio.sleep(0.1)


async def test_eight_worker_processes_complete_each_of_5000_tasks_exactly_once(db, database_url, tmp_path) -> None:
    stages = write_stages(tmp_path / "stages", STAGES)
    store = Store(db, load_workflows(stages))
    ran = tmp_path / "ran.log"
    env = cli_env(database_url, stages, FLOWBOT_LOG_LEVEL="INFO", BULK_LOG=str(ran), FLOWBOT_CONCURRENCY="8")
    logs = [tmp_path / f"worker{i}.log" for i in range(WORKERS)]
    procs = [spawn("worker", env=env, log=log) for log in logs]
    try:
        await _wait_started(logs)
        seed = store.registry.get("bulk").stage("seed")
        async with db.transaction() as tx:
            started = await store.start_runs(tx, seed, [Send("item", {"n": n}) for n in range(TASKS)],
                                             trigger={"kind": "test"}, now=store.clock())
        assert started.tasks == TASKS

        deadline = time.monotonic() + 150
        while (done := await scalar(store, "SELECT count(*) FROM tasks WHERE status = 'completed'")) < TASKS:
            assert time.monotonic() < deadline, f"only {done} of {TASKS} tasks completed in 150 s"
            assert all(p.poll() is None for p in procs), "a worker exited early"
            await asyncio.sleep(0.2)
    finally:
        codes = [stop(p) for p in procs]
    assert codes == [0] * WORKERS, [log.read_text()[-2000:] for log in logs]

    # Every task completed, exactly once, by one of the workers.
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'work'") == TASKS
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE status <> 'completed'") == 0
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE attempts <> 1") == 0
    completions = await scalar(
        store, "SELECT count(*) FROM task_events WHERE to_status = 'completed'")
    assert completions == TASKS
    twice = await scalar(
        store, "SELECT count(*) FROM (SELECT task_id FROM task_events WHERE to_status = 'completed' "
               "GROUP BY task_id HAVING count(*) > 1) x")
    assert twice == 0
    claims_twice = await scalar(
        store, "SELECT count(*) FROM (SELECT task_id FROM task_events WHERE to_status = 'locked' "
               "GROUP BY task_id HAVING count(*) > 1) x")
    assert claims_twice == 0, "a task was claimed twice"
    assert await scalar(store, "SELECT count(*) FROM runs WHERE status <> 'completed'") == 0

    # Each stage ran once per task, and the work was spread over the processes.
    lines = ran.read_text().split()
    executions = collections.Counter(int(t) for t in lines[0::2])
    assert len(executions) == TASKS and set(executions.values()) == {1}
    pids = set(lines[1::2])
    assert len(pids) > 1, "one worker did everything: no race was tested"
    workers = await scalar(store, "SELECT count(DISTINCT completed_by) FROM tasks WHERE stage = 'work'")
    assert workers == len(pids)
    assert os.getpid() not in {int(p) for p in pids}
