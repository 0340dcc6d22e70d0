"""Timeouts and approvals needing several people, in Slack (signed requests to the real Bolt app,
the Web API faked): cards show the deadline and who has decided so far, are updated when a
timeout closes the task or a decision is kept, and the person who lost is told why."""

from __future__ import annotations

import asyncio
from typing import Any

from blockkit import assert_valid_blocks
from support import FakeClock, eventually, scalar

from engine.deadlines import TIMEOUT_ACTOR
from engine.store import waits
from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

STAGES = {
    "buy/workflow.py": """
        from engine import Escalate, Team, Workflow
        workflow = Workflow("buy", title="Purchase")
        ask = workflow.script("ask")
        one = workflow.form("one", assignee="bob@example.com", module="review", timeout="48h",
                            on_timeout="declined")
        two = workflow.form("two", assignee=["bob@example.com", "carol@example.com"], module="review_two")
        team = workflow.form("team", assignee=Team("@buyers"), module="review_two")
        own = workflow.form("own", assignee=["bob@example.com", "carol@example.com"], module="review_own")
        up = workflow.form("up", assignee="bob@example.com", module="review", timeout="1s",
                           on_timeout=Escalate(to="carol@example.com"))
        done = workflow.script("done")
        for form in (one, two, team, own, up):
            workflow.transition(ask, form, on=form.name)
            workflow.transition(form, done)
    """,
    "buy/ask.py": "def run(task, ctx):\n    ctx.send(task['to'], task.payload)\n",
    "buy/review.py": """
        from engine.forms import Approval
        form = Approval("Laptop purchase", {"Amount": "{amount} EUR"})
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/review_two.py": """
        from engine.forms import Approval
        form = Approval("Laptop purchase", {"Amount": "{amount} EUR"}, approvers=2)
        def run(task, answers, ctx):
            ctx.run["decisions"] = answers["decisions"]
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/review_own.py": """
        from engine.forms import Approval
        form = Approval("Laptop purchase", allow_self_approval=False)
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/done.py": "def run(task, ctx):\n    ctx.run['outcome'] = task.type\n",
}


async def start(h: SlackHarness, to: str, **context: Any) -> str:
    run_id, _ = await h.app.store.start_run(h.app.registry.get("buy").stage("ask"), {"to": to, "amount": 900},
                                            context=context)
    return run_id


async def cards_in(fake: FakeSlack, channel: str, n: int = 1) -> list[dict[str, Any]]:
    async def posted() -> Any:
        calls = [dict(c.params) | {"ts": c.response["ts"]} for c in fake.calls("chat.postMessage")
                 if c.response.get("channel") == channel and c.response.get("ok") and c.params.get("blocks")]
        return calls if len(calls) >= n else None

    found: list[dict[str, Any]] = await eventually(posted, what=f"{n} card(s) in {channel}")
    return found


async def updates_of(fake: FakeSlack, channel: str, n: int = 1) -> list[dict[str, Any]]:
    async def got() -> Any:
        calls = [dict(c.params) for c in fake.calls("chat.update") if c.params.get("channel") == channel]
        return calls if len(calls) >= n else None

    found: list[dict[str, Any]] = await eventually(got, what=f"{n} update(s) in {channel}")
    return found


async def ephemeral(fake: FakeSlack, user: str) -> str:
    async def got() -> Any:
        texts = [c.params["text"] for c in fake.calls("chat.postEphemeral") if c.params.get("user") == user]
        return texts[-1] if texts else None

    found: str = await eventually(got, what=f"an answer to {user}")
    return found


def task_of_card(card: dict[str, Any]) -> str:
    return next(e["value"] for b in card["blocks"] if b["type"] == "actions" for e in b["elements"])


async def test_a_timed_out_card_says_so_and_a_late_click_is_told_the_timeout_closed_it(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock)
    run_id = await start(h, "one")
    [card] = await cards_in(fake_slack, "DU0BOB")
    assert_valid_blocks(card["blocks"])
    assert "Answer by <!date^" in str(card["blocks"])
    task_id = task_of_card(card)
    await h.event({"type": "app_home_opened", "user": "U0BOB", "channel": "DU0BOB", "tab": "home"})

    async def home() -> Any:
        views = [c.params for c in fake_slack.calls("views.publish") if c.params.get("user_id") == "U0BOB"]
        return views[-1] if views and "Answer by" in str(views[-1]) else None

    await eventually(home, what="bob's Home with the deadline")
    clock.advance(48 * 3600)
    await waits.expire(h.app.store)
    [update] = await updates_of(fake_slack, "DU0BOB")
    assert_valid_blocks(update["blocks"])
    assert "No answer within 48h: timed out" in update["text"] and "sent on as declined" in update["text"]
    assert not any(b["type"] == "actions" for b in update["blocks"])
    await h.click("U0BOB", "flowbot_approve", task_id)
    assert "timed out" in await ephemeral(fake_slack, "U0BOB")
    assert await scalar(h.app.store, "SELECT completed_by FROM tasks WHERE id = :t", t=int(task_id)) == TIMEOUT_ACTOR
    assert await scalar(h.app.store, "SELECT context->>'outcome' FROM runs WHERE id = :r",
                        r=__import__("uuid").UUID(run_id)) == "declined"


async def test_two_approvers_see_who_decided_so_far_and_the_last_completes_it(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("carol@example.com", "U0CAROL")
    h = await slack_app(STAGES)
    run_id = await start(h, "two")
    [bob_card] = await cards_in(fake_slack, "DU0BOB")
    [_carol_card] = await cards_in(fake_slack, "DU0CAROL")
    assert "Needs 2 approvals (0 so far)" in str(bob_card["blocks"])
    task_id = task_of_card(bob_card)

    await h.click("U0BOB", "flowbot_approve", task_id)
    [bob_update] = await updates_of(fake_slack, "DU0BOB")
    [carol_update] = await updates_of(fake_slack, "DU0CAROL")
    for update in (bob_update, carol_update):
        assert_valid_blocks(update["blocks"])
    assert "You approved" in bob_update["text"] and not any(b["type"] == "actions" for b in bob_update["blocks"])
    assert "<@U0BOB> approved" in str(carol_update["blocks"]) and "(1 so far)" in str(carol_update["blocks"])
    assert any(b["type"] == "actions" for b in carol_update["blocks"])

    await h.click("U0BOB", "flowbot_approve", task_id)  # counted once
    assert "already decided" in await ephemeral(fake_slack, "U0BOB")
    await h.click("U0CAROL", "flowbot_approve", task_id)

    async def finished() -> Any:
        run = await h.app.store.get_run(run_id)
        return run if run["status"] == "completed" else None

    run = await eventually(finished, what="the run completed")
    assert [d["by"] for d in run["context"]["decisions"]] == ["U0BOB", "U0CAROL"]
    final = (await updates_of(fake_slack, "DU0CAROL", 2))[-1]
    assert "Approved by <@U0BOB>, <@U0CAROL>" in final["text"]


async def test_a_team_approval_needing_two_goes_to_every_member_without_a_claim(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("carol@example.com", "U0CAROL")
    fake_slack.set_usergroup("@buyers", ["U0BOB", "U0CAROL"])
    h = await slack_app(STAGES)
    run_id = await start(h, "team")
    [bob_card] = await cards_in(fake_slack, "DU0BOB")
    [_carol_card] = await cards_in(fake_slack, "DU0CAROL")
    task_id = task_of_card(bob_card)
    assert "flowbot_approve" in str(bob_card["blocks"]) and "flowbot_claim" not in str(bob_card["blocks"])
    await asyncio.gather(h.click("U0BOB", "flowbot_approve", task_id),
                         h.click("U0CAROL", "flowbot_approve", task_id))

    async def finished() -> Any:
        run = await h.app.store.get_run(run_id)
        return run if run["status"] == "completed" else None

    run = await eventually(finished, what="the run completed")
    assert sorted(d["by"] for d in run["context"]["decisions"]) == ["U0BOB", "U0CAROL"]


async def test_the_person_who_started_the_run_is_refused(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("carol@example.com", "U0CAROL")
    h = await slack_app(STAGES)
    await start(h, "own", started_by="U0BOB")
    [card] = await cards_in(fake_slack, "DU0BOB")
    await h.click("U0BOB", "flowbot_approve", task_of_card(card))
    assert "You started this run" in await ephemeral(fake_slack, "U0BOB")
    assert await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE status = 'completed' AND kind = 'form'") == 0


async def test_a_timeout_escalation_hands_the_card_over_without_anyone_calling_the_timer(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("carol@example.com", "U0CAROL")
    h = await slack_app(STAGES)  # the real clock: the worker wakes up for the deadline itself
    await start(h, "up")
    [bob_card] = await cards_in(fake_slack, "DU0BOB")
    [update] = await updates_of(fake_slack, "DU0BOB")
    assert "No answer in time: handed to carol@example.com" in update["text"]
    [carol_card] = await cards_in(fake_slack, "DU0CAROL")
    assert task_of_card(carol_card) == task_of_card(bob_card)
    await h.click("U0CAROL", "flowbot_approve", task_of_card(carol_card))

    async def approved() -> Any:
        return await scalar(h.app.store, "SELECT completed_by FROM tasks WHERE id = :t",
                            t=int(task_of_card(carol_card))) == "U0CAROL" or None

    await eventually(approved, what="carol's approval")
