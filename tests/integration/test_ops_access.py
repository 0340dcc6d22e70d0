"""Who may do what: each role against each operation (the table of ``engine.ops.access``), a
refusal changing nothing; and the races: two submissions of one task, a cancel against a
completion, a cancel against a submission (each leaves one consistent outcome)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from support import drain, run_once, scalar

from engine.errors import Conflict, DatabaseError, Forbidden
from engine.ops import audit, outbox, runs, tasks, tokens
from engine.ops.actor import Actor, Edge, Role
from engine.ops.base import Ops
from engine.ops.directory import People
from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.runtime.runner import run_script
from engine.store.tasks import Finished
from tests.opsworld import ANN, BOB, CLAIM, EVE, FIN, OPS, SAM, VIC, settings_for


def member(email: str) -> Actor:
    return Actor(email, Role.MEMBER, Edge.API)


ROLES: dict[str, Actor] = {
    "admin": Actor("root@example.com", Role.ADMIN, Edge.API),
    "operator": member(OPS),
    "operator by team": member(FIN),
    "viewer": member(VIC),
    "starter": member(ANN),
    "assignee": member(BOB),
    "team member": member(SAM),
    "stranger": member(EVE),
}
EVERYONE = set(ROLES)
OPERATORS = {"admin", "operator", "operator by team"}

#: operation -> the roles it is allowed to.
TABLE: dict[str, set[str]] = {
    "read run": OPERATORS | {"viewer", "starter", "assignee"},
    "cancel run": OPERATORS,
    "retry run": OPERATORS,
    "rerun": OPERATORS,
    "start": EVERYONE,  # the workflow names no starters
    "submit": {"admin", "assignee"},
    "approve": {"admin", "assignee"},
    "claim": {"admin", "team member"},
    "reassign": OPERATORS | {"assignee"},
    "retry task": OPERATORS,
    "list outbox": {"admin"},
    "discard effect": {"admin"},
    "manage tokens": {"admin"},
    "read audit": {"admin"},
}


@pytest.fixture
async def world(database_url: str, tmp_path: Path):
    from engine.ops.base import ops_of

    async with open_app(settings_for(database_url, tmp_path), load_plugins_=False, pool_size=4) as app:
        yield app, ops_of(app)


async def waiting_run(ops: Ops, amount: int = 42) -> tuple[str, int]:
    """A pay run waiting on Bob's approval: (run id, review task id)."""
    done = await tasks.start(ops, "pay", {**CLAIM, "amount": amount}, member(ANN))
    task = await scalar(ops.store, "SELECT id FROM tasks WHERE run_id = :r AND stage = 'review'", r=done["run_id"])
    return done["run_id"], int(task)


async def failed_run(app: App, ops: Ops) -> tuple[str, int]:
    """A pay run whose payment failed: (run id, failed task id)."""
    run_id, task_id = await waiting_run(ops, amount=5000)
    await tasks.submit(ops, task_id, {"decision": "approved"}, member(BOB))
    await drain(app.store)
    task = await scalar(ops.store, "SELECT id FROM tasks WHERE run_id = :r AND status = 'failed'", r=run_id)
    return run_id, int(task)


async def team_task(app: App, ops: Ops) -> int:
    run_id, _ = await app.store.start_run(app.registry.get("desk").stage("open"), {"summary": "VPN"})
    await drain(app.store)
    return int(await scalar(ops.store, "SELECT id FROM tasks WHERE run_id = :r AND stage = 'resolve'", r=run_id))


Operation = Callable[[App, Ops, Actor], Awaitable[Any]]


async def _effect(app: App, ops: Ops) -> int:
    await waiting_run(ops)
    return int(await scalar(ops.store, "SELECT max(id) FROM outbox"))


async def prepared(name: str, app: App, ops: Ops) -> Callable[[Actor], Awaitable[Any]]:
    """The operation ``name`` on a fresh resource, as a function of the actor."""
    if name in ("read run", "cancel run", "rerun"):
        run_id, _ = await waiting_run(ops)
        fn = {"read run": runs.report, "cancel run": runs.cancel, "rerun": runs.rerun}[name]
        return lambda actor: fn(ops, run_id, actor)
    if name == "retry run":
        run_id, _ = await failed_run(app, ops)
        return lambda actor: runs.retry(ops, run_id, actor)
    if name == "retry task":
        _, task_id = await failed_run(app, ops)
        return lambda actor: tasks.retry(ops, task_id, actor)
    if name == "start":
        return lambda actor: tasks.start(ops, "pay", CLAIM, actor)
    if name in ("submit", "approve", "reassign"):
        _, task_id = await waiting_run(ops)
        if name == "submit":
            return lambda actor: tasks.submit(ops, task_id, {"decision": "approved"}, actor)
        if name == "approve":
            return lambda actor: tasks.submit(ops, task_id, {}, actor, decision="approved")
        return lambda actor: tasks.reassign(ops, task_id, "zed@example.com", actor)
    if name == "claim":
        task_id = await team_task(app, ops)
        return lambda actor: tasks.claim(ops, task_id, actor)
    if name == "list outbox":
        return lambda actor: outbox.list_effects(ops, actor)
    if name == "discard effect":
        effect = await _effect(app, ops)
        return lambda actor: outbox.discard(ops, effect, actor)
    if name == "manage tokens":
        return lambda actor: tokens.create(ops, actor, "zed@example.com")
    if name == "read audit":
        return lambda actor: audit.trail(ops, actor)
    raise AssertionError(name)


async def state(app: App) -> Any:
    return await scalar(app.store, """
        SELECT jsonb_build_array(
            (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY id), '[]') FROM tasks t),
            (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY id), '[]') FROM runs r),
            (SELECT coalesce(jsonb_agg(to_jsonb(o) ORDER BY id), '[]') FROM outbox o),
            (SELECT count(*) FROM audit), (SELECT count(*) FROM api_tokens))""")


def test_the_table_names_every_action_of_the_access_rules() -> None:
    from engine.ops.access import RULES, Action

    assert set(RULES) == set(Action)
    assert all(RULES[a][-1] == "admin" for a in Action)  # an admin may do everything


@pytest.mark.parametrize("operation", sorted(TABLE))
async def test_each_role_against_the_operation(world, operation: str) -> None:
    app, ops = world
    for role, actor in ROLES.items():
        act = await prepared(operation, app, ops)
        before = await state(app)
        if role in TABLE[operation]:
            assert await act(actor) is not None, (operation, role)
        else:
            with pytest.raises(Forbidden) as refused:
                await act(actor)
            assert actor.person in str(refused.value), (operation, role)
            assert await state(app) == before, (operation, role)


async def test_two_racing_submissions_complete_the_task_once_and_the_loser_learns_who_won(world) -> None:
    app, ops = world
    for _ in range(5):
        _, task_id = await waiting_run(ops)
        results = await asyncio.gather(
            tasks.submit(ops, task_id, {"decision": "approved"}, member(BOB)),
            tasks.submit(ops, task_id, {"decision": "declined", "comment": "no"}, ROLES["admin"]),
            return_exceptions=True)
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, Conflict)]
        assert len(won) == 1 and len(lost) == 1, results
        assert lost[0].extra["by"] == won[0]["by"] and f"already completed by {won[0]['by']}" in str(lost[0])
        assert await scalar(app.store, "SELECT count(*) FROM audit WHERE task_id = :t", t=task_id) == 1
        assert await scalar(app.store, "SELECT count(*) FROM tasks WHERE source_task_id = :t", t=task_id) == 1


async def test_a_cancel_racing_a_completion_leaves_one_consistent_outcome(world) -> None:
    app, ops = world
    outcomes = set()
    for _ in range(6):
        run_id, task_id = await waiting_run(ops)
        await tasks.submit(ops, task_id, {"decision": "approved"}, member(BOB))
        [row] = await app.store.claim("w1", 10)  # the payment is running
        result = await run_script(app.store.stage_of(row), row, max_payload_bytes=ops.max_payload_bytes)
        assert isinstance(result, Finished)
        committed, cancelled = await asyncio.gather(app.store.commit("w1", [result]),
                                                    runs.cancel(ops, run_id, ROLES["admin"]), return_exceptions=True)
        report = await app.store.report(run_id)
        assert report is not None
        pay = report["steps"][-1]
        outcomes.add(report["status"])
        if report["status"] == "completed":  # the payment committed first: the run is done, the cancel refused
            assert isinstance(cancelled, Conflict) and "already completed" in str(cancelled)
            assert committed.completed == [pay["task_id"]] and report["context"]["paid"] == 42
            assert not [a for a in report["audit"] if a["action"] == "cancel"]
        else:  # the cancel came first: the payment's completion lost, nothing it did is kept
            assert report["status"] == "cancelled" and isinstance(cancelled, dict)
            assert pay["status"] == "cancelled" and committed.lost == [pay["task_id"]]
            assert "paid" not in report["context"]
        assert not [s for s in report["steps"] if s["status"] in ("pending", "locked")]
        assert await run_once(app.store) is None
    assert outcomes <= {"completed", "cancelled"} and outcomes


async def test_a_cancel_racing_a_submission_either_cancels_what_the_answer_sent_or_refuses_the_answer(world) -> None:
    app, ops = world
    for _ in range(6):
        run_id, task_id = await waiting_run(ops)
        submitted, cancelled = await asyncio.gather(
            tasks.submit(ops, task_id, {"decision": "approved"}, member(BOB)),
            runs.cancel(ops, run_id, member(OPS)), return_exceptions=True)
        assert isinstance(cancelled, dict), cancelled
        report = await app.store.report(run_id)
        assert report is not None and report["status"] == "cancelled"
        if isinstance(submitted, dict):
            assert [s["status"] for s in report["steps"]] == ["completed", "completed", "cancelled"]
        else:
            assert isinstance(submitted, Conflict) and f"cancelled by {OPS}" in str(submitted)
            assert [s["status"] for s in report["steps"]] == ["completed", "cancelled"]
        assert not [s for s in report["steps"] if s["status"] in ("pending", "locked")]


async def test_the_audit_trail_is_append_only(world) -> None:
    app, ops = world
    await waiting_run(ops)
    with pytest.raises(DatabaseError, match="append-only"):
        await scalar(app.store, "UPDATE audit SET actor = 'someone else' RETURNING id")
    assert await scalar(app.store, "SELECT actor FROM audit") == ANN


async def test_cancel_drops_the_waiting_joins_of_the_run(make_stages, store_for, db) -> None:
    registry = make_stages({
        "j/workflow.py": """
            from engine import Workflow
            workflow = Workflow("j")
            a, b = workflow.script("a"), workflow.script("b")
            c = workflow.form("c", assignee="x@example.com")
            both = workflow.script("both", join="all")
            workflow.transition(a, b)
            workflow.transition(a, c)
            workflow.transition(b, both)
            workflow.transition(c, both)
        """,
        "j/a.py": "def run(task, ctx):\n    ctx.send('go', {})\n",
        "j/b.py": "def run(task, ctx):\n    ctx.send('half', {})\n",
        "j/c.py": ("from engine.forms import Form, Text\nform = Form('C', [Text('t', 'T')])\n"
                   "def run(task, answers, ctx):\n    ctx.send('half', answers)\n"),
        "j/both.py": "def run(task, ctx):\n    pass\n",
    })
    store = store_for(registry)
    ops = Ops(store, People(db), 256 * 1024)
    run_id, _ = await store.start_run(registry.get("j").stage("a"), {})
    await drain(store)
    assert await scalar(store, "SELECT count(*) FROM join_arrivals") == 1
    done = await runs.cancel(ops, run_id, ROLES["admin"], "not needed")
    assert done["tasks_cancelled"] == 1
    report = await store.report(run_id)
    assert report["waiting_joins"] == [] and report["status"] == "cancelled"
    assert report["error"] == "cancelled by root@example.com: not needed"
