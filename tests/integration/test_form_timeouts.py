"""Form tasks with a timeout, on a real Postgres: the deadline is set with the task, wakes the
timer pass, and its outcome (a task sent, an escalation, a failed run) is audited; a person's
answer and the timeout landing together have exactly one winner, and the loser is told."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from support import FakeClock, drain, scalar

from engine.deadlines import TIMEOUT_ACTOR
from engine.people import actions as people
from engine.store import waits
from engine.store.tasks import Store

STAGES = {
    "expense/workflow.py": """
        from engine import Escalate, Workflow
        workflow = Workflow("expense", timezone="Europe/Paris")
        submit = workflow.script("submit")
        review = workflow.form("review", assignee="{manager}", timeout="48h", on_timeout="declined")
        strict = workflow.form("strict", assignee="{manager}", module="review", timeout="30m")
        ladder = workflow.form("ladder", assignee="{manager}", module="review", timeout="2 business days",
                               on_timeout=Escalate(to="{director}", timeout="1h", on_timeout="declined"))
        pay = workflow.script("pay")
        refuse = workflow.script("refuse")
        workflow.transition(submit, review, on="review")
        workflow.transition(submit, strict, on="strict")
        workflow.transition(submit, ladder, on="ladder")
        for form in (review, strict, ladder):
            workflow.transition(form, pay, on="approved")
            workflow.transition(form, refuse, on="declined")
    """,
    "expense/submit.py": """
        def run(task, ctx):
            ctx.send(task["to"], task.payload)
    """,
    "expense/review.py": """
        from engine.forms import Approval
        form = Approval("Expense", {"Amount": "{amount}"})
        def run(task, answers, ctx):
            ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
    """,
    "expense/pay.py": "def run(task, ctx):\n    ctx.run['paid'] = True\n",
    "expense/refuse.py": "def run(task, ctx):\n    ctx.run['refused'] = task.payload\n",
}


class Everyone:
    """A directory where entries are identities and nobody is in a team."""

    async def identity(self, entry: str) -> str:
        return entry

    async def is_member(self, team: str, actor: str) -> bool:
        return False


# A Friday afternoon in Paris: business days skip the weekend.
FRIDAY = dt.datetime(2026, 3, 6, 15, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(make_stages, store_for) -> Store:
    return store_for(make_stages(STAGES), clock=FakeClock(FRIDAY))


async def start(store: Store, to: str = "review", **extra: object) -> tuple[str, int]:
    payload = {"to": to, "manager": "m@x.io", "director": "d@x.io", "amount": 40, **extra}
    run_id, _ = await store.start_run(store.registry.get("expense").stage("submit"), payload)
    await drain(store)
    task_id = await scalar(store, "SELECT id FROM tasks WHERE run_id = :r AND kind = 'form'", r=_uuid(run_id))
    return run_id, task_id


def _uuid(run_id: str) -> object:
    import uuid

    return uuid.UUID(run_id)


async def approve(store: Store, task_id: int, who: str = "m@x.io") -> people.Result:
    return await people.submit(store, task_id, {"decision": "approved", "comment": None}, who, Everyone(),
                               max_payload_bytes=1 << 16)


T = TypeVar("T")


async def later(work: Awaitable[T], delay: float) -> T:
    await asyncio.sleep(delay)
    return await work


async def audit(store: Store, task_id: int) -> list[tuple[str, str]]:
    rows = await store.db.fetch_all(_sql("SELECT actor, action FROM audit WHERE task_id = :t ORDER BY id"),
                                    {"t": task_id})
    return [(r["actor"], r["action"]) for r in rows]


def _sql(text: str) -> object:
    from sqlalchemy import text as sql

    return sql(text)


async def test_the_deadline_is_set_with_the_task_and_wakes_the_timer_pass(store) -> None:
    run_id, task_id = await start(store)
    deadline = await scalar(store, "SELECT deadline FROM event_waits WHERE task_id = :t", t=task_id)
    assert deadline == FRIDAY + dt.timedelta(hours=48)
    assert await waits.next_timer(store) == deadline  # a worker sleeps until then, no polling
    report = await store.report(run_id)
    step = next(s for s in report["steps"] if s["stage"] == "review")
    assert step["deadline"] == deadline.isoformat() and "waiting_for" not in step
    store.clock.advance(48 * 3600 - 1)
    assert await waits.expire(store) == 0


async def test_a_timeout_with_a_task_type_routes_as_if_declined_and_is_audited(store) -> None:
    run_id, task_id = await start(store)
    store.clock.advance(48 * 3600)
    assert await waits.expire(store) == 1
    await drain(store)
    run = await store.get_run(run_id)
    assert run["status"] == "completed"
    assert run["context"]["refused"]["timed_out"] is True and run["context"]["refused"]["timeout"] == "48h"
    assert await scalar(store, "SELECT completed_by FROM tasks WHERE id = :t", t=task_id) == TIMEOUT_ACTOR
    assert await audit(store, task_id) == [(TIMEOUT_ACTOR, "timeout")]
    assert await scalar(store, "SELECT count(*) FROM outbox WHERE task_id = :t AND kind = 'form.timed_out'",
                        t=task_id) == 1
    late = await approve(store, task_id)
    assert (late.status, late.by, late.message) == (people.ALREADY, TIMEOUT_ACTOR, people.TIMED_OUT)


async def test_a_timeout_without_an_outcome_fails_the_run(store) -> None:
    run_id, task_id = await start(store, "strict")
    store.clock.advance(1800)
    assert await waits.expire(store) == 1
    run = await store.get_run(run_id)
    assert run["status"] == "failed" and "no answer after 30m" in run["error"]
    assert await audit(store, task_id) == [(TIMEOUT_ACTOR, "timeout")]
    late = await approve(store, task_id)
    assert (late.status, late.message) == (people.ALREADY, people.TIMED_OUT)


async def test_an_escalation_on_timeout_hands_the_task_over_with_a_deadline_of_its_own(store) -> None:
    run_id, task_id = await start(store, "ladder")
    # Two business days in Paris from Friday 16:00 local: Tuesday 16:00 local (15:00 UTC).
    tuesday = FRIDAY + dt.timedelta(days=4)
    assert await scalar(store, "SELECT deadline FROM event_waits WHERE task_id = :t", t=task_id) == tuesday
    store.clock.now = tuesday
    assert await waits.expire(store) == 1
    row = await store.db.fetch_one(_sql("SELECT status, assignee FROM tasks WHERE id = :t"), {"t": task_id})
    assert (row["status"], row["assignee"]) == ("pending", {"users": ["d@x.io"]})
    assert await scalar(store, "SELECT deadline FROM event_waits WHERE task_id = :t", t=task_id) == \
        tuesday + dt.timedelta(hours=1)
    assert await scalar(store, "SELECT count(*) FROM outbox WHERE task_id = :t AND kind = 'form.escalated'",
                        t=task_id) == 1
    assert (await approve(store, task_id, "m@x.io")).status == people.FORBIDDEN  # no longer theirs
    store.clock.advance(3600)
    assert await waits.expire(store) == 1
    await drain(store)
    assert (await store.get_run(run_id))["context"]["refused"]["timed_out"] is True
    assert await audit(store, task_id) == [(TIMEOUT_ACTOR, "escalate"), (TIMEOUT_ACTOR, "timeout")]


async def test_an_answer_in_time_leaves_nothing_for_the_timeout(store) -> None:
    run_id, task_id = await start(store)
    assert (await approve(store, task_id)).ok
    store.clock.advance(48 * 3600)
    assert await waits.expire(store) == 0
    await drain(store)
    assert (await store.get_run(run_id))["context"] == {"paid": True}
    assert await scalar(store, "SELECT count(*) FROM event_waits") == 0


async def test_a_cancelled_run_forgets_its_deadlines(store) -> None:
    from engine.ops import runs as run_ops
    from engine.ops.actor import local_admin
    from engine.ops.base import Ops
    from engine.ops.directory import People

    run_id, task_id = await start(store)
    await run_ops.cancel(Ops(store, People(store.db), 1 << 16), run_id, local_admin())
    assert await scalar(store, "SELECT count(*) FROM event_waits") == 0
    store.clock.advance(48 * 3600)
    assert await waits.expire(store) == 0
    assert await scalar(store, "SELECT status FROM tasks WHERE id = :t", t=task_id) == "cancelled"


async def test_an_answer_and_the_timeout_in_the_same_instant_have_exactly_one_winner(store) -> None:
    wins = {"person": 0, "timeout": 0}
    for i in range(40):
        run_id, task_id = await start(store, n=i)
        store.clock.now = FRIDAY + dt.timedelta(hours=48 * (i + 1))
        # Jitter on either side so that each may land first (and both in the same instant).
        answer, expired = await asyncio.gather(later(approve(store, task_id), i % 2 * random.uniform(0, 0.01)),
                                               later(waits.expire(store), (1 - i % 2) * random.uniform(0, 0.01)))
        assert answer.ok + expired == 1, f"round {i}: answer {answer.status}, timeout ended {expired}"
        if answer.ok:
            wins["person"] += 1
        else:
            wins["timeout"] += 1
            assert (answer.status, answer.by) == (people.ALREADY, TIMEOUT_ACTOR)
        await drain(store)
        completions = await scalar(
            store, "SELECT count(*) FROM task_events WHERE task_id = :t AND to_status = 'completed'", t=task_id)
        assert completions == 1
        assert len(await audit(store, task_id)) == 1  # the winner's record, only
        context = (await store.get_run(run_id))["context"]
        assert ("paid" in context) == bool(answer.ok) and ("refused" in context) == (not answer.ok)
    assert sum(wins.values()) == 40
