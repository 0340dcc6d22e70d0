"""Routing and runs, rule by rule, on a real Postgres.

A send goes to every outgoing transition whose ``on`` matches its type (``on=None`` takes every
type, ``on`` may be a list); a send no transition takes is recorded on the run as unrouted; a
``join="all"`` stage runs once, with the merged payloads, after every incoming transition
delivered; completion, sends and run-context changes commit in one transaction; a run is
``running`` while a script task is open, ``waiting`` while only people are, then ``completed``.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from support import FakeClock, drain, events, scalar, task_row

from engine.errors import DatabaseError
from engine.runtime.runner import run_script
from engine.store.tasks import Store

STAGES = {
    "route/workflow.py": """
        from engine import Workflow
        workflow = Workflow("route")
        start = workflow.script("start")
        only_a = workflow.script("only-a")
        a_or_b = workflow.script("a-or-b")
        workflow.transition(start, only_a, on="a")
        workflow.transition(start, a_or_b, on=["a", "b"])

        catch = workflow.script("catch")
        anything = workflow.script("anything")
        workflow.transition(catch, anything)

        split = workflow.script("split")
        left = workflow.script("left")
        right = workflow.script("right")
        merge = workflow.script("merge", join="all")
        workflow.transition(split, left, on="go")
        workflow.transition(split, right, on="go")
        workflow.transition(left, merge)
        workflow.transition(right, merge)

        ask = workflow.script("ask")
        approve = workflow.form("approve", assignee="boss@example.com")
        workflow.transition(ask, approve)
        workflow.transition(ask, only_a, on="a")
    """,
    # start/catch/ask: send every [type, payload] of task["sends"]; write task["set"] into ctx.run.
    "route/start.py": """
        def run(task, ctx):
            for key, value in task.get("set", {}).items():
                ctx.run[key] = value
            for type_, payload in task.get("sends", []):
                ctx.send(type_, payload)
            if task.get("raise"):
                raise ValueError("after sending")
    """,
    "route/catch.py": "from .start import run  # noqa: F401\n",
    "route/ask.py": "from .start import run  # noqa: F401\n",
    "route/only_a.py": """
        def run(task, ctx):
            ctx.run.setdefault("seen", [])
            ctx.run["only-a"] = task.payload
    """,
    "route/a_or_b.py": """
        def run(task, ctx):
            ctx.run["a-or-b:" + task.type] = task.payload
    """,
    "route/anything.py": """
        def run(task, ctx):
            ctx.run["anything:" + task.type] = task.payload
    """,
    "route/split.py": """
        def run(task, ctx):
            ctx.send("go", {"n": task["n"]})
    """,
    "route/left.py": """
        def run(task, ctx):
            ctx.send("left-done", {"left": task["n"], "shared": "left"})
    """,
    "route/right.py": """
        def run(task, ctx):
            ctx.send("right-done", {"right": task["n"] * 10, "shared": "right"})
    """,
    "route/merge.py": """
        def run(task, ctx):
            ctx.run["merged"] = {"type": task.type, "payload": task.payload}
            ctx.run["merge_runs"] = ctx.run.get("merge_runs", 0) + 1
    """,
    "route/approve.py": """
        def form(task):
            return None

        def run(task, answers, ctx):
            pass
    """,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(make_stages, store_for, clock) -> Store:
    return store_for(make_stages(STAGES), clock=clock)


async def start(store: Store, stage: str, payload: dict[str, Any] | None = None) -> tuple[str, int]:
    return await store.start_run(store.registry.get("route").stage(stage), payload or {})


async def stages_of(store: Store, run_id: str) -> list[tuple[str, str, str]]:
    """(stage, type, status) of every task of a run, in creation order."""
    report = await store.report(run_id)
    assert report is not None
    return [(s["stage"], s["type"], s["status"]) for s in report["steps"]]


async def run_of(store: Store, run_id: str) -> dict[str, Any]:
    run = await store.get_run(run_id)
    assert run is not None
    return dict(run)


# -- routing by type --------------------------------------------------------------------------------


async def test_a_send_goes_only_to_transitions_whose_on_matches_its_type(store) -> None:
    run_id, _ = await start(store, "start", {"sends": [["b", {"x": 1}]]})
    await drain(store)
    assert await stages_of(store, run_id) == [
        ("start", "start", "completed"),
        ("a-or-b", "b", "completed"),
    ]
    assert (await run_of(store, run_id))["context"] == {"a-or-b:b": {"x": 1}}


async def test_a_send_fans_out_to_every_matching_transition(store) -> None:
    run_id, start_id = await start(store, "start", {"sends": [["a", {"x": 2}]]})
    await drain(store)
    steps = await stages_of(store, run_id)
    assert sorted(steps[1:]) == [("a-or-b", "a", "completed"), ("only-a", "a", "completed")]
    report = await store.report(run_id)
    assert report is not None
    # Both copies carry the payload and name the task that sent them.
    assert [s["payload"] for s in report["steps"][1:]] == [{"x": 2}, {"x": 2}]
    sources = await scalar(store, "SELECT array_agg(DISTINCT source_task_id) FROM tasks WHERE run_id = :r "
                           "AND stage <> 'start'", r=uuid.UUID(run_id))
    assert sources == [start_id]


async def test_an_on_list_takes_each_of_its_types(store) -> None:
    run_id, _ = await start(store, "start", {"sends": [["a", {"n": 1}], ["b", {"n": 2}], ["c", {"n": 3}]]})
    await drain(store)
    context = (await run_of(store, run_id))["context"]
    assert context["a-or-b:a"] == {"n": 1}
    assert context["a-or-b:b"] == {"n": 2}
    assert "a-or-b:c" not in context
    assert context["only-a"] == {"n": 1}


async def test_a_transition_without_on_takes_every_type(store) -> None:
    run_id, _ = await start(store, "catch", {"sends": [["alpha", {}], ["beta", {"b": 1}]]})
    await drain(store)
    assert (await run_of(store, run_id))["context"] == {"anything:alpha": {}, "anything:beta": {"b": 1}}
    assert (await run_of(store, run_id))["unrouted"] == []


async def test_a_send_no_transition_takes_is_recorded_on_the_run_not_dropped(store) -> None:
    run_id, start_id = await start(store, "start", {"sends": [["nobody-wants-this", {"k": 1, "j": 2}], ["b", {}]]})
    await drain(store)
    run = await run_of(store, run_id)
    assert run["status"] == "completed"
    [unrouted] = run["unrouted"]
    assert unrouted["stage"] == "start"
    assert unrouted["type"] == "nobody-wants-this"
    assert unrouted["task_id"] == start_id
    assert unrouted["payload_keys"] == ["j", "k"]
    # The routed send still went through, and the report shows the unrouted one.
    assert [s for s, _, _ in await stages_of(store, run_id)] == ["start", "a-or-b"]
    report = await store.report(run_id)
    assert report is not None and report["unrouted"] == [unrouted]


async def test_a_stage_that_raises_records_no_unrouted_sends_and_no_context(store, clock) -> None:
    run_id, _ = await start(store, "start", {"sends": [["a", {}], ["nowhere", {}]], "set": {"k": 1}, "raise": True})
    for _ in range(3):
        await drain(store)
        clock.advance(600)
    run = await run_of(store, run_id)
    assert run["status"] == "failed"
    assert run["unrouted"] == []
    assert run["context"] == {}
    assert await stages_of(store, run_id) == [("start", "start", "failed")]


# -- completion is atomic ---------------------------------------------------------------------------


async def test_completion_sends_and_context_commit_in_one_transaction(store, db) -> None:
    run_id, task_id = await start(store, "start", {"sends": [["a", {"x": 1}]], "set": {"k": "v"}})
    [row] = await store.claim("w1", 1)
    finished = await run_script(store.stage_of(row), row, max_payload_bytes=10_000)

    # Make the last write of the commit (the run context) fail inside Postgres.
    async with db.transaction() as tx:
        for sql in (
            "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused by test'; END $$",
            "CREATE TRIGGER refuse BEFORE UPDATE OF context ON runs FOR EACH ROW EXECUTE FUNCTION test_refuse()",
        ):
            await tx.execute(_text(sql))
    with pytest.raises(DatabaseError, match="refused by test"):
        await store.commit("w1", [finished])

    saved = await task_row(store, task_id)
    assert (saved["status"], saved["locked_by"]) == ("locked", "w1"), "the completion was kept"
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE run_id = :r", r=uuid.UUID(run_id)) == 1
    assert (await run_of(store, run_id))["context"] == {}
    assert [to for _, to, _ in await events(store, task_id)] == ["pending", "locked"]

    async with db.transaction() as tx:
        await tx.execute(_text("DROP TRIGGER refuse ON runs"))
    result = await store.commit("w1", [finished])
    assert result.completed == [task_id]
    assert [c["stage"] for c in result.created] == ["only-a", "a-or-b"]
    assert (await run_of(store, run_id))["context"] == {"k": "v"}
    assert (await task_row(store, task_id))["status"] == "completed"


async def test_context_changes_of_several_stages_merge_into_the_run(store) -> None:
    run_id, _ = await start(store, "start", {"sends": [["a", {"n": 1}]], "set": {"first": 1, "shared": "start"}})
    await drain(store)
    context = (await run_of(store, run_id))["context"]
    assert context["first"] == 1 and context["shared"] == "start"
    assert context["only-a"] == {"n": 1} and context["seen"] == []
    assert context["a-or-b:a"] == {"n": 1}


# -- join="all" ---------------------------------------------------------------------------------------


async def test_a_join_waits_for_every_incoming_transition_then_runs_once_with_merged_payloads(store) -> None:
    run_id, _ = await start(store, "split", {"n": 4})
    rows = await store.claim("w1", 10)  # split
    await store.commit("w1", [await run_script(store.stage_of(r), r, max_payload_bytes=10_000) for r in rows])
    [left, right] = sorted(await store.claim("w1", 10), key=lambda r: r["stage"])
    assert (left["stage"], right["stage"]) == ("left", "right")

    await store.commit("w1", [await run_script(store.stage_of(left), left, max_payload_bytes=10_000)])
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'merge'") == 0
    report = await store.report(run_id)
    assert report is not None
    assert report["waiting_joins"] == [{"stage": "merge", "source_stage": "left", "type": "left-done"}]
    assert report["status"] == "running"

    await store.commit("w1", [await run_script(store.stage_of(right), right, max_payload_bytes=10_000)])
    await drain(store)
    run = await run_of(store, run_id)
    assert run["status"] == "completed"
    # Merged in the order the transitions were declared: right's "shared" wins.
    assert run["context"]["merged"] == {
        "type": "joined", "payload": {"left": 4, "right": 40, "shared": "right"},
    }
    assert run["context"]["merge_runs"] == 1
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'merge'") == 1
    assert await scalar(store, "SELECT count(*) FROM join_arrivals") == 0


async def test_joins_of_two_runs_do_not_mix(store) -> None:
    first, _ = await start(store, "split", {"n": 1})
    second, _ = await start(store, "split", {"n": 2})
    await drain(store)
    for run_id, n in ((first, 1), (second, 2)):
        run = await run_of(store, run_id)
        assert run["status"] == "completed"
        assert run["context"]["merged"]["payload"] == {"left": n, "right": n * 10, "shared": "right"}
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'merge'") == 2


# -- run status -------------------------------------------------------------------------------------


async def test_a_run_is_running_then_waiting_on_a_person_then_completed(store) -> None:
    run_id, _ = await start(store, "ask", {"sends": [["a", {}]]})
    assert (await run_of(store, run_id))["status"] == "running"
    rows = await store.claim("w1", 10)
    assert (await run_of(store, run_id))["status"] == "running", "a locked script keeps it running"
    await store.commit("w1", [await run_script(store.stage_of(r), r, max_payload_bytes=10_000) for r in rows])
    # A form task and a script task are open: still running.
    assert (await run_of(store, run_id))["status"] == "running"
    await drain(store)
    run = await run_of(store, run_id)
    assert run["status"] == "waiting", "only a person's task is open"
    assert run["finished_at"] is None
    form_id = await scalar(store, "SELECT id FROM tasks WHERE stage = 'approve'")
    form = await task_row(store, form_id)
    assert form["status"] == "pending"
    assert await store.claim("w1", 10) == [], "workers never claim form tasks"

    # The person submits: the form task completes (a form completion has no worker lease).
    from engine.context import Outcome
    from engine.routing import Routes
    from engine.store.tasks import Finished

    await store.commit(None, [Finished(form, Outcome(), Routes())], actor="person:boss", from_status="pending")
    run = await run_of(store, run_id)
    assert run["status"] == "completed"
    assert run["finished_at"] is not None


async def test_a_completion_writes_its_effects_and_closes_its_form_session_only_when_it_wins(store, clock) -> None:
    from engine.context import Effect, Outcome
    from engine.people import sessions
    from engine.routing import Routes, new_task
    from engine.store.tasks import Finished

    run_id, _ = await start(store, "ask", {"sends": [["b", {}]]})
    await drain(store)
    form_id = await scalar(store, "SELECT id FROM tasks WHERE stage = 'approve'")
    assert await scalar(store, f"SELECT count(*) FROM outbox WHERE kind = 'form.assigned' AND task_id = {form_id}") == 1
    form = await task_row(store, form_id)
    mine, theirs = [await sessions.open_session(store.db, user_id=user, workflow="route", stage="approve",
                                              task_id=form_id, now=clock.now) for user in ("U1", "U2")]

    def answered(n: int, session: str) -> Finished:
        onward = new_task(store.registry.get("route").stage("anything"), "noted", {"n": n})
        return Finished(form, Outcome(effects=[Effect("note.sent", {"n": n})]), Routes(tasks=[onward]),
                        session=session)

    assert (await run_of(store, run_id))["status"] == "waiting"
    won = await store.commit(None, [answered(1, mine)], actor="U1", from_status="pending")
    assert (await run_of(store, run_id))["status"] == "running", "a script task to run again"
    lost = await store.commit(None, [answered(2, theirs)], actor="U2", from_status="pending")
    assert (won.completed, lost.lost) == ([form_id], [form_id])
    assert await stages_of(store, run_id) == [("ask", "start", "completed"), ("approve", "b", "completed"),
                                              ("anything", "noted", "pending")]
    notes = await scalar(store, "SELECT jsonb_agg(jsonb_build_array(payload, task_id, run_id::text)) "
                                "FROM outbox WHERE kind = 'note.sent'")
    assert notes == [[{"n": 1}, form_id, run_id]], "the loser sent nothing"
    sessions = await scalar(store, "SELECT jsonb_agg(id::text) FROM form_sessions")
    assert sessions == [theirs], "the winner's session is closed; the loser's stays (it is told who won)"


async def test_a_run_with_nothing_left_to_do_completes_with_its_finish_time(store, clock) -> None:
    run_id, _ = await start(store, "start")
    clock.advance(3)
    await drain(store)
    run = await run_of(store, run_id)
    assert (run["status"], run["finished_at"]) == ("completed", clock.now)


def _text(sql: str) -> Any:
    from sqlalchemy import text

    return text(sql)


async def test_join_branches_finishing_on_different_workers_at_once_fire_the_join_once(store_for, make_stages) -> None:
    import asyncio

    from support import eventually

    from engine.runtime.worker import Worker, WorkerOptions

    store = store_for(make_stages(STAGES))
    runs = [(await start(store, "split", {"n": n}))[0] for n in range(40)]
    stop = asyncio.Event()
    workers = [Worker(store, WorkerOptions(concurrency=4, claim_batch=2, poll_interval=0.2), name=f"w{i}")
               for i in range(4)]
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        async def all_completed() -> bool:
            return await scalar(store, "SELECT count(*) FROM runs WHERE status = 'completed'") == len(runs)

        await eventually(all_completed, within=30, what="every run to complete")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert await scalar(store, "SELECT count(*) FROM tasks WHERE stage = 'merge'") == len(runs)
    assert await scalar(store, "SELECT count(DISTINCT run_id) FROM tasks WHERE stage = 'merge'") == len(runs)
    assert await scalar(store, "SELECT count(*) FROM join_arrivals") == 0
    assert sum(1 for w in workers if w.completed) > 1, "one worker did everything"
    for n, run_id in enumerate(runs):
        context = (await run_of(store, run_id))["context"]
        assert context["merged"]["payload"] == {"left": n, "right": n * 10, "shared": "right"}
        assert context["merge_runs"] == 1
