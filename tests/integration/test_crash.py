"""A worker killed with SIGKILL in the middle of a stage: nothing is lost, nothing runs twice.

Real `flowbot worker` processes and real time with a short ``lease=2``: the stage marks that it
started (a file named after its attempt and pid), then sleeps; the test kills the process, waits
for the lease to run out and starts another worker, whose reaper puts the task back to pending.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import cli_env, events, eventually, scalar, spawn, stop, task_row, write_stages

from engine.loader import load_workflows
from engine.store.tasks import Store

STAGES = {
    "crashy/workflow.py": """
        from engine import Workflow
        workflow = Workflow("crashy")
        once = workflow.script("hangs-once", lease=2)
        always = workflow.script("hangs-always", lease=2, max_attempts=2)
        after = workflow.script("after")
        graceful = workflow.script("outlives-its-lease", lease=2)
        workflow.transition(once, after)
        workflow.transition(always, after)
    """,
    "crashy/hangs_once.py": """
        import os, time
        from pathlib import Path

        def run(task, ctx):
            Path(os.environ["CRASH_DIR"], f"{task.id}-{ctx.attempt}-{os.getpid()}").touch()
            if ctx.attempt == 1:
                time.sleep(60)
            ctx.run["done_on_attempt"] = ctx.attempt
            ctx.send("done", {"attempt": ctx.attempt})
    """,
    "crashy/hangs_always.py": """
        import os, time
        from pathlib import Path

        def run(task, ctx):
            Path(os.environ["CRASH_DIR"], f"{task.id}-{ctx.attempt}-{os.getpid()}").touch()
            time.sleep(60)
    """,
    "crashy/outlives_its_lease.py": """
        import os, time
        from pathlib import Path

        def run(task, ctx):
            Path(os.environ["CRASH_DIR"], f"{task.id}-{ctx.attempt}-{os.getpid()}").touch()
            time.sleep(3)
            ctx.run["finished"] = True
    """,
    "crashy/after.py": """
        def run(task, ctx):
            ctx.run["after"] = task.payload
    """,
}


@pytest.fixture
def setup(db, database_url, tmp_path) -> tuple[Store, dict[str, str], Path]:
    stages = write_stages(tmp_path / "stages", STAGES)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = cli_env(database_url, stages, FLOWBOT_LOG_LEVEL="INFO", CRASH_DIR=str(marks))
    return Store(db, load_workflows(stages)), env, marks


async def wait_for(check: Any, what: str, within: float = 60.0) -> Any:
    return await eventually(check, within=within, what=what)


def tail(log: Path) -> str:
    """The end of a worker's log (for assertion messages)."""
    return log.read_text()[-2000:]


def marks_of(marks: Path, task_id: int) -> list[tuple[int, int]]:
    """(attempt, pid) of every time the stage started on ``task_id``."""
    found = [p.name.split("-") for p in marks.iterdir()]
    return sorted((int(a), int(pid)) for t, a, pid in found if int(t) == task_id)


async def kill_in_the_middle(store: Store, env: dict[str, str], marks: Path, task_id: int, attempt: int,
                             log: Path) -> int:
    """Start a worker, wait until it is inside the stage (attempt ``attempt``), SIGKILL it."""
    proc = spawn("worker", env=env, log=log)
    try:
        async def started() -> bool:
            return any(a == attempt for a, _ in await asyncio.to_thread(marks_of, marks, task_id))

        await wait_for(started, f"attempt {attempt} to start")
        # Heartbeats keep a 2-second lease alive while the stage runs well past it.
        await asyncio.sleep(3)
        row = await task_row(store, task_id)
        assert (row["status"], row["attempts"]) == ("locked", attempt), tail(log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


async def lease_expired(store: Store, task_id: int) -> None:
    async def expired() -> bool:
        return bool(await scalar(store, "SELECT locked_until < now() FROM tasks WHERE id = :i", i=task_id))

    await wait_for(expired, "the lease to run out", within=30)


async def test_a_task_whose_worker_was_killed_is_claimed_again_after_its_lease_and_completes_once(
        setup, tmp_path) -> None:
    store, env, marks = setup
    run_id, task_id = await store.start_run(store.registry.get("crashy").stage("hangs-once"), {})
    killed = await kill_in_the_middle(store, env, marks, task_id, 1, tmp_path / "a.log")
    await lease_expired(store, task_id)

    survivor = spawn("worker", env=env, log=tmp_path / "b.log")
    try:
        async def completed() -> bool:
            run = await store.get_run(run_id)
            return run is not None and run["status"] == "completed"

        await wait_for(completed, "the run to complete")
    finally:
        assert stop(survivor) == 0

    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"]) == ("completed", 2)
    [(_, pid1), (_, pid2)] = marks_of(marks, task_id)
    assert pid1 == killed and pid2 == survivor.pid
    log = await events(store, task_id)
    assert [(f, t) for f, t, _ in log] == [
        (None, "pending"), ("pending", "locked"), ("locked", "pending"), ("pending", "locked"),
        ("locked", "completed"),
    ]
    first_worker, reaper, second_worker, completer = (a for _, _, a in log[1:])
    assert f":{killed}:" in first_worker
    assert reaper == second_worker == completer == saved["completed_by"]
    assert f":{survivor.pid}:" in completer
    # The follow-up was sent once, by the attempt that completed.
    report = await store.report(run_id)
    assert report is not None
    assert [(s["stage"], s["status"]) for s in report["steps"]] == [("hangs-once", "completed"), ("after", "completed")]
    assert report["context"] == {"done_on_attempt": 2, "after": {"attempt": 2}}


async def test_a_stage_killed_every_time_fails_after_max_attempts(setup, tmp_path) -> None:
    store, env, marks = setup
    run_id, task_id = await store.start_run(store.registry.get("crashy").stage("hangs-always"), {})
    pids = []
    for attempt in (1, 2):  # max_attempts=2
        pids.append(await kill_in_the_middle(store, env, marks, task_id, attempt, tmp_path / f"w{attempt}.log"))
        await lease_expired(store, task_id)

    reaper = spawn("worker", env=env, log=tmp_path / "reaper.log")
    try:
        async def failed() -> bool:
            run = await store.get_run(run_id)
            return run is not None and run["status"] == "failed"

        await wait_for(failed, "the run to fail")
        await asyncio.sleep(0.5)  # a claim would show here if the failed task were claimable
    finally:
        assert stop(reaper) == 0

    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"], saved["locked_by"]) == ("failed", 2, None)
    assert saved["error"].startswith("lease expired (worker ") and f":{pids[1]}:" in saved["error"]
    assert [pid for _, pid in marks_of(marks, task_id)] == pids
    run = await store.get_run(run_id)
    assert run is not None and run["error"].startswith(f"task {task_id} failed: lease expired")
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE run_id = :r", r=uuid.UUID(run_id)) == 1
    assert [t for _, t, _ in await events(store, task_id)] == ["pending", "locked", "pending", "locked", "failed"]



async def test_sigterm_lets_the_stage_in_flight_finish_and_commit_before_exiting(setup, tmp_path) -> None:
    store, env, marks = setup
    run_id, task_id = await store.start_run(store.registry.get("crashy").stage("outlives-its-lease"), {})
    log = tmp_path / "w.log"
    proc = spawn("worker", env=env, log=log)
    try:
        async def started() -> bool:
            return bool(await asyncio.to_thread(marks_of, marks, task_id))

        await wait_for(started, "the stage to start")
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 20)
    finally:
        code = stop(proc)
    assert code == 0, tail(log)
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"]) == ("completed", 1)
    assert f":{proc.pid}:" in saved["completed_by"]
    run = await store.get_run(run_id)
    assert run is not None and (run["status"], run["context"]) == ("completed", {"finished": True})
