"""Wait stages and events on a real Postgres: a wait completes when its event arrives (before or
after it began, within the lookback), once; every wait on the key completes; a timeout sends its
task or fails the run; and the races (early event vs late wait, event vs timeout at the same
instant) have exactly one outcome.
"""

from __future__ import annotations

import asyncio

import pytest
from support import FakeClock, drain, scalar

from engine.context import EventSend
from engine.runtime.report import render
from engine.runtime.runner import run_script
from engine.store import waits
from engine.store.tasks import Store

STAGES = {
    "order/workflow.py": """
        from engine import Workflow
        workflow = Workflow("order")
        place = workflow.script("place")
        payment = workflow.wait("payment", event="payment.received", key="{order_id}", timeout="7d",
                                on_timeout="expired")
        ship = workflow.script("ship")
        cancel = workflow.script("cancel")
        workflow.transition(place, payment)
        workflow.transition(payment, ship, on="payment.received")
        workflow.transition(payment, cancel, on="expired")
    """,
    "order/place.py": """
        def run(task, ctx):
            ctx.send("placed", task.payload)
    """,
    "order/ship.py": """
        def run(task, ctx):
            ctx.run["shipped"] = task.payload
    """,
    "order/cancel.py": """
        def run(task, ctx):
            ctx.run["cancelled"] = True
    """,
    "strict/workflow.py": """
        from engine import Workflow
        workflow = Workflow("strict")
        sign = workflow.wait("sign", event="contract.signed", key="{contract}", timeout="1h")
        done = workflow.script("done")
        workflow.transition(sign, done, on="contract.signed")
    """,
    "strict/done.py": "def run(task, ctx):\n    pass\n",
    "bank/workflow.py": """
        from engine import Workflow
        workflow = Workflow("bank")
        settle = workflow.script("settle")
    """,
    "bank/settle.py": """
        def run(task, ctx):
            ctx.emit("payment.received", key=task["order_id"], payload={"amount": task["amount"]})
            if task.get("fail"):
                raise RuntimeError("bank down")
    """,
}


@pytest.fixture
def store(make_stages, store_for) -> Store:
    return store_for(make_stages(STAGES), clock=FakeClock(), event_lookback=3600)


async def place(store: Store, order_id: str, **extra: object) -> str:
    run_id, _ = await store.start_run(store.registry.get("order").stage("place"), {"order_id": order_id, **extra})
    await drain(store)
    return run_id


async def statuses(store: Store, run_id: str) -> dict[str, str]:
    report = await store.report(run_id)
    return {s["stage"]: s["status"] for s in report["steps"]} | {"run": report["status"]}


async def test_a_wait_completes_when_its_event_arrives_and_the_run_goes_on(store) -> None:
    run_id = await place(store, "A-1", item="book")
    report = await store.report(run_id)
    assert report["status"] == "waiting"
    wait = next(s for s in report["steps"] if s["stage"] == "payment")
    assert wait["waiting_for"]["event"] == "payment.received" and wait["waiting_for"]["key"] == "A-1"
    assert "waiting for: payment.received (key A-1)" in render(report)
    published = await waits.send_event(store, "payment.received", "A-1", {"amount": 12}, source="test")
    assert published.matched == 1
    await drain(store)
    report = await store.report(run_id)
    assert report["status"] == "completed"
    assert report["context"]["shipped"] == {"order_id": "A-1", "item": "book", "amount": 12}
    wait = next(s for s in report["steps"] if s["stage"] == "payment")
    assert wait["completed_by"] == f"event:{published.id}"


async def test_an_event_for_another_key_leaves_the_wait_waiting(store) -> None:
    run_id = await place(store, "A-2")
    assert (await waits.send_event(store, "payment.received", "A-3", {}, source="test")).matched == 0
    assert (await waits.send_event(store, "payment.other", "A-2", {}, source="test")).matched == 0
    assert (await statuses(store, run_id))["payment"] == "pending"


async def test_an_event_that_arrived_before_the_wait_began_completes_it(store) -> None:
    early = await waits.send_event(store, "payment.received", "B-1", {"amount": 5}, source="test")
    assert early.matched == 0
    store.clock.advance(3599)  # within the lookback
    run_id = await place(store, "B-1")
    assert (await store.get_run(run_id))["status"] == "completed"
    assert (await store.report(run_id))["context"]["shipped"]["amount"] == 5


async def test_an_event_older_than_the_lookback_is_not_matched(store) -> None:
    await waits.send_event(store, "payment.received", "B-2", {"amount": 5}, source="test")
    store.clock.advance(3601)
    run_id = await place(store, "B-2")
    assert (await statuses(store, run_id))["payment"] == "pending"


async def test_one_event_completes_every_wait_on_its_key_once_each(store) -> None:
    runs = [await place(store, "C-1") for _ in range(3)]
    other = await place(store, "C-2")
    published = await waits.send_event(store, "payment.received", "C-1", {"amount": 1}, source="test")
    assert published.matched == 3
    again = await waits.send_event(store, "payment.received", "C-1", {"amount": 2}, source="test")
    assert again.matched == 0
    await drain(store)
    for run_id in runs:
        assert (await store.report(run_id))["context"]["shipped"]["amount"] == 1
        assert await scalar(store, "SELECT count(*) FROM tasks WHERE run_id = CAST(:r AS uuid) AND stage = 'ship'",
                            r=run_id) == 1
    assert (await statuses(store, other))["payment"] == "pending"


async def test_ctx_emit_publishes_with_the_stages_completion_only(store) -> None:
    run_id = await place(store, "D-1")
    bank = store.registry.get("bank").stage("settle")
    await store.start_run(bank, {"order_id": "D-1", "amount": 9, "fail": True})
    await drain(store)  # the stage raised: retried later, its event not published
    assert (await statuses(store, run_id))["payment"] == "pending"
    assert await scalar(store, "SELECT count(*) FROM events") == 0
    await store.start_run(bank, {"order_id": "D-1", "amount": 9})
    await drain(store)
    assert (await store.get_run(run_id))["status"] == "completed"
    assert (await scalar(store, "SELECT source FROM events")).startswith("task:")


async def test_a_timeout_sends_the_on_timeout_task(store) -> None:
    run_id = await place(store, "E-1")
    store.clock.advance(7 * 86400 - 1)
    assert await waits.expire(store) == 0
    store.clock.advance(1)
    assert await waits.expire(store) == 1
    await drain(store)
    report = await store.report(run_id)
    assert (report["status"], report["context"]) == ("completed", {"cancelled": True})
    wait = next(s for s in report["steps"] if s["stage"] == "payment")
    assert (wait["status"], wait["completed_by"]) == ("completed", "timeout")
    assert "timed out after 7d" in wait["log"][-1]["message"]
    # The event arriving late finds no wait.
    assert (await waits.send_event(store, "payment.received", "E-1", {}, source="test")).matched == 0


async def test_a_timeout_without_on_timeout_fails_the_run(store) -> None:
    run_id, _ = await store.start_run(store.registry.get("strict").stage("sign"), {"contract": "K-1"})
    assert (await store.get_run(run_id))["status"] == "waiting"
    store.clock.advance(3600)
    assert await waits.expire(store) == 1
    run = await store.get_run(run_id)
    assert run["status"] == "failed" and "timed out after 1h" in run["error"]


async def test_a_run_that_comes_back_to_the_same_wait_needs_a_new_event(make_stages, store_for) -> None:
    files = {
        "loop/workflow.py": """
            from engine import Workflow
            workflow = Workflow("loop")
            tick = workflow.wait("tick", event="tick", key="{k}")
            count = workflow.script("count")
            workflow.transition(tick, count)
            workflow.transition(count, tick, on="again")
        """,
        "loop/count.py": """
            def run(task, ctx):
                ctx.run["n"] = ctx.run.get("n", 0) + 1
                if ctx.run["n"] < 3:
                    ctx.send("again", {"k": task["k"]})
        """,
    }
    store = store_for(make_stages(files), clock=FakeClock())
    run_id, _ = await store.start_run(store.registry.get("loop").stage("tick"), {"k": "x"})
    for n in (1, 2):
        await waits.send_event(store, "tick", "x", {}, source="test")
        await drain(store)
        assert (await store.get_run(run_id))["context"] == {"n": n}
    await waits.send_event(store, "tick", "x", {}, source="test")
    await drain(store)
    assert (await store.get_run(run_id))["status"] == "completed"


async def test_an_early_event_and_a_late_wait_racing_never_miss_each_other(store) -> None:
    # The wait begins (its stage's commit) while the event arrives: whichever commits second must
    # see the other. Repeated with fresh keys to give the interleavings a chance.
    for i in range(25):
        key = f"R-{i}"
        run_id, _ = await store.start_run(store.registry.get("order").stage("place"), {"order_id": key})
        rows = await store.claim("w1", 10)
        [finished] = [await run_script(store.stage_of(r), r, max_payload_bytes=1 << 16) for r in rows]
        await asyncio.gather(store.commit("w1", [finished]),
                             waits.send_event(store, "payment.received", key, {"i": i}, source="race"))
        await drain(store)
        assert (await store.get_run(run_id))["status"] == "completed", f"round {i}: the wait missed its event"


async def test_an_event_and_the_timeout_in_the_same_instant_have_one_winner(store) -> None:
    for i in range(25):
        key = f"T-{i}"
        run_id = await place(store, key)
        store.clock.advance(7 * 86400)
        published, expired = await asyncio.gather(
            waits.send_event(store, "payment.received", key, {}, source="race"), waits.expire(store))
        assert published.matched + expired == 1, f"round {i}: {published.matched} + {expired}"
        await drain(store)
        report = await store.report(run_id)
        assert report["status"] == "completed"
        done = [s["stage"] for s in report["steps"] if s["stage"] in ("ship", "cancel")]
        assert done == (["ship"] if published.matched else ["cancel"])


async def test_events_emitted_together_on_one_key_complete_each_wait_once(store) -> None:
    run_id = await place(store, "F-1")
    async with store.db.transaction() as tx:
        done = await waits.publish(store, tx, [(EventSend("payment.received", "F-1", '{"n":1}'), "t"),
                                               (EventSend("payment.received", "F-1", '{"n":2}'), "t")],
                                   store.clock())
    assert [p.matched for p in done] == [1, 0]
    await drain(store)
    assert (await store.report(run_id))["context"]["shipped"]["n"] == 1
