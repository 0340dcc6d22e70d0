"""Approvals that need several people, on a real Postgres: N distinct approvals complete the task
with every decision passed to ``run``; a decline declines it (or, with ``decline="all"``, only once
N approvals are impossible); the run's starter is refused when self-approval is off; and people
deciding at the same moment are each counted once, with exactly one completion."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from support import FakeClock, drain, scalar

from engine.people import actions as people
from engine.store import waits
from engine.store.tasks import Store

STAGES = {
    "buy/workflow.py": """
        from engine import Workflow
        workflow = Workflow("buy")
        ask = workflow.script("ask")
        two = workflow.form("two", assignee=["a@x.io", "b@x.io", "c@x.io"], module="review", timeout="1d",
                            on_timeout="declined")
        three = workflow.form("three", assignee=["a@x.io", "b@x.io", "c@x.io"], module="review3")
        every = workflow.form("every", assignee=["a@x.io", "b@x.io", "c@x.io"], module="review_all")
        own = workflow.form("own", assignee=["s@x.io", "b@x.io"], module="review_own")
        done = workflow.script("done")
        for form in (two, three, every, own):
            workflow.transition(ask, form, on=form.name)
            workflow.transition(form, done)
    """,
    "buy/ask.py": "def run(task, ctx):\n    ctx.send(task['to'], task.payload)\n",
    "buy/review.py": """
        from engine.forms import Approval
        form = Approval("Buy", approvers=2)
        def run(task, answers, ctx):
            ctx.run["answers"] = answers
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/review3.py": """
        from engine.forms import Approval
        form = Approval("Buy", approvers=3)
        def run(task, answers, ctx):
            ctx.run["answers"] = answers
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/review_all.py": """
        from engine.forms import Approval
        form = Approval("Buy", approvers=2, decline="all")
        def run(task, answers, ctx):
            ctx.run["answers"] = answers
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/review_own.py": """
        from engine.forms import Approval
        form = Approval("Buy", allow_self_approval=False)
        def run(task, answers, ctx):
            ctx.run["answers"] = answers
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/done.py": "def run(task, ctx):\n    ctx.run['outcome'] = task.type\n",
}


class Everyone:
    """A directory where entries are identities and nobody is in a team."""

    async def identity(self, entry: str) -> str:
        return entry

    async def is_member(self, team: str, actor: str) -> bool:
        return False


@pytest.fixture
def store(make_stages, store_for) -> Store:
    return store_for(make_stages(STAGES), clock=FakeClock())


async def start(store: Store, to: str, **context: object) -> tuple[str, int]:
    run_id, _ = await store.start_run(store.registry.get("buy").stage("ask"), {"to": to, "amount": 10},
                                      context=dict(context), trigger={"kind": "manual"})
    await drain(store)
    task_id = await scalar(store, "SELECT id FROM tasks WHERE run_id = :r AND kind = 'form'", r=uuid.UUID(run_id))
    return run_id, task_id


async def decide(store: Store, task_id: int, who: str, decision: str = "approved",
                 comment: str | None = None) -> people.Result:
    return await people.submit(store, task_id, {"decision": decision, "comment": comment}, who, Everyone(),
                               max_payload_bytes=1 << 16)


async def context(store: Store, run_id: str) -> dict:
    await drain(store)
    return (await store.get_run(run_id))["context"]


async def test_two_distinct_approvals_complete_it_with_every_decision_passed_to_run(store) -> None:
    run_id, task_id = await start(store, "two")
    first = await decide(store, task_id, "a@x.io", comment="fine")
    assert first.status == people.RECORDED and first.progress["approvals"] == 1 and first.progress["needed"] == 2
    assert await scalar(store, "SELECT status FROM tasks WHERE id = :t", t=task_id) == "pending"
    assert "answers" not in await context(store, run_id)
    second = await decide(store, task_id, "b@x.io")
    assert second.status == people.COMPLETED
    answers = (await context(store, run_id))["answers"]
    assert answers["decision"] == "approved"
    assert [(d["by"], d["decision"], d["comment"]) for d in answers["decisions"]] == [
        ("a@x.io", "approved", "fine"), ("b@x.io", "approved", None)]
    assert all(d["at"] for d in answers["decisions"])
    audit = await store.db.fetch_all(text("SELECT actor, action, detail FROM audit WHERE task_id = :t ORDER BY id"),
                                     {"t": task_id})
    assert [(a["actor"], a["action"], a["detail"]["approvals"]) for a in audit] == [
        ("a@x.io", "approve", 1), ("b@x.io", "approve", 2)]
    assert await scalar(store, "SELECT count(*) FROM outbox WHERE task_id = :t AND kind = 'form.decided'",
                        t=task_id) == 1
    late = await decide(store, task_id, "c@x.io")
    assert (late.status, late.by) == (people.ALREADY, "b@x.io")


async def test_any_decline_declines_it(store) -> None:
    run_id, task_id = await start(store, "two")
    assert (await decide(store, task_id, "a@x.io")).status == people.RECORDED
    assert (await decide(store, task_id, "b@x.io", "declined", "too dear")).status == people.COMPLETED
    ctx = await context(store, run_id)
    assert ctx["outcome"] == "declined" and ctx["answers"]["comment"] == "too dear"
    assert [d["decision"] for d in ctx["answers"]["decisions"]] == ["approved", "declined"]


async def test_with_decline_all_it_is_declined_only_once_enough_approvals_are_impossible(store) -> None:
    run_id, task_id = await start(store, "every")
    assert (await decide(store, task_id, "a@x.io", "declined", "no")).status == people.RECORDED
    assert (await decide(store, task_id, "b@x.io", "declined", "no")).status == people.COMPLETED
    assert (await context(store, run_id))["outcome"] == "declined"
    run_id, task_id = await start(store, "every")
    await decide(store, task_id, "a@x.io", "declined", "no")
    await decide(store, task_id, "b@x.io")
    assert (await decide(store, task_id, "c@x.io")).status == people.COMPLETED
    assert (await context(store, run_id))["outcome"] == "approved"


async def test_the_same_person_deciding_twice_is_counted_once(store) -> None:
    _run_id, task_id = await start(store, "two")
    assert (await decide(store, task_id, "a@x.io")).ok
    again = await decide(store, task_id, "a@x.io")
    assert (again.status, again.message) == (people.ALREADY, people.DECIDED)
    assert await scalar(store, "SELECT count(*) FROM task_decisions WHERE task_id = :t", t=task_id) == 1


async def test_the_runs_starter_is_refused_when_self_approval_is_off(store) -> None:
    _run_id, task_id = await start(store, "own", started_by="s@x.io")
    refused = await decide(store, task_id, "s@x.io")
    assert (refused.status, refused.message) == (people.FORBIDDEN, people.SELF_APPROVAL)
    assert await scalar(store, "SELECT count(*) FROM audit WHERE task_id = :t", t=task_id) == 0
    assert (await decide(store, task_id, "b@x.io")).status == people.COMPLETED


async def test_the_runs_trigger_user_is_refused_too(store) -> None:
    run_id, _ = await store.start_run(store.registry.get("buy").stage("ask"), {"to": "own"},
                                      trigger={"kind": "api", "user": "s@x.io"})
    await drain(store)
    task_id = await scalar(store, "SELECT id FROM tasks WHERE run_id = :r AND kind = 'form'", r=uuid.UUID(run_id))
    assert (await decide(store, task_id, "s@x.io")).message == people.SELF_APPROVAL


async def test_a_timeout_passes_the_decisions_made_so_far(store) -> None:
    run_id, task_id = await start(store, "two")
    await decide(store, task_id, "a@x.io")
    store.clock.advance(86400)
    assert await waits.expire(store) == 1
    await drain(store)
    payload = await scalar(store, "SELECT payload FROM tasks WHERE run_id = :r AND stage = 'done'", r=uuid.UUID(run_id))
    assert payload["timed_out"] is True and [d["by"] for d in payload["decisions"]] == ["a@x.io"]


async def test_people_deciding_at_the_same_moment_are_each_counted_with_one_completion(store) -> None:
    for i in range(15):
        run_id, task_id = await start(store, "three")
        results = await asyncio.gather(*(decide(store, task_id, who) for who in ("a@x.io", "b@x.io", "c@x.io")))
        assert sorted(r.status for r in results) == [people.COMPLETED, people.RECORDED, people.RECORDED], i
        assert await scalar(store, "SELECT count(*) FROM task_decisions WHERE task_id = :t", t=task_id) == 3
        ctx = await context(store, run_id)
        assert len(ctx["answers"]["decisions"]) == 3 and ctx["outcome"] == "approved"
        assert await scalar(store, "SELECT count(*) FROM task_events WHERE task_id = :t AND to_status = 'completed'",
                            t=task_id) == 1


async def test_more_deciders_than_needed_at_once_complete_it_once(store) -> None:
    for i in range(15):
        run_id, task_id = await start(store, "two")
        results = await asyncio.gather(*(decide(store, task_id, who) for who in ("a@x.io", "b@x.io", "c@x.io")),
                                       decide(store, task_id, "a@x.io"))
        statuses = sorted(r.status for r in results)
        assert statuses.count(people.COMPLETED) == 1, (i, statuses)
        assert statuses.count(people.RECORDED) == 1, (i, statuses)
        ctx = await context(store, run_id)
        assert len(ctx["answers"]["decisions"]) == 2
        assert await scalar(store, "SELECT count(*) FROM task_decisions WHERE task_id = :t", t=task_id) == 2


async def test_the_deciding_approval_and_the_timeout_in_the_same_instant_have_one_winner(store) -> None:
    import random

    outcomes = []
    for i in range(20):
        run_id, task_id = await start(store, "two")
        await decide(store, task_id, "a@x.io")
        store.clock.advance(86400)

        async def later(work, delay: float):
            await asyncio.sleep(delay)
            return await work

        jitter = [random.uniform(0, 0.01) * (i % 2), random.uniform(0, 0.01) * (1 - i % 2)]
        result, expired = await asyncio.gather(later(decide(store, task_id, "b@x.io"), jitter[0]),
                                               later(waits.expire(store), jitter[1]))
        assert (result.status == people.COMPLETED) + expired == 1, (i, result.status, expired)
        ctx = await context(store, run_id)
        assert ctx["outcome"] == ("approved" if expired == 0 else "declined")
        decided = await scalar(store, "SELECT count(*) FROM task_decisions WHERE task_id = :t", t=task_id)
        assert decided == (2 if expired == 0 else 1)  # a losing decision is not kept
        outcomes.append(expired)
    assert len(outcomes) == 20
