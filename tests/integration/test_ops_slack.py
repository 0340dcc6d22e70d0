"""Operations on the Slack edge, through signed requests to the real Bolt app and the Slack fake:
``/flowbot cancel`` and ``/flowbot retry`` for operators (the same engine operations as the API
and the CLI), the cards of a cancelled run saying who cancelled it, and an API submission racing
a Slack click (one completion; the loser is told who won)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from support import eventually, scalar

from engine.ops import tokens
from engine.ops.base import ops_of
from tests.fakeslack import FakeSlack
from tests.opsworld import ADMIN, STAGES
from tests.slack import SlackHarness, StartSlack

CLAIM = {"note": "Taxi", "amount": 42, "manager": "bob@example.com"}


@pytest.fixture
def people(fake_slack: FakeSlack) -> FakeSlack:
    for name in ("ann", "bob", "ops", "eve"):
        fake_slack.add_user(f"{name}@example.com", f"U0{name.upper()}")
    return fake_slack


async def answer(fake: FakeSlack, n: int) -> str:
    async def arrived() -> Any:
        calls = fake.calls("respond")
        return calls[n - 1] if len(calls) >= n else None

    call = await eventually(arrived, what=f"answer #{n}")
    return str(call.params.get("text"))


async def waiting_run(h: SlackHarness, amount: int = 42) -> tuple[str, int, str]:
    """A pay run started over the API (as Ann) whose approval card reached Bob: (run, task, card ts)."""
    from engine.ops import tasks
    from engine.ops.actor import Actor, Edge, Role

    done = await tasks.start(ops_of(h.app), "pay", {**CLAIM, "amount": amount},
                             Actor("ann@example.com", Role.MEMBER, Edge.API))
    task_id = int(await scalar(h.app.store, "SELECT id FROM tasks WHERE run_id = :r AND stage = 'review'",
                               r=done["run_id"]))

    async def card() -> Any:
        calls = [c for c in h.fake.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB"
                 and str(task_id) in json.dumps(c.params.get("blocks"))]
        return calls[-1] if calls else None

    posted = await eventually(card, what="Bob's card")
    return done["run_id"], task_id, str(posted.response["ts"])


async def test_an_operator_cancels_a_run_from_slack_and_the_cards_say_who(
        slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    run_id, task_id, ts = await waiting_run(h)
    await h.command("U0EVE", f"cancel {run_id[:8]} spam", response_url=h.fake.url + "respond")
    refusal = await answer(people, 1)
    assert "U0EVE may not cancel runs of pay" in refusal and "Nothing was changed" in refusal
    assert (await h.app.store.report(run_id))["status"] == "waiting"

    await h.command("U0OPS", f"cancel {run_id[:8]} duplicate claim", response_url=h.fake.url + "respond")
    assert f"Run `{run_id}` is cancelled (1 open task(s) cancelled)" in await answer(people, 2)
    report = await h.app.store.report(run_id)
    assert report["status"] == "cancelled"
    last = report["audit"][-1]
    assert (last["actor"], last["action"], last["edge"], last["acting_as"]) == ("U0OPS", "cancel", "slack", "operator")
    assert last["detail"]["reason"] == "duplicate claim"

    async def updated() -> Any:
        return [c for c in people.calls("chat.update") if c.params.get("ts") == ts]

    [update] = await eventually(updated, what="Bob's card updated")
    assert "Cancelled by <@U0OPS>" in update.params["text"] and "duplicate claim" in update.params["text"]

    await h.command("U0OPS", f"cancel {run_id}", response_url=h.fake.url + "respond")
    assert "already cancelled" in await answer(people, 3)
    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)

    async def told() -> Any:
        return [c for c in people.calls("chat.postEphemeral") if c.params.get("user") == "U0BOB"]

    [notice] = await eventually(told, what="Bob told")
    assert "cancelled by U0OPS" in notice.params["text"]
    assert await scalar(h.app.store, "SELECT count(*) FROM audit WHERE action = 'approve'") == 0


async def test_an_operator_retries_a_failed_run_from_slack(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    run_id, task_id, ts = await waiting_run(h, amount=5000)
    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)

    async def failed() -> Any:
        report = await h.app.store.report(run_id)
        return report if report["status"] == "failed" else None

    await eventually(failed, what="the payment to fail")
    await h.command("U0ANN", f"retry {run_id}", response_url=h.fake.url + "respond")
    assert "may not retry runs of pay" in await answer(people, 1)
    await h.command("U0OPS", "retry", response_url=h.fake.url + "respond")
    assert "Usage" in await answer(people, 2)
    await h.command("U0OPS", f"retry {run_id}", response_url=h.fake.url + "respond")
    assert f"Run `{run_id}` is running again" in await answer(people, 3)
    await eventually(failed, what="the payment to fail again")
    pay = (await h.app.store.report(run_id))["steps"][-1]
    assert pay["attempts"] == 2
    trail = [(a["actor"], a["action"], a["edge"]) for a in (await h.app.store.report(run_id))["audit"]]
    assert trail == [("ann@example.com", "start", "api"), ("U0BOB", "approve", "slack"), ("U0OPS", "retry", "slack")]


async def test_an_api_submission_racing_a_slack_click_completes_the_task_once(
        slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    bob = await tokens.create(ops_of(h.app), ADMIN, "bob@example.com")
    headers = {"Authorization": f"Bearer {bob['token']}"}
    for _ in range(4):
        _, task_id, ts = await waiting_run(h)

        async def api(task_id: int = task_id) -> tuple[int, Any]:
            async with h.session.post(f"{h.base_url}/api/tasks/{task_id}/submit", headers=headers,
                                      json={"answers": {"decision": "approved"}}) as resp:
                return resp.status, await resp.json()

        (status, body), click = await asyncio.gather(
            api(), h.click("U0BOB", "flowbot_approve", str(task_id),
                           channel="DU0BOB", message_ts=ts))
        assert click.status == 200
        await h.settle()
        row = await scalar(h.app.store, "SELECT to_jsonb(t) FROM tasks t WHERE id = :t", t=task_id)
        assert row["status"] == "completed"
        assert await scalar(h.app.store, "SELECT count(*) FROM audit WHERE task_id = :t", t=task_id) == 1
        assert await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE source_task_id = :t", t=task_id) == 1
        if status == 200:  # the API won: Bob's click is told so
            assert row["completed_by"] == "bob@example.com"

            async def told() -> Any:
                return [c for c in people.calls("chat.postEphemeral") if "bob@example.com" in c.params["text"]]

            await eventually(told, what="the click told who won")
        else:
            assert status == 409 and body["by"] == "U0BOB" and "already completed by U0BOB" in body["error"]


async def test_an_operator_reassigns_someone_elses_task_from_slack(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    _, task_id, _ = await waiting_run(h)
    await h.command("U0EVE", f"reassign {task_id} <@U0ANN|ann>", response_url=h.fake.url + "respond")
    assert "U0BOB" in await answer(people, 1) or "bob@example.com" in await answer(people, 1)
    await h.command("U0OPS", f"reassign {task_id} <@U0ANN|ann>", response_url=h.fake.url + "respond")
    assert "now" in await answer(people, 2)
    row = await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :t", t=task_id)
    assert row == {"users": ["U0ANN"]}
    entry = await scalar(h.app.store, "SELECT to_jsonb(a) FROM audit a WHERE action = 'reassign'")
    assert (entry["actor"], entry["edge"], entry["acting_as"]) == ("U0OPS", "slack", "operator")


async def test_slack_buttons_apply_the_engines_access_rule_and_audit_who_acted_as_what(
        slack_app: StartSlack, people: FakeSlack) -> None:
    """Cards' buttons go through the engine's one access rule: Eve (nothing to the task) is
    refused and nothing changes; the workflow's operator may open the Reassign picker on Bob's
    card (reassign is theirs by the rule); Bob's approval is audited as the assignee's."""
    h = await slack_app(STAGES)
    _, task_id, ts = await waiting_run(h)
    await h.click("U0EVE", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)
    await h.settle()
    assert await scalar(h.app.store, "SELECT status FROM tasks WHERE id = :t", t=task_id) == "pending"

    async def refused() -> Any:
        return [c for c in people.calls("chat.postEphemeral") if c.params.get("user") == "U0EVE"]

    await eventually(refused, what="Eve told she may not act")
    assert await scalar(h.app.store, "SELECT count(*) FROM audit WHERE task_id = :t", t=task_id) == 0

    opened = len(people.calls("views.open"))
    await h.click("U0OPS", "flowbot_reassign", str(task_id), channel="DU0BOB", message_ts=ts)
    await eventually(lambda: _more(people, "views.open", opened), what="the operator's reassign picker")

    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)
    await h.settle()
    entry = await scalar(h.app.store, "SELECT to_jsonb(a) FROM audit a WHERE task_id = :t", t=task_id)
    assert (entry["actor"], entry["action"], entry["edge"], entry["acting_as"]) == (
        "U0BOB", "approve", "slack", "assignee")


async def _more(fake: FakeSlack, method: str, than: int) -> bool:
    return len(fake.calls(method)) > than


async def test_a_slack_user_named_in_flowbot_admins_acts_as_an_admin(slack_app: StartSlack, people: FakeSlack) -> None:
    """FLOWBOT_ADMINS gives Slack users the admin role too (named by email: the workspace's user
    of that email): Eve may cancel any run and approve on someone's behalf; Ann may not."""
    h = await slack_app(STAGES, admins=("eve@example.com",))
    _, task_id, ts = await waiting_run(h)
    await h.click("U0ANN", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)
    await h.click("U0EVE", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)
    await h.settle()
    entry = await scalar(h.app.store, "SELECT to_jsonb(a) FROM audit a WHERE task_id = :t", t=task_id)
    assert (entry["actor"], entry["action"], entry["acting_as"], entry["on_behalf_of"]) == (
        "U0EVE", "approve", "admin", "bob@example.com")
    other, _, _ = await waiting_run(h)
    await h.command("U0EVE", f"cancel {other[:8]}", response_url=h.fake.url + "respond")
    assert "is cancelled" in await answer(people, 1)
    assert (await h.app.store.report(other))["audit"][-1]["acting_as"] == "admin"
