"""The task lifecycle of the contract, rule by rule, on a real Postgres with an injectable clock.

pending -> locked (a lease: locked_until = now + lease, renewed by heartbeat) -> completed; a
failing stage is retried with exponential backoff up to max_attempts, then failed with its run; an
expired lease reverts to pending and the attempt counts; release on shutdown does not count it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import pytest
from support import FakeClock, drain, events, eventually, run_once, scalar, task_row

from engine.runtime.runner import run_script
from engine.runtime.worker import Worker, WorkerOptions
from engine.store import queries
from engine.store.tasks import Store

STAGES = {
    "life/workflow.py": """
        from engine import Workflow
        workflow = Workflow("life")
        work = workflow.script("work")
        short = workflow.script("short", lease=5, max_attempts=2)
        flaky = workflow.script("flaky", max_attempts=4)
        slow = workflow.script("slow")
        after = workflow.script("after")
        together = workflow.script("together")
        bad_send = workflow.script("bad-send", max_attempts=1)
        stuck = workflow.script("stuck")
        workflow.transition(work, after, on="next")
        workflow.transition(flaky, after)
        workflow.transition(slow, after)
    """,
    "life/work.py": """
        def run(task, ctx):
            if task.get("send"):
                ctx.send("next", {"from": task.id})
    """,
    "life/short.py": """
        def run(task, ctx):
            pass
    """,
    "life/flaky.py": """
        def run(task, ctx):
            ctx.send("next", {"never": True})
            ctx.log("attempt %d", ctx.attempt)
            raise RuntimeError(f"boom on attempt {ctx.attempt}")
    """,
    "life/slow.py": """
        import asyncio

        started = asyncio.Event()

        async def run(task, ctx):
            started.set()
            await asyncio.sleep(task["seconds"])
            ctx.run["slept"] = task["seconds"]
            ctx.send("done", {})
    """,
    "life/after.py": """
        def run(task, ctx):
            pass
    """,
    "life/together.py": """
        import threading

        barrier = threading.Barrier(4, timeout=30)
        threads = []

        def run(task, ctx):
            # Four sync stages can only all reach the barrier if they run at the same time,
            # each on a thread of the pool, off the event loop.
            threads.append(threading.current_thread().name)
            barrier.wait()
    """,
    "life/stuck.py": """
        import threading

        started = threading.Event()
        release = threading.Event()

        def run(task, ctx):
            # A sync stage: once in its thread, nothing can stop it but its own return.
            started.set()
            release.wait(30)
    """,
    "life/bad_send.py": """
        def run(task, ctx):
            if task["what"] == "list":
                ctx.send("next", ["not", "an", "object"])
            ctx.send("next", {"blob": "x" * 500})
    """,
}

LEASE = 30


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_stages, store_for, clock) -> Store:
    return store_for(make_stages(STAGES), lease_seconds=LEASE, clock=clock)


async def start(store: Store, stage: str, payload: dict | None = None) -> tuple[str, int]:
    return await store.start_run(store.registry.get("life").stage(stage), payload or {})


async def run_status(store: Store, run_id: str) -> str:
    run = await store.get_run(run_id)
    assert run is not None
    return run["status"]


# -- claiming -----------------------------------------------------------------------------------


async def test_a_claim_locks_the_task_with_a_lease_of_now_plus_lease_seconds(store, clock) -> None:
    _, task_id = await start(store, "work")
    [row] = await store.claim("w1", 10)
    assert row["id"] == task_id
    saved = await task_row(store, task_id)
    assert saved["status"] == "locked"
    assert saved["locked_by"] == "w1"
    assert saved["attempts"] == 1
    assert saved["started_at"] == clock.now
    assert saved["locked_until"] == clock.now + dt.timedelta(seconds=LEASE)


async def test_a_locked_task_is_not_claimed_again_while_its_lease_runs(store, clock) -> None:
    await start(store, "work")
    assert len(await store.claim("w1", 10)) == 1
    clock.advance(LEASE - 1)
    assert await store.claim("w2", 10) == []


async def test_a_stage_lease_and_max_attempts_override_the_defaults(store, clock) -> None:
    _, short_id = await start(store, "short")
    _, work_id = await start(store, "work")
    rows = {r["id"]: r for r in await store.claim("w1", 10)}
    assert (rows[short_id]["lease_seconds"], rows[short_id]["max_attempts"]) == (5, 2)
    assert (rows[work_id]["lease_seconds"], rows[work_id]["max_attempts"]) == (LEASE, 3)
    assert (await task_row(store, short_id))["locked_until"] == clock.now + dt.timedelta(seconds=5)
    assert (await task_row(store, work_id))["locked_until"] == clock.now + dt.timedelta(seconds=LEASE)


async def test_concurrent_claimers_never_get_the_same_task(store) -> None:
    ids = {(await start(store, "work"))[1] for _ in range(120)}
    claimed: list[int] = []

    async def claimer(name: str) -> None:
        while rows := await store.claim(name, 7):
            claimed.extend(r["id"] for r in rows)

    await asyncio.gather(*(claimer(f"w{i}") for i in range(8)))
    assert len(claimed) == len(set(claimed)), "a task was claimed twice"
    assert set(claimed) == ids
    owners = await scalar(store, "SELECT count(DISTINCT locked_by) FROM tasks")
    assert owners > 1, "the claims did not overlap"


async def test_a_claim_skips_rows_another_claimer_holds_without_waiting(store) -> None:
    ids = sorted([(await start(store, "work"))[1] for _ in range(6)])
    async with store.db.transaction() as tx:  # a claimer mid-transaction holding three rows
        held = await tx.fetch_all(
            queries.CLAIM_TASKS, {"worker": "slowpoke", "limit": 3, "now": store.clock(), "workflows": None}
        )
        rows = await asyncio.wait_for(store.claim("w2", 10), timeout=5)
    assert {r["id"] for r in held} == set(ids[:3])
    assert {r["id"] for r in rows} == set(ids[3:])


# -- completing -----------------------------------------------------------------------------------


async def test_a_lost_lease_drops_the_result_and_its_sends(store, clock) -> None:
    run_id, task_id = await start(store, "work", {"send": True})
    [row] = await store.claim("w1", 1)
    result_w1 = await run_script(store.stage_of(row), row, max_payload_bytes=1000)
    clock.advance(LEASE + 1)
    await store.reap_expired()
    [row2] = await store.claim("w2", 1)
    assert row2["id"] == task_id

    late = await store.commit("w1", [result_w1])
    assert late.lost == [task_id]
    assert late.completed == []
    assert late.created == []
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE run_id = :r", r=row["run_id"]) == 1

    result_w2 = await run_script(store.stage_of(row2), row2, max_payload_bytes=1000)
    ok = await store.commit("w2", [result_w2])
    assert ok.completed == [task_id]
    assert [c["stage"] for c in ok.created] == ["after"]
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["completed_by"], saved["attempts"]) == ("completed", "w2", 2)
    assert run_id


async def test_a_worker_cannot_complete_a_task_another_worker_holds(store) -> None:
    _, task_id = await start(store, "work")
    [row] = await store.claim("w1", 1)
    finished = await run_script(store.stage_of(row), row, max_payload_bytes=1000)
    result = await store.commit("intruder", [finished])
    assert result.lost == [task_id]
    assert (await task_row(store, task_id))["status"] == "locked"


async def test_a_heartbeat_extends_the_lease_of_the_holder_only(store, clock) -> None:
    _, task_id = await start(store, "work")
    await store.claim("w1", 1)
    clock.advance(20)
    assert await store.heartbeat("w2", [task_id]) == set()
    assert await store.heartbeat("w1", [task_id]) == {task_id}
    assert (await task_row(store, task_id))["locked_until"] == clock.now + dt.timedelta(seconds=LEASE)
    clock.advance(LEASE - 1)  # past the first lease, within the renewed one
    assert await store.reap_expired() == []
    assert (await task_row(store, task_id))["status"] == "locked"


# -- expired leases ---------------------------------------------------------------------------------


async def test_an_expired_lease_reverts_to_pending_and_the_attempt_counts(store, clock) -> None:
    run_id, task_id = await start(store, "work")
    await store.claim("w1", 1)
    clock.advance(LEASE)
    assert await store.reap_expired() == [], "a lease ending exactly now has not expired yet"
    clock.advance(1)
    [moved] = await store.reap_expired()
    assert (moved["id"], moved["status"]) == (task_id, "pending")
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"], saved["locked_by"]) == ("pending", 1, None)
    assert "lease expired" in saved["error"] and "w1" in saved["error"]
    assert await run_status(store, run_id) == "running"
    [again] = await store.claim("w2", 1)
    assert again["attempts"] == 2


async def test_a_lease_expiring_on_the_last_attempt_fails_the_task_and_its_run(store, clock) -> None:
    run_id, task_id = await start(store, "short")  # lease=5, max_attempts=2
    for _ in range(2):
        assert len(await store.claim("w1", 1)) == 1
        clock.advance(6)
        await store.reap_expired()
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"]) == ("failed", 2)
    assert saved["finished_at"] == clock.now
    run = await store.get_run(run_id)
    assert run is not None and run["status"] == "failed"
    assert run["error"] == f"task {task_id} failed: lease expired (worker w1 stopped answering)"
    assert await store.claim("w1", 1) == []


# -- failures and retries ---------------------------------------------------------------------------


async def test_a_raising_stage_is_retried_with_exponential_backoff_then_fails_with_its_run(store, clock) -> None:
    run_id, task_id = await start(store, "flaky")  # max_attempts=4
    for delay in (2, 4, 8):
        await run_once(store)
        saved = await task_row(store, task_id)
        assert saved["status"] == "pending"
        assert saved["available_at"] == clock.now + dt.timedelta(seconds=delay)
        clock.advance(delay - 0.001)
        assert await store.claim("w1", 1) == [], f"claimed before its {delay} s backoff"
        clock.advance(0.001)
    await run_once(store)

    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"]) == ("failed", 4)
    assert saved["error"].startswith("RuntimeError: boom on attempt 4")
    assert "Traceback (most recent call last)" in saved["error"]
    assert 'flaky.py", line 4, in run' in saved["error"]
    assert [entry["message"] for entry in saved["log"]] == [f"attempt {n}" for n in (1, 2, 3, 4)]
    run = await store.get_run(run_id)
    assert run is not None and run["status"] == "failed"
    assert run["error"] == f"task {task_id} failed: RuntimeError: boom on attempt 4"
    report = await store.report(run_id)
    assert report is not None and report["steps"][0]["error"].startswith("RuntimeError: boom")


async def test_a_stage_that_raises_sends_nothing(store, clock) -> None:
    run_id, _ = await start(store, "flaky")
    for _ in range(4):
        await drain(store)
        clock.advance(60)
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE run_id = :r", r=_uuid(run_id)) == 1
    run = await store.get_run(run_id)
    assert run is not None and run["unrouted"] == []


async def test_release_gives_tasks_back_without_counting_the_attempt(store) -> None:
    ids = sorted([(await start(store, "work"))[1] for _ in range(3)])
    await store.claim("w1", 3)
    assert await store.release("w2", ids) == 0, "only the holder may release"
    assert await store.release("w1", ids[:2]) == 2
    for task_id in ids[:2]:
        saved = await task_row(store, task_id)
        assert (saved["status"], saved["attempts"], saved["locked_by"]) == ("pending", 0, None)
        assert (await events(store, task_id))[-1] == ("locked", "pending", "w1")
    assert (await task_row(store, ids[2]))["status"] == "locked"
    assert {r["attempts"] for r in await store.claim("w3", 3)} == {1}


# -- the event log ----------------------------------------------------------------------------------


async def test_the_event_log_records_every_transition_with_its_actor(store, clock) -> None:
    _, task_id = await start(store, "flaky")  # raise, retry, then expire, then fail
    await run_once(store, "w1")
    clock.advance(2)
    await store.claim("w2", 1)
    clock.advance(LEASE + 1)
    await store.reap_expired(actor="reaper-x")
    [row] = await store.claim("w3", 1)
    await store.release("w3", [row["id"]])
    _, done_id = await start(store, "work", {"send": True})
    clock.advance(1)
    await drain(store, "w4", rounds=3)

    assert await events(store, task_id) == [
        (None, "pending", "engine"),
        ("pending", "locked", "w1"),
        ("locked", "pending", "w1"),
        ("pending", "locked", "w2"),
        ("locked", "pending", "reaper-x"),
        ("pending", "locked", "w3"),
        ("locked", "pending", "w3"),
        ("pending", "locked", "w4"),
        ("locked", "pending", "w4"),
    ]
    assert await events(store, done_id) == [
        (None, "pending", "engine"),
        ("pending", "locked", "w4"),
        ("locked", "completed", "w4"),
    ]
    reasons = [r["reason"] for r in await store.db.fetch_all(queries.TASK_EVENTS, {"id": task_id})]
    assert reasons[4] == "lease expired" and reasons[6] == "released on shutdown"
    assert reasons[2].startswith("RuntimeError: boom on attempt 1")


# -- a worker shutting down -----------------------------------------------------------------------


async def _worker_with_slow_stage(store: Store, seconds: float, grace: float):
    module = store.registry.get("life").stage("slow").module
    assert module is not None
    module.started = asyncio.Event()
    run_id, task_id = await start(store, "slow", {"seconds": seconds})
    stop = asyncio.Event()
    worker = Worker(store, WorkerOptions(shutdown_grace=grace, poll_interval=0.2), name="wk")
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(module.started.wait(), timeout=10)
    stop.set()
    await asyncio.wait_for(running, timeout=grace + 10)
    return run_id, task_id


async def test_a_stopping_worker_lets_an_in_flight_stage_finish_and_commits_it(make_stages, store_for) -> None:
    store = store_for(make_stages(STAGES))
    run_id, task_id = await _worker_with_slow_stage(store, seconds=0.3, grace=10)
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"], saved["completed_by"]) == ("completed", 1, "wk")
    report = await store.report(run_id)
    assert report is not None and report["context"] == {"slept": 0.3}


async def test_a_stopping_worker_releases_a_stage_that_outlives_the_grace_period(make_stages, store_for) -> None:
    store = store_for(make_stages(STAGES))
    run_id, task_id = await _worker_with_slow_stage(store, seconds=60, grace=0.2)
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"], saved["locked_by"]) == ("pending", 0, None)
    assert (await events(store, task_id))[-1] == ("locked", "pending", "wk")
    assert await run_status(store, run_id) == "running"


async def test_a_stopping_worker_keeps_renewing_the_lease_of_a_stage_finishing_in_the_grace_period(
        make_stages, store_for) -> None:
    # A 2-second lease, a stage of 3.5 s still running when stop is set: another worker's reaper
    # must not take the task back while the grace period lets it finish.
    store = store_for(make_stages(STAGES), lease_seconds=2)
    module = store.registry.get("life").stage("slow").module
    assert module is not None
    module.started = asyncio.Event()
    run_id, task_id = await start(store, "slow", {"seconds": 3.5})
    stop = asyncio.Event()
    worker = Worker(store, WorkerOptions(shutdown_grace=10, poll_interval=0.2), name="wk")
    running = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(module.started.wait(), timeout=10)
    stop.set()
    reaped = []
    for _ in range(7):
        await asyncio.sleep(0.5)
        reaped += await store.reap_expired(actor="other-worker")
    await asyncio.wait_for(running, timeout=20)
    assert reaped == []
    saved = await task_row(store, task_id)
    assert (saved["status"], saved["attempts"], saved["completed_by"]) == ("completed", 1, "wk")
    # Its send went out once; the follow-up waits for a worker (this one stopped).
    assert await scalar(store, "SELECT array_agg(stage || ':' || status ORDER BY id) FROM tasks WHERE run_id = :r",
                        r=_uuid(run_id)) == ["slow:completed", "after:pending"]


async def test_a_sync_stage_outliving_the_grace_period_is_not_due_again_while_its_thread_runs(
        make_stages, store_for) -> None:
    store = store_for(make_stages(STAGES), lease_seconds=30)
    module = store.registry.get("life").stage("stuck").module
    assert module is not None
    _run_id, task_id = await start(store, "stuck")
    stop = asyncio.Event()
    worker = Worker(store, WorkerOptions(shutdown_grace=0.2, poll_interval=0.2), name="wk")
    running = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.to_thread(module.started.wait, 10)
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        saved = await task_row(store, task_id)
        assert (saved["status"], saved["attempts"], saved["locked_by"]) == ("pending", 0, None)
        wait = (saved["available_at"] - dt.datetime.now(dt.UTC)).total_seconds()
        assert 25 < wait <= 30, "due again only after a lease: its stage still runs in this process"
        assert await store.claim("other", 10) == []
        reasons = [r["reason"] for r in await store.db.fetch_all(queries.TASK_EVENTS, {"id": task_id})]
        assert reasons[-1] == "released on shutdown, its stage still running"
    finally:
        module.release.set()


async def test_a_failed_attempt_is_logged_as_a_warning_with_its_traceback_and_the_last_one_as_an_error(
        make_stages, store_for, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    store = store_for(make_stages(STAGES))
    flaky_run, flaky_id = await start(store, "flaky")
    bad_run, bad_id = await start(store, "bad-send", {"what": "list"})
    stop = asyncio.Event()
    with caplog.at_level(logging.WARNING, logger="engine.runtime.worker"):
        running = asyncio.create_task(Worker(store, WorkerOptions(poll_interval=0.2)).run(stop))
        try:
            await eventually(lambda: asyncio.sleep(0, [r for r in caplog.records if r.levelno == logging.ERROR]),
                             what="the final failure logged")
            await eventually(lambda: asyncio.sleep(0, [r for r in caplog.records if r.levelno == logging.WARNING]),
                             what="a failed attempt logged")
        finally:
            stop.set()
            await running
    [warning, *_] = [r for r in caplog.records
                     if r.levelno == logging.WARNING and (getattr(r, "workflow", None), getattr(r, "stage", None))
                     == ("life", "flaky")]
    assert (warning.task_id, warning.run_id) == (flaky_id, str(flaky_run))  # type: ignore[attr-defined]
    text = warning.getMessage()
    assert f"stage life/flaky failed (attempt 1 of 4; task {flaky_id}, run {flaky_run}), retrying in 2 s" in text
    assert "Traceback (most recent call last)" in text and "RuntimeError: boom on attempt 1" in text
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage().startswith(
        f"stage life/bad-send failed after 1 attempt(s) (task {bad_id}, run {bad_run}): the task and its run "
        "have failed")
    assert "PayloadError" in error.getMessage() and "Traceback" in error.getMessage()


def _uuid(value: str):
    import uuid

    return uuid.UUID(value)


# -- stage code -------------------------------------------------------------------------------------


async def test_a_send_of_a_non_object_or_oversized_payload_fails_the_stage_naming_it(store) -> None:
    list_run, list_id = await start(store, "bad-send", {"what": "list"})
    big_run, big_id = await start(store, "bad-send", {"what": "big"})
    await run_once(store, max_payload_bytes=200)
    listed, big = await task_row(store, list_id), await task_row(store, big_id)
    assert listed["status"] == big["status"] == "failed"
    assert listed["error"].startswith(
        "PayloadError: life/bad-send: payload must be a JSON object (a dict), got list")
    assert big["error"].startswith("PayloadTooLarge: life/bad-send: payload is ")
    assert "over the 200-byte limit" in big["error"].split("\n")[0]
    assert await scalar(store, "SELECT count(*) FROM tasks") == 2, "nothing was sent"
    for run_id in (list_run, big_run):
        assert await run_status(store, run_id) == "failed"


async def test_sync_stages_run_concurrently_on_the_worker_thread_pool(make_stages, store_for) -> None:
    store = store_for(make_stages(STAGES))
    module = store.registry.get("life").stage("together").module
    assert module is not None
    ids = [(await start(store, "together"))[1] for _ in range(4)]
    stop = asyncio.Event()
    running = asyncio.create_task(Worker(store, WorkerOptions(concurrency=4, poll_interval=0.2)).run(stop))
    try:
        async def all_done() -> bool:
            statuses = [(await task_row(store, i))["status"] for i in ids]
            return all(st in ("completed", "failed") for st in statuses)

        await eventually(all_done, within=40, what="the four tasks to finish")
    finally:
        stop.set()
        await running
    assert [(await task_row(store, i))["status"] for i in ids] == ["completed"] * 4
    assert len(module.threads) == 4 and all(t.startswith("stage") for t in module.threads)


async def test_an_idle_worker_is_woken_by_notify_not_by_its_poll(make_stages, store_for) -> None:
    store = store_for(make_stages(STAGES))
    stop = asyncio.Event()
    worker = Worker(store, WorkerOptions(poll_interval=600), name="idle")
    running = asyncio.create_task(worker.run(stop))
    try:
        first_run, _ = await start(store, "work")  # proves the worker is up and then idle
        await eventually(lambda: _is_completed(store, first_run), what="the first run")
        await asyncio.sleep(0.2)
        began = time.monotonic()
        second_run, _ = await start(store, "work")
        await eventually(lambda: _is_completed(store, second_run), within=20, what="the second run")
        assert time.monotonic() - began < 20, "the worker waited for its 600 s poll"
    finally:
        stop.set()
        await running
    assert worker.completed == 2


async def _is_completed(store: Store, run_id: str) -> bool:
    return await run_status(store, run_id) == "completed"


async def test_a_task_of_a_stage_this_worker_does_not_know_fails_instead_of_hanging(
        make_stages, store_for) -> None:
    # Deployed code no longer has the stage a queued task is for (renamed or removed): the task
    # must fail visibly with retries, not stay locked by a worker that keeps renewing its lease.
    old = store_for(make_stages(STAGES))
    run_id, task_id = await start(old, "work")
    renamed = {**STAGES, "life/labour.py": STAGES["life/work.py"],
               "life/workflow.py": STAGES["life/workflow.py"].replace('script("work")', 'script("labour")')}
    new = store_for(make_stages(renamed))
    stop = asyncio.Event()
    worker = Worker(new, WorkerOptions(poll_interval=0.2), name="new")
    running = asyncio.create_task(worker.run(stop))
    try:
        async def retried() -> bool:
            saved = await task_row(new, task_id)
            return saved["status"] == "pending" and saved["error"] is not None

        await eventually(retried, within=20, what="the task back to pending with an error")
    finally:
        stop.set()
        await asyncio.wait_for(running, 20)
    saved = await task_row(new, task_id)
    assert (saved["status"], saved["attempts"], saved["locked_by"]) == ("pending", 1, None)
    assert saved["error"].startswith('UnknownStage: workflow "life" has no stage "work"')
    assert worker.busy == 0
    assert await run_status(new, run_id) == "running"
