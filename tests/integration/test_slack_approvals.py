"""Approvals in Slack: a DM with Approve / Decline, authorization, races, the card updated in place."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from blockkit import assert_valid_blocks, assert_valid_modal
from support import eventually, scalar, task_row

from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

STAGES = {
    "purchase/workflow.py": """
        from engine import BearerAuth, Workflow
        workflow = Workflow("purchase", title="Purchase approval")
        intake = workflow.hook("intake", path="purchase", auth=BearerAuth(secret_env="PURCHASE_HOOK_TOKEN"))
        request = workflow.script("request")
        review = workflow.form("review", assignee="{manager}")
        buy = workflow.script("buy")
        refuse = workflow.script("refuse")
        workflow.transition(request, review, on="purchase")
        workflow.transition(intake, review, on="purchase")
        workflow.transition(review, buy, on="approved")
        workflow.transition(review, refuse, on="declined")
    """,
    "purchase/intake.py": """
        async def run(request, ctx):
            ctx.send("purchase", await request.json())
            return {"accepted": True}
    """,
    "purchase/request.py": """
        def run(task, ctx):
            ctx.send("purchase", task.payload)
    """,
    "purchase/review.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Purchase approval", {"Item": "{item}", "Amount": "{amount} EUR"},
                            text="A purchase waits for you.")
        def run(task, answers, ctx):
            ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
    """,
    "purchase/buy.py": """
        def run(task, ctx):
            ctx.run["bought"] = task["item"]
            ctx.slack.dm(task["requester"], "Your purchase was approved")
    """,
    "purchase/refuse.py": """
        def run(task, ctx):
            ctx.run["refused"] = task["comment"]
    """,
}

PAYLOAD = {"item": "Laptop", "amount": 1200, "manager": "bob@example.com", "requester": "U0ANN"}


async def start_purchase(h: SlackHarness, payload: dict[str, Any] | None = None) -> str:
    stage = h.app.registry.get("purchase").stage("request")
    run_id, _ = await h.app.store.start_run(stage, payload or PAYLOAD)
    return run_id


async def dm_card(fake: FakeSlack, channel: str) -> dict[str, Any]:
    """The first card posted to ``channel`` (waits for it)."""

    async def posted() -> Any:
        calls = [c for c in fake.calls("chat.postMessage") if c.response.get("channel") == channel
                 and c.response.get("ok")]
        return calls[0] if calls else None

    call = await eventually(posted, what=f"a message in {channel}")
    return dict(call.params)


def button_values(blocks: list[dict[str, Any]]) -> dict[str, str]:
    return {e["action_id"]: e["value"] for b in blocks if b["type"] == "actions" for e in b["elements"]}


async def run_status(h: SlackHarness, run_id: str, *statuses: str) -> dict[str, Any]:
    async def done() -> Any:
        report = await h.app.store.report(run_id)
        return report if report and report["status"] in statuses else None

    result: dict[str, Any] = await eventually(done, what=f"run {statuses}")
    return result


async def ephemerals(fake: FakeSlack, user: str, n: int = 1) -> list[str]:
    async def got() -> Any:
        texts = [c.params["text"] for c in fake.calls("chat.postEphemeral") if c.params.get("user") == user]
        return texts if len(texts) >= n else None

    result: list[str] = await eventually(got, what=f"{n} ephemeral(s) to {user}")
    return result


async def test_an_approval_goes_from_a_hook_to_a_dm_to_a_button_to_the_next_stage(
        slack_app: StartSlack, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PURCHASE_HOOK_TOKEN", "hook-secret")
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(STAGES)
    async with h.session.post(h.base_url + "/hooks/purchase", json=PAYLOAD,
                              headers={"Authorization": "Bearer hook-secret"}) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json()) == {"accepted": True}
    run_id = str(await scalar(h.app.store, "SELECT id FROM runs"))
    card = await dm_card(fake_slack, "DU0BOB")
    assert_valid_blocks(card["blocks"])
    assert "Laptop" in str(card["blocks"]) and "1200 EUR" in str(card["blocks"])
    buttons = button_values(card["blocks"])
    assert set(buttons) == {"flowbot_approve", "flowbot_decline", "flowbot_open", "flowbot_reassign"}
    assert len(set(buttons.values())) == 1
    task_id = int(buttons["flowbot_approve"])
    await run_status(h, run_id, "waiting")

    resp = await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB")
    assert resp.status == 200
    report = await run_status(h, run_id, "completed")
    assert report["context"]["bought"] == "Laptop"
    assert [s["stage"] for s in report["steps"]] == ["review", "buy"]  # a hook run starts at its target
    assert await scalar(h.app.store, "SELECT trigger->>'kind' FROM runs") == "hook"
    assert (await task_row(h.app.store, task_id))["completed_by"] == "U0BOB"

    # The card is updated in place: outcome instead of buttons.
    async def updated() -> Any:
        return [c for c in fake_slack.calls("chat.update") if c.params.get("ts") == "1700000000.000001"] or None

    [update] = await eventually(updated, what="the card updated")
    blocks = update.params["blocks"]
    assert_valid_blocks(blocks)
    assert not any(b["type"] == "actions" for b in blocks)
    assert "Approved by <@U0BOB>" in str(blocks)
    # The next stage's ctx.slack.dm went out through the outbox, once.
    await dm_card(fake_slack, "DU0ANN")
    assert len([c for c in fake_slack.calls("chat.postMessage") if c.response.get("channel") == "DU0ANN"]) == 1
    # The email was looked up once, though authorization resolved it again.
    assert len(fake_slack.calls("users.lookupByEmail")) == 1


async def test_someone_who_is_not_the_assignee_is_told_and_nothing_changes(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(STAGES)
    run_id = await start_purchase(h)
    card = await dm_card(fake_slack, "DU0BOB")
    task_id = int(button_values(card["blocks"])["flowbot_approve"])
    for action in ("flowbot_approve", "flowbot_decline", "flowbot_open", "flowbot_reassign"):
        resp = await h.click("U0EVE", action, str(task_id), channel="C0SHARED")
        assert resp.status == 200
    texts = await ephemerals(fake_slack, "U0EVE", 4)
    # The assignee's email resolves to a Slack user: named as a mention, not as the address.
    assert all(t == "This task is assigned to <@U0BOB>: only they can act on it. Nothing was changed." for t in texts)
    await asyncio.sleep(0.2)
    assert (await task_row(h.app.store, task_id))["status"] == "pending"
    assert (await h.app.store.report(run_id) or {})["status"] == "waiting"
    assert fake_slack.calls("views.open") == []


async def test_two_approvers_racing_produce_one_completion_and_the_loser_is_told(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("cat@example.com", "U0CAT")
    h = await slack_app(STAGES)
    run_id = await start_purchase(h, {**PAYLOAD, "manager": "bob@example.com"})
    card = await dm_card(fake_slack, "DU0BOB")
    task_id = int(button_values(card["blocks"])["flowbot_approve"])
    # Both assignees: widen the task's assignee list as an "any of" rule would.
    from engine.store import queries

    async with h.app.db.transaction() as tx:
        await tx.execute(queries.SET_TASK_ASSIGNEE, {"id": task_id, "assignee": {"users": ["U0BOB", "U0CAT"]}})
    r1, r2 = await asyncio.gather(
        h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB"),
        h.click("U0CAT", "flowbot_approve", str(task_id), channel="DU0CAT"),
    )
    assert r1.status == r2.status == 200
    report = await run_status(h, run_id, "completed")
    winner = (await task_row(h.app.store, task_id))["completed_by"]
    assert winner in ("U0BOB", "U0CAT")
    loser = "U0CAT" if winner == "U0BOB" else "U0BOB"
    [text] = await ephemerals(fake_slack, loser)
    assert f"already completed by <@{winner}>" in text
    assert [s["stage"] for s in report["steps"]] == ["request", "review", "buy"]
    await h.settle()
    assert await scalar(h.app.store, "SELECT count(*) FROM task_events WHERE task_id = :t AND to_status = 'completed'",
                        t=task_id) == 1


async def test_an_assignee_whose_email_is_not_in_slack_is_named_by_the_email(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(STAGES)
    await start_purchase(h)
    card = await dm_card(fake_slack, "DU0BOB")
    task_id = int(button_values(card["blocks"])["flowbot_approve"])
    from engine.store import queries

    async with h.app.db.transaction() as tx:
        await tx.execute(queries.SET_TASK_ASSIGNEE, {"id": task_id, "assignee": {"users": ["nobody@example.com"]}})
    await h.click("U0EVE", "flowbot_approve", str(task_id), channel="C0SHARED")
    [text] = await ephemerals(fake_slack, "U0EVE")
    assert text == "This task is assigned to nobody@example.com: only they can act on it. Nothing was changed."


async def test_a_double_click_on_approve_completes_once_and_the_second_is_told_it_was_done(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(STAGES)
    run_id = await start_purchase(h)
    card = await dm_card(fake_slack, "DU0BOB")
    task_id = button_values(card["blocks"])["flowbot_approve"]
    responses = await asyncio.gather(*(h.click("U0BOB", "flowbot_approve", task_id, channel="DU0BOB")
                                       for _ in range(4)))
    assert [r.status for r in responses] == [200] * 4
    report = await run_status(h, run_id, "completed")
    assert [s["stage"] for s in report["steps"]] == ["request", "review", "buy"]
    texts = await ephemerals(fake_slack, "U0BOB", 3)
    # The same person's own answer won: they are told it was recorded, never that it was lost.
    assert all(t.startswith("Your answer was already recorded") and "not recorded" not in t for t in texts), texts


async def test_decline_asks_for_a_comment_in_a_modal_and_requires_it(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(STAGES)
    run_id = await start_purchase(h)
    card = await dm_card(fake_slack, "DU0BOB")
    task_id = button_values(card["blocks"])["flowbot_decline"]
    await h.click("U0BOB", "flowbot_decline", task_id, channel="DU0BOB")
    await eventually(lambda: _async(fake_slack.calls("views.open")), what="the decline modal")
    view = h.last_view()
    assert_valid_modal(h.sent_modals()[-1])
    assert (await task_row(h.app.store, int(task_id)))["status"] == "pending"

    empty = await h.submit("U0BOB", view, {"comment": {"type": "plain_text_input", "value": None}})
    assert empty.status == 200
    assert empty.json["response_action"] == "errors" and "comment" in empty.json["errors"]
    assert (await task_row(h.app.store, int(task_id)))["status"] == "pending"

    ok = await h.submit("U0BOB", view, {"comment": {"type": "plain_text_input", "value": "Too expensive"}})
    assert ok.status == 200 and not ok.text.strip()
    report = await run_status(h, run_id, "completed")
    assert report["context"]["refused"] == "Too expensive"

    async def updated() -> Any:
        return fake_slack.calls("chat.update") or None

    [update] = await eventually(updated, what="the card updated")
    assert "Declined by <@U0BOB>" in str(update.params["blocks"]) and "Too expensive" in str(update.params["blocks"])


async def test_decline_opens_its_comment_modal_at_once_even_while_acks_are_due(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(STAGES)
    await start_purchase(h)
    card = await dm_card(fake_slack, "DU0BOB")
    task_id = button_values(card["blocks"])["flowbot_decline"]
    # Other requests awaiting their ack hold after-ack work back (up to a second): the modal must
    # not wait behind them, its trigger id expires 3 s after the click.
    with h.ctx.priority.urgent():
        await h.click("U0BOB", "flowbot_decline", task_id, channel="DU0BOB")
        await eventually(lambda: _async(fake_slack.calls("views.open")), within=0.6, interval=0.02,
                         what="the decline modal while acks are due")


async def _async(value: Any) -> Any:
    return value


BIG_STAGES = {
    "big/workflow.py": """
        from engine import Workflow
        workflow = Workflow("big", title="A workflow with a very long title " + "x" * 200)
        review = workflow.form("review", assignee="U0BOB")
    """,
    "big/review.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Big approval", {f"Fact {i}": "{v%d}" % i for i in range(60)}, text="*" * 5000)
        def run(task, answers, ctx):
            pass
    """,
}


async def test_a_card_with_a_huge_payload_stays_within_slack_limits(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(BIG_STAGES)
    payload = {f"v{i}": "y" * 3000 + "<&>" for i in range(60)}
    _run, task_id = await h.app.store.start_run(h.app.registry.get("big").stage("review"), payload)
    card = await dm_card(fake_slack, "DU0BOB")
    assert_valid_blocks(card["blocks"])
    assert len(card["blocks"]) <= 50
    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB")

    async def updated() -> Any:
        return fake_slack.calls("chat.update") or None

    [update] = await eventually(updated, what="the card updated")
    assert_valid_blocks(update.params["blocks"])


async def test_an_unknown_assignee_email_is_recorded_on_the_task(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await start_purchase(h, {**PAYLOAD, "manager": "nobody@example.com"})

    async def failed() -> Any:
        return await scalar(h.app.store, "SELECT error FROM outbox WHERE kind = 'form.assigned' AND status = 'failed'")

    error = await eventually(failed, what="the assignment failed")
    assert "no Slack user with the email 'nobody@example.com'" in error
    task_id = await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'review'")
    row = await task_row(h.app.store, task_id)
    assert row["status"] == "pending" and any("nobody@example.com" in line["message"] for line in row["log"])
    assert fake_slack.calls("chat.postMessage") == []


LIST_STAGES = {
    "pair/workflow.py": """
        from engine import Workflow
        workflow = Workflow("pair", title="Two approvers")
        review = workflow.form("review", assignee=["{manager}", "U0CAT"])
    """,
    "pair/review.py": """
        from engine.forms import Approval
        form = Approval("Either of you", {"Item": "{item}"})
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
    """,
}


async def test_a_list_of_assignees_each_get_a_dm_and_every_card_shows_who_answered(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.add_user("bob@example.com", "U0BOB")
    h = await slack_app(LIST_STAGES)
    _run, task_id = await h.app.store.start_run(h.app.registry.get("pair").stage("review"),
                                                {"item": "Desk", "manager": "bob@example.com"})
    await dm_card(fake_slack, "DU0BOB")
    cat_card = await dm_card(fake_slack, "DU0CAT")
    assert_valid_blocks(cat_card["blocks"])
    await h.click("U0CAT", "flowbot_approve", str(task_id), channel="DU0CAT")

    async def both_updated() -> Any:
        channels = {c.params["channel"] for c in fake_slack.calls("chat.update")}
        return channels if channels == {"DU0BOB", "DU0CAT"} else None

    await eventually(both_updated, what="both cards updated")
    for call in fake_slack.calls("chat.update"):
        assert "Approved by <@U0CAT>" in str(call.params["blocks"])
        assert_valid_blocks(call.params["blocks"])


async def test_a_refusal_for_a_button_in_a_view_is_shown_in_a_notice_modal(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(LIST_STAGES)
    _run, task_id = await h.app.store.start_run(h.app.registry.get("pair").stage("review"),
                                                {"item": "Desk", "manager": "U0BOB"})
    resp = await h.click("U0EVE", "flowbot_approve", str(task_id), view={"id": "V0HOME", "type": "home"})
    assert resp.status == 200
    await h.settle()
    [notice] = h.sent_modals()
    assert_valid_modal(notice)
    assert "only they can act on it" in str(notice["blocks"]) and "<@U0BOB>" in str(notice["blocks"])
    assert (await task_row(h.app.store, task_id))["status"] == "pending"
