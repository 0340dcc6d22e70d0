"""What the fast Slack ack path must still guarantee under concurrency: validation errors, the
next page and "already completed by X" travel in a submission's ack; exactly one completion per
task under races; nothing is acked as done before it is committed; and clicks' after-ack work
gives way to submissions in flight without being starved."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support import eventually, scalar, task_row

from bot import modals
from bot.acks import FollowUps, Priority, deferring
from bot.submissions import Completions
from engine.errors import DatabaseError
from engine.people import actions as people
from engine.people import sessions
from engine.runtime.worker import Worker, WorkerOptions
from engine.store.groupcommit import GroupCommit, GroupRead
from engine.store.tasks import Finished, Store
from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

STAGES = {
    "desk/workflow.py": """
        from engine import Workflow
        workflow = Workflow("desk", title="Desk")
        note = workflow.form("note", assignee=["U0ANN", "U0BOB"])
        review = workflow.form("review", assignee=["U0ANN", "U0BOB"])
        done = workflow.script("done")
        workflow.transition(note, done, on="noted")
        workflow.transition(review, done, on="approved")
    """,
    "desk/note.py": """
        from engine.forms import Form, Page, Text
        form = Form("Note", pages=[Page("first", [Text("title", "Title")]),
                                   Page("second", [Text("note", "Note", min_length=3)])])
        def run(task, answers, ctx):
            ctx.run["seen"] = ctx.run.get("seen", 0) + 1
            ctx.send("noted", {**task.payload, **answers})
    """,
    "desk/review.py": """
        from engine.forms import Approval
        form = Approval("Review", {"Item": "{item}"})
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "desk/done.py": """
        def run(task, ctx):
            pass
    """,
}


def title(value: str) -> dict[str, dict[str, Any]]:
    return {"title": {"type": "plain_text_input", "value": value}}


def note(value: str | None) -> dict[str, dict[str, Any]]:
    return {"note": {"type": "plain_text_input", "value": value}}


async def session_view(h: SlackHarness, task_id: int, user: str, page: str = "first") -> dict[str, Any]:
    """A modal as it would be open for ``user`` (its form session in Postgres)."""
    stage = h.app.registry.get("desk").stage("note")
    form = stage.module.form  # type: ignore[union-attr]
    sid = await sessions.open_session(h.app.db, user_id=user, workflow="desk", stage="note", task_id=task_id,
                                    page=page, now=h.app.store.clock())
    if page == "second":  # the first page was answered already
        await sessions.save_session(h.app.db, sid, answers={"title": "T"}, page=page)
    return {**modals.form_view(form, {}, session_id=sid, page=form.page(page)), "id": f"V{task_id}{user}"}


async def test_racing_last_pages_complete_each_task_once_and_only_a_committed_one_is_acked_done(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    stage = h.app.registry.get("desk").stage("note")
    tasks = [(await h.app.store.start_run(stage, {"n": i}))[1] for i in range(5)]
    views = {(t, u): await session_view(h, t, u, page="second") for t in tasks for u in ("U0ANN", "U0BOB")}
    closed_while_pending: list[int] = []

    async def submit(task_id: int, user: str) -> tuple[int, str, Any]:
        resp = await h.submit(user, views[task_id, user], note(f"from {user}"))
        assert resp.status == 200
        if not resp.text.strip():  # acked as done: the completion must be committed already
            if (await task_row(h.app.store, task_id))["status"] != "completed":
                closed_while_pending.append(task_id)
        return task_id, user, resp.json

    answers = await asyncio.gather(*(submit(t, u) for t in tasks for u in ("U0ANN", "U0BOB")))
    assert closed_while_pending == []
    for task_id in tasks:
        row = await task_row(h.app.store, task_id)
        acks = {user: body for t, user, body in answers if t == task_id}
        winners = [u for u, body in acks.items() if body is None]
        assert winners == [row["completed_by"]], acks
        [loser] = [u for u in acks if u not in winners]
        assert acks[loser]["response_action"] == "update"
        assert f"already completed by <@{row['completed_by']}>" in str(acks[loser]["view"]["blocks"])
        assert await scalar(h.app.store, "SELECT count(*) FROM task_events WHERE task_id = :t "
                                         "AND to_status = 'completed'", t=task_id) == 1
    assert await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE stage = 'done'") == len(tasks)
    # The winners' form sessions were closed with their completions; the losers' stay (to expire).
    left = await scalar(h.app.store, "SELECT array_agg(t.completed_by = s.user_id) FROM form_sessions s "
                                     "JOIN tasks t ON t.id = s.task_id")
    assert left == [False] * len(tasks)
    # The stage's code saw the run's context read with the task (one run per task: once each).
    assert await scalar(h.app.store, "SELECT count(*) FROM runs WHERE context->>'seen' = '1'") == len(tasks)


async def test_errors_and_next_pages_ride_on_the_acks_of_a_burst_mixed_with_clicks(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    wf = h.app.registry.get("desk")
    notes = [(await h.app.store.start_run(wf.stage("note"), {"n": i}))[1] for i in range(4)]
    reviews = [(await h.app.store.start_run(wf.stage("review"), {"item": f"i{i}"}))[1] for i in range(6)]
    first = {t: await session_view(h, t, "U0ANN") for t in notes}
    last = {t: await session_view(h, t, "U0BOB", page="second") for t in notes}
    # Per note task: a first page (next page in the ack), a too-short last page (error in the
    # ack); per review: a double click on Approve by both assignees.
    work = [h.submit("U0ANN", first[t], title(f"t{t}")) for t in notes]
    work += [h.submit("U0BOB", last[t], note("no")) for t in notes]
    work += [h.click(u, "flowbot_approve", str(t), channel="D" + u) for t in reviews for u in ("U0ANN", "U0BOB")]
    resps = await asyncio.gather(*work)
    assert all(r.status == 200 for r in resps)
    for r in resps[:len(notes)]:
        assert r.json["response_action"] == "update"
        assert [b.get("block_id") for b in r.json["view"]["blocks"] if b["type"] == "input"] == ["note"]
    for r in resps[len(notes):2 * len(notes)]:
        assert r.json == {"response_action": "errors", "errors": {"note": r.json["errors"]["note"]}}
    for t in notes:
        assert (await task_row(h.app.store, t))["status"] == "pending"

    async def reviews_done() -> bool:
        return await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE stage = 'review' "
                                         "AND status = 'completed'") == len(reviews)

    await eventually(reviews_done, what="every review completed")
    for t in reviews:
        assert await scalar(h.app.store, "SELECT count(*) FROM task_events WHERE task_id = :t "
                                         "AND to_status = 'completed'", t=t) == 1
    # The losers of each double click are told who won.
    await h.settle()
    told = [c.params["text"] for c in fake_slack.calls("chat.postEphemeral")]
    assert len([t for t in told if "already completed by" in t]) == len(reviews)


async def note_and_start_sessions(h: SlackHarness, *, start_user: str) -> tuple[str, int, str, str]:
    """A run at the "note" form with Ann's session on its task, and ``start_user``'s session of
    the same form as a start form (payload ``{"k": 1}``): (run id, task id, the task's
    session id, the start session id)."""
    stage = h.app.registry.get("desk").stage("note")
    run_id, task_id = await h.app.store.start_run(stage, {"n": 1})
    now = h.app.store.clock()
    sid = await sessions.open_session(h.app.db, user_id="U0ANN", workflow="desk", stage="note", task_id=task_id,
                                    page="first", now=now)
    start = await sessions.open_session(h.app.db, user_id=start_user, workflow="desk", stage="note",
                                      payload={"k": 1}, page="first", now=now)
    return run_id, task_id, sid, start


async def test_submission_context_is_one_read_matching_the_task_row(slack_app: StartSlack,
                                                                    fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    run_id, task_id, sid, start = await note_and_start_sessions(h, start_user="U0ANN")
    now = h.app.store.clock()
    found = await sessions.get_submission(h.app.db, sid, now=now)
    assert found is not None
    session, task, run_context = found
    assert (session["user_id"], session["task_id"], session["page"], session["answers"]) == \
        ("U0ANN", task_id, "first", {})
    assert task == await task_row(h.app.store, task_id)
    run = await h.app.store.get_run(run_id)
    assert run is not None and run_context == run["context"]
    found = await sessions.get_submission(h.app.db, start, now=now)
    assert found is not None and found[1] is None and found[0]["payload"] == {"k": 1}
    assert await sessions.get_submission(h.app.db, "not-a-uuid", now=now) is None
    later = now.replace(year=now.year + 1)
    assert await sessions.get_submission(h.app.db, sid, now=later) is None


async def test_a_burst_of_submissions_reads_its_sessions_together(slack_app: StartSlack,
                                                                   fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    stage = h.app.registry.get("desk").stage("note")
    tasks = [(await h.app.store.start_run(stage, {"n": i}))[1] for i in range(6)]
    views = [await session_view(h, t, "U0ANN") for t in tasks]
    from bot.submissions import submission_reads

    reads = submission_reads(h.ctx)
    resps = await asyncio.gather(*(h.submit("U0ANN", v, title(f"t{i}")) for i, v in enumerate(views)))
    # Each got its own next page (the answers of its own session) ...
    for i, r in enumerate(resps):
        assert r.json["response_action"] == "update"
        assert r.json["view"]["private_metadata"] == views[i]["private_metadata"]
    for t in tasks:
        answers = await scalar(h.app.store, "SELECT answers FROM form_sessions WHERE task_id = :t", t=t)
        assert answers == {"title": f"t{tasks.index(t)}"}
    # ... from fewer reads than submissions.
    assert sum(reads.batch_sizes) == len(tasks) and len(reads.batch_sizes) < len(tasks)


async def test_get_submissions_reads_many_sessions_by_the_ids_asked_for(slack_app: StartSlack,
                                                                       fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    _run, _task, sid, start = await note_and_start_sessions(h, start_user="U0BOB")
    now = h.app.store.clock()
    found = await sessions.get_submissions(h.app.db, [sid, sid.upper(), start, "not-a-uuid",
                                                    "00000000-0000-0000-0000-000000000000"], now=now)
    assert sorted(found) == sorted([sid, sid.upper(), start])
    assert found[sid] == found[sid.upper()] == await sessions.get_submission(h.app.db, sid, now=now)
    assert found[start][1] is None and found[start][0]["payload"] == {"k": 1}
    assert await sessions.get_submissions(h.app.db, [sid], now=now.replace(year=now.year + 1)) == {}
    assert await sessions.get_submissions(h.app.db, ["nope"], now=now) == {}


async def test_group_read_shares_reads_and_a_failed_read_fails_only_its_batch() -> None:
    asked: list[list[str]] = []
    gate = asyncio.Event()

    async def fetch(keys: list[str]) -> dict[str, int]:
        asked.append(keys)
        await gate.wait()
        if "bad" in keys:
            raise RuntimeError("no")
        return {k: len(k) for k in keys if k != "none"}

    reads: GroupRead[str, int] = GroupRead(fetch, max_in_flight=1)
    first = asyncio.create_task(reads.get("a"))
    await asyncio.sleep(0)
    later = [asyncio.create_task(reads.get(k)) for k in ("bb", "ccc", "bb", "none")]
    await asyncio.sleep(0)
    gate.set()
    assert await first == 1
    assert [await t for t in later] == [2, 3, 2, None]
    assert asked == [["a"], ["bb", "ccc", "none"]]  # one read of every key waiting, each once
    failing = [asyncio.create_task(reads.get(k)) for k in ("bad", "x")]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    assert await reads.get("ok") == 2  # the next read is a new batch


async def test_a_caller_that_stops_waiting_leaves_its_batch_and_its_item_alone() -> None:
    committed: list[list[str]] = []
    gate = asyncio.Event()

    async def execute(items: list[str]) -> set[int]:
        await gate.wait()
        committed.append(items)
        return set(range(len(items)))

    group: GroupCommit[str] = GroupCommit(execute, what="items", max_in_flight=1)
    first = asyncio.create_task(group.commit("a"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(group.commit(item)) for item in ("b", "c")]
    await asyncio.sleep(0)
    first.cancel()  # in the batch in flight
    waiting[0].cancel()  # not taken yet
    gate.set()
    assert await waiting[1] is True
    assert committed == [["a"], ["b", "c"]]  # both still committed, with the others
    assert first.cancelled() and waiting[0].cancelled()

    reads: GroupRead[str, int] = GroupRead(lambda keys: _lengths(keys, gate), max_in_flight=1)
    gate.clear()
    gone, kept = asyncio.create_task(reads.get("dd")), asyncio.create_task(reads.get("dd"))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await kept == 2


async def _lengths(keys: list[str], gate: asyncio.Event) -> dict[str, int]:
    await gate.wait()
    return {k: len(k) for k in keys}


async def test_a_settling_group_read_waits_for_keys_to_stop_coming_within_its_limit() -> None:
    asked: list[list[int]] = []

    async def fetch(keys: list[int]) -> dict[int, int]:
        asked.append(keys)
        return {k: -k for k in keys}

    async def arrivals(reads: GroupRead[int, int], n: int, *, step: float = 0.0) -> list[int | None]:
        """``n`` callers, each asking in the event-loop iteration after the one before it."""
        spawned: list[asyncio.Task[int | None]] = []

        async def caller(k: int) -> int | None:
            if k + 1 < n:
                spawned.append(asyncio.create_task(caller(k + 1)))
            busy_until = time.monotonic() + step  # a busy event loop: each iteration takes this long
            while time.monotonic() < busy_until:
                pass
            return await reads.get(k)

        first = await caller(0)
        return [first, *[await t for t in spawned]]

    assert await arrivals(GroupRead(fetch, max_in_flight=1), 5) == [0, -1, -2, -3, -4]
    assert len(asked) > 1  # without settle: a read of the first key, then of the others
    asked.clear()
    settling = GroupRead(fetch, max_in_flight=1, settle=10)
    assert await arrivals(settling, 5) == [0, -1, -2, -3, -4]
    assert asked == [[0, 1, 2, 3, 4]]  # one read, once the keys stopped coming
    asked.clear()

    async def every(n: int, reads: GroupRead[int, int]) -> list[int | None]:
        """Five callers, started ``n`` event-loop iterations apart."""
        loop = asyncio.get_running_loop()
        started: list[asyncio.Task[int | None]] = []
        all_started = asyncio.Event()

        def step(i: int) -> None:
            if i % n == 0:
                started.append(asyncio.create_task(reads.get(i // n)))
            if i < 4 * n:
                loop.call_soon(step, i + 1)
            else:
                all_started.set()

        loop.call_soon(step, 0)
        await all_started.wait()
        return [await t for t in started]

    # An iteration that brings no key (within a burst: one that only accepted connections) does
    # not start the read; two in a row do.
    assert await every(1, settling) == [0, -1, -2, -3, -4]
    assert asked == [[0, 1, 2, 3, 4]]
    asked.clear()
    assert await every(3, settling) == [0, -1, -2, -3, -4]
    assert asked == [[0], [1], [2], [3], [4]]
    asked.clear()
    started = time.monotonic()
    assert await settling.get(7) == -7  # a lone key: two iterations, not the limit
    assert asked == [[7]] and time.monotonic() - started < 1
    asked.clear()
    brief = GroupRead(fetch, max_in_flight=1, settle=0.01)
    assert await arrivals(brief, 20, step=0.002) == [-k for k in range(20)]
    assert len(asked) > 1 and asked[0][0] == 0  # keys kept coming past the limit: read anyway
    await brief.close()


async def test_the_worker_claims_once_pending_acks_are_out(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    _run, task_id = await h.app.store.start_run(h.app.registry.get("desk").stage("done"), {})
    reached: list[bool] = []

    async def seen() -> None:  # a gate before the Slack plugin's own: the worker got there
        reached.append(True)

    async def at_gate() -> bool:
        return bool(reached)

    h.app.background_gates.insert(0, seen)
    h.ctx.priority.max_defer = 60
    stop = asyncio.Event()
    with h.ctx.priority.urgent():  # an ack is pending
        worker = asyncio.create_task(
            Worker(h.app.store, WorkerOptions(poll_interval=0.1, before_claim=h.app.background_gate)).run(stop))
        await eventually(at_gate, what="the worker at its gate")
        assert (await task_row(h.app.store, task_id))["status"] == "pending"  # not claimed meanwhile

    async def done() -> bool:
        return bool((await task_row(h.app.store, task_id))["status"] == "completed")

    await eventually(done, what="the task run once the ack is out")
    stop.set()
    await worker


async def test_outbox_deliveries_wait_for_pending_acks_but_not_forever() -> None:
    priority = Priority(max_defer=60)
    delivered: list[int] = []

    async def handler(row: dict[str, Any]) -> dict[str, Any] | None:
        delivered.append(row["id"])
        return {"ok": True}

    deliver = deferring(priority, handler)
    assert await deliver({"id": 1}) == {"ok": True}  # nothing pending: at once
    with priority.urgent():
        waiting = asyncio.create_task(deliver({"id": 2}))
        for _ in range(5):
            await asyncio.sleep(0)
        assert delivered == [1]  # an ack is pending
    assert await waiting == {"ok": True} and delivered == [1, 2]
    hurried = Priority(max_defer=0.05)
    with hurried.urgent():  # a steady stream of requests cannot hold deliveries back for long
        assert await asyncio.wait_for(deferring(hurried, handler)({"id": 3}), 5) == {"ok": True}
        with hurried.urgent():  # still no pause since: later work does not wait at all
            later = asyncio.create_task(deferring(hurried, handler)({"id": 4}))
            for _ in range(5):
                await asyncio.sleep(0)
            assert later.done() and delivered == [1, 2, 3, 4]


def test_the_pause_after_a_burst_ends_on_uvloop_too() -> None:
    # uvloop answers call_at with a plain Handle (no when()) for a timer due within 0.5 ms: the
    # pause must end all the same, or after-ack work would wait max_defer after every burst.
    uvloop = pytest.importorskip("uvloop")

    async def burst() -> bool:
        priority = Priority(max_defer=60, pause=0.0001)
        with priority.urgent():
            pass
        await asyncio.sleep(0.02)
        return priority.is_quiet()

    assert uvloop.run(burst())


async def test_garbage_collection_waits_while_acks_are_due_but_not_longer_than_max_defer() -> None:
    assert gc.isenabled()
    priority = Priority(max_defer=60)
    with priority.urgent():
        assert not gc.isenabled()
        with priority.urgent():
            assert not gc.isenabled()
        assert not gc.isenabled()  # one ack is still due
    assert not gc.isenabled()  # the last answer is written first: collecting waits a turn
    await asyncio.sleep(0)
    assert gc.isenabled()
    with priority.urgent():
        pass
    with priority.urgent():  # due again before that turn: the busy spell goes on
        await asyncio.sleep(0)
        assert not gc.isenabled()
    with contextlib.suppress(RuntimeError), priority.urgent():
        raise RuntimeError("a request that failed")
    await asyncio.sleep(0)
    assert gc.isenabled()
    hurried = Priority(max_defer=0.05)
    with hurried.urgent():
        assert not gc.isenabled()
        await asyncio.sleep(0.1)
        with hurried.urgent():  # requests kept coming for longer than max_defer: collect again
            assert gc.isenabled()
        assert gc.isenabled()
    gc.disable()  # the program's own choice stays
    try:
        with priority.urgent():
            assert not gc.isenabled()
        await asyncio.sleep(0)
        assert not gc.isenabled()
    finally:
        gc.enable()


async def test_click_work_waits_for_submissions_in_flight_and_runs_a_few_at_a_time() -> None:
    priority = Priority(concurrency=1, max_defer=60, pause=0)
    started: list[str] = []
    release = asyncio.Event()

    async def click(name: str) -> None:
        async with priority.after_ack():
            started.append(name)
            await release.wait()

    with priority.urgent():
        first = asyncio.create_task(click("a"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert started == []  # a submission is in flight
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == ["a"]
    second = asyncio.create_task(click("b"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert started == ["a"]  # one slot
    release.set()
    await asyncio.gather(first, second)
    assert started == ["a", "b"]


def after_ack_work(priority: Priority) -> tuple[Callable[[], Awaitable[None]], asyncio.Event]:
    """A click's after-ack work that only records that it ran."""
    ran = asyncio.Event()

    async def click() -> None:
        async with priority.after_ack():
            ran.set()

    return click, ran


async def test_after_ack_work_waits_for_a_pause_between_requests_not_just_a_gap() -> None:
    priority = Priority(max_defer=60, pause=0.05)
    click, ran = after_ack_work(priority)
    with priority.urgent():
        work = asyncio.create_task(click())
    await asyncio.sleep(0.01)
    with priority.urgent():  # the next request of the burst, inside the pause
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)
    assert not ran.is_set()
    await asyncio.wait_for(work, 5)  # runs once no request came for the pause
    assert ran.is_set()


async def test_a_pause_the_event_loop_was_too_busy_to_notice_is_not_quiet() -> None:
    priority = Priority(max_defer=60, pause=0.01)
    click, ran = after_ack_work(priority)
    with priority.urgent():
        work = asyncio.create_task(click())
    time.sleep(0.05)  # noqa: ASYNC251 - the loop is busy (reading a burst's next requests) past the pause
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not priority.is_quiet() and not ran.is_set()
    await asyncio.wait_for(work, 5)  # a pause the loop had time for
    assert ran.is_set()
    # A loop that stays that busy is not a burst going on: one more pause, not more.
    with priority.urgent():
        pass
    for _ in range(2):
        time.sleep(0.05)  # noqa: ASYNC251
        await asyncio.sleep(0)  # the pause's timer runs (late) after this step
        await asyncio.sleep(0)
    assert priority.is_quiet()


async def test_click_work_is_not_starved_by_a_stream_of_submissions() -> None:
    priority = Priority(concurrency=2, max_defer=0)
    click, ran = after_ack_work(priority)
    with priority.urgent():
        await asyncio.wait_for(click(), 5)
    assert ran.is_set()


async def test_follow_ups_queue_behind_due_acks_in_one_waiter_and_stop_keeps_what_is_not_optional() -> None:
    follow_ups = FollowUps(Priority(max_defer=60, pause=0))
    ran: list[str] = []

    def work(name: str) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            ran.append(name)
        return run

    with follow_ups.priority.urgent():
        for n in range(50):
            follow_ups.start(work(f"click {n}"), "click")
        assert follow_ups.running == 50 and len(follow_ups._tasks) == 1  # queued behind one waiter
        await asyncio.sleep(0.01)
        assert ran == []
    await follow_ups.idle(5)
    assert sorted(ran) == sorted(f"click {n}" for n in range(50)) and follow_ups.running == 0

    ran.clear()
    with follow_ups.priority.urgent():
        follow_ups.start(work("acked click"), "click")
        follow_ups.start(work("home refresh"), "home", optional=True)
        await follow_ups.close(grace=5)  # a stop while an ack is still due
    assert ran == ["acked click"]  # done before the stop; optional work dropped


class Open:
    """Anyone may act (the tasks name their assignees)."""

    async def identity(self, entry: str) -> str:
        return entry

    async def is_member(self, team: str, actor: str) -> bool:
        return False


def answering(store: Store, batcher: Completions) -> Callable[[int, str], Awaitable[people.Result]]:
    """``answer(task_id, user)``: ``user`` submits the note form of a task, committed by ``batcher``."""

    async def answer(task_id: int, user: str) -> people.Result:
        return await people.submit(store, task_id, {"title": "T", "note": f"by {user}"}, user, Open(),
                                   max_payload_bytes=100_000, commit=batcher.committer(user))

    return answer


async def test_completions_commit_many_answers_together_and_one_per_task(slack_app: StartSlack,
                                                                       fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    store = h.app.store
    stage = h.app.registry.get("desk").stage("note")
    tasks = [(await store.start_run(stage, {"n": i}))[1] for i in range(8)]
    batcher = Completions(store, max_in_flight=1)  # the answers behind the first one gather
    answer = answering(store, batcher)

    results = await asyncio.gather(*(answer(t, u) for t in tasks for u in ("U0ANN", "U0BOB")))
    assert max(batcher.batch_sizes) > 1  # answers waiting together committed together
    for i, task_id in enumerate(tasks):
        row = await task_row(store, task_id)
        mine = results[2 * i:2 * i + 2]
        won = [r for r in mine if r.ok]
        assert len(won) == 1 and won[0].by == row["completed_by"] and row["status"] == "completed"
        [lost] = [r for r in mine if not r.ok]
        assert lost.status == people.ALREADY and lost.by == row["completed_by"]
        assert await scalar(store, "SELECT count(*) FROM task_events WHERE task_id = :t "
                                   "AND to_status = 'completed'", t=task_id) == 1
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'done'") == len(tasks)


async def test_answers_of_different_people_share_one_transaction_each_under_its_own_name(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    store = h.app.store
    stage = h.app.registry.get("desk").stage("note")
    people_ = ["U0ANN", "U0BOB"] * 4  # the stage's two assignees, each answering other tasks
    tasks = [(await store.start_run(stage, {"n": i}))[1] for i in range(len(people_))]
    batcher = Completions(store, max_in_flight=1)  # the answers behind the first one gather
    answer = answering(store, batcher)

    results = await asyncio.gather(*(answer(t, u) for t, u in zip(tasks, people_, strict=True)))
    assert all(r.ok for r in results)
    assert len(batcher.batch_sizes) < len(tasks)  # several people's answers in one transaction
    for task_id, user in zip(tasks, people_, strict=True):
        assert (await task_row(store, task_id))["completed_by"] == user
        assert await scalar(store, "SELECT actor FROM task_events WHERE task_id = :t AND to_status = 'completed'",
                            t=task_id) == user


async def test_a_bad_answer_fails_alone_and_the_others_of_its_batch_complete(slack_app: StartSlack,
                                                                           fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, worker=False, outbox=False)
    store = h.app.store
    stage = h.app.registry.get("desk").stage("note")
    tasks = [(await store.start_run(stage, {"n": i}))[1] for i in range(4)]
    prepared: list[Finished] = []

    async def keep(finished: Finished) -> bool:  # run the stage, keep the completion for later
        prepared.append(finished)
        return True

    for i, task_id in enumerate(tasks):
        # Postgres refuses a NUL character in JSON: the bad answer's completion cannot commit.
        answers = {"title": "T", "note": "nul \x00 here" if i == 2 else "fine"}
        await people.submit(store, task_id, answers, "U0ANN", Open(), max_payload_bytes=100_000, commit=keep)
    batcher = Completions(store, max_in_flight=1)
    results = await asyncio.gather(*(batcher.commit(f, "U0ANN") for f in prepared), return_exceptions=True)
    assert list(batcher.batch_sizes) == [4]  # one transaction tried all four, then each alone
    assert isinstance(results[2], DatabaseError)
    assert [r for i, r in enumerate(results) if i != 2] == [True, True, True]
    statuses = [(await task_row(store, t))["status"] for t in tasks]
    assert statuses == ["completed", "completed", "pending", "completed"]
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'done'") == 3
