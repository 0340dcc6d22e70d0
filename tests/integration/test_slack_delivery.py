"""Stage effects and assignment DMs through the outbox: delivered after commit, exactly once
through 429 storms, retried stages and a crash, permanent errors recorded on the task."""

from __future__ import annotations

from collections import Counter
from typing import Any

from blockkit import assert_valid_blocks
from support import eventually, scalar, task_row

from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

STAGES = {
    "notify/workflow.py": """
        from engine import Workflow
        workflow = Workflow("notify", title="Notify")
        tell = workflow.script("tell", max_attempts=3)
        post = workflow.script("post")
    """,
    "notify/tell.py": """
        def run(task, ctx):
            ctx.slack.dm(task["user"], f"Hello {task['n']}")
            if task.get("fail_first") and ctx.attempt == 1:
                raise RuntimeError("flaky")
    """,
    "notify/post.py": """
        def run(task, ctx):
            ctx.slack.post(task["channel"], text="Weekly report", blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Weekly report*: all good"}}])
    """,
}


async def start(h: SlackHarness, stage: str, payload: dict[str, Any]) -> tuple[str, int]:
    return await h.app.store.start_run(h.app.registry.get("notify").stage(stage), payload)


def delivered(fake: FakeSlack) -> Counter[str]:
    """Successful chat.postMessage calls, by channel."""
    return Counter(str(c.response["channel"]) for c in fake.calls("chat.postMessage") if c.response.get("ok"))


async def outbox_settled(h: SlackHarness) -> Any:
    async def check() -> Any:
        n = await scalar(h.app.store, "SELECT count(*) FROM outbox WHERE status = 'pending'")
        return n == 0
    return await eventually(check, within=15, what="the outbox emptied")


async def test_a_429_storm_on_post_message_delivers_every_dm_exactly_once(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.rate_limit("chat.postMessage", times=25, retry_after=1)
    h = await slack_app(STAGES)
    users = [f"U0USER{i:02d}" for i in range(20)]
    for i, user in enumerate(users):
        await start(h, "tell", {"user": user, "n": i})
    await outbox_settled(h)
    counts = delivered(fake_slack)
    assert counts == Counter({f"D{u}": 1 for u in users})
    limited = [c for c in fake_slack.calls("chat.postMessage") if c.status == 429]
    assert len(limited) == 25
    # Each 429 cost its effect one attempt, retried after Retry-After; none was given up.
    assert await scalar(h.app.store, "SELECT sum(attempts) FROM outbox") == 20 + 25
    assert await scalar(h.app.store, "SELECT count(*) FROM outbox WHERE status <> 'delivered'") == 0
    for blocks in h.sent_blocks():
        assert_valid_blocks(blocks)


async def test_a_retried_stage_sends_its_message_once(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    _run_id, task_id = await start(h, "tell", {"user": "U0ANN", "n": 1, "fail_first": True})

    async def done() -> Any:
        return (await task_row(h.app.store, task_id))["status"] == "completed"

    await eventually(done, within=20, what="the retried stage completed")
    await outbox_settled(h)
    assert delivered(fake_slack) == Counter({"DU0ANN": 1})
    assert (await task_row(h.app.store, task_id))["attempts"] == 2


async def test_a_crash_between_commit_and_delivery_delivers_once_after_restart(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    # First process: the stage commits its post, but the process dies before the outbox runs.
    first = await slack_app(STAGES, outbox=False)
    _run_id, task_id = await start(first, "post", {"channel": "C0REPORTS"})

    async def committed() -> Any:
        return (await task_row(first.app.store, task_id))["status"] == "completed"

    await eventually(committed, what="the stage committed")
    assert await scalar(first.app.store, "SELECT count(*) FROM outbox WHERE status = 'pending'") == 1
    await first.stop()
    assert fake_slack.calls("chat.postMessage") == []

    # Restart: the committed effect is delivered, once, even with two dispatchers racing.
    second = await slack_app(STAGES)
    third = await slack_app(STAGES)
    await outbox_settled(second)
    assert delivered(fake_slack) == Counter({"C0REPORTS": 1})
    [call] = fake_slack.calls("chat.postMessage")
    assert call.params["text"] == "Weekly report" and "all good" in str(call.params["blocks"])
    assert await scalar(third.app.store, "SELECT status FROM outbox") == "delivered"


async def test_a_permanent_slack_error_is_recorded_on_the_task_and_not_retried(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.fail("chat.postMessage", "channel_not_found", times=None)
    h = await slack_app(STAGES)
    _run_id, task_id = await start(h, "post", {"channel": "C0GONE"})

    async def failed() -> Any:
        return await scalar(h.app.store, "SELECT status FROM outbox") == "failed"

    await eventually(failed, what="the effect failed")
    assert len(fake_slack.calls("chat.postMessage")) == 1
    row = await task_row(h.app.store, task_id)
    assert any("channel_not_found" in line["message"] for line in row["log"])
    assert "C0GONE" in await scalar(h.app.store, "SELECT error FROM outbox")


TEAM_STAGES = {
    "desk/workflow.py": """
        from engine import Team, Workflow
        workflow = Workflow("desk", title="Helpdesk")
        ticket = workflow.form("ticket", assignee=Team("{team}"))
        close = workflow.script("close")
        workflow.transition(ticket, close, on="resolved")
    """,
    "desk/ticket.py": """
        from engine.forms import Facts, Form, LongText
        form = Form("Resolve ticket", [Facts({"Summary": "{summary}"}), LongText("resolution", "What was done?")])
        def run(task, answers, ctx):
            ctx.send("resolved", {**task.payload, **answers})
    """,
    "desk/close.py": """
        def run(task, ctx):
            ctx.run["resolution"] = task["resolution"]
    """,
}


async def test_a_team_task_goes_to_every_member_and_the_first_claim_takes_it(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.set_usergroup("S0HELP", ["U0ANN", "U0BOB"])
    h = await slack_app(TEAM_STAGES)
    run_id, task_id = await h.app.store.start_run(h.app.registry.get("desk").stage("ticket"),
                                                  {"summary": "VPN down", "team": "S0HELP"})

    async def two_cards() -> Any:
        counts = delivered(fake_slack)
        return counts if counts["DU0ANN"] == 1 and counts["DU0BOB"] == 1 else None

    await eventually(two_cards, what="claim cards to both members")
    for call in fake_slack.calls("chat.postMessage"):
        assert_valid_blocks(call.params["blocks"])
        assert [e["action_id"] for b in call.params["blocks"] if b["type"] == "actions"
                for e in b["elements"]] == ["flowbot_claim"]

    # Not a member: told, nothing changes.
    await h.click("U0EVE", "flowbot_claim", str(task_id), channel="C0RANDOM")
    await h.settle()  # (work after the ack runs concurrently: Ann's claim would win the race)
    await h.click("U0ANN", "flowbot_claim", str(task_id), channel="DU0ANN")
    await h.settle()
    await h.click("U0BOB", "flowbot_claim", str(task_id), channel="DU0BOB")
    await h.settle()
    texts = {c.params["user"]: c.params["text"] for c in fake_slack.calls("chat.postEphemeral")}
    assert "Only members of S0HELP" in texts["U0EVE"]
    assert "<@U0ANN> already took this task" in texts["U0BOB"]
    row = await task_row(h.app.store, task_id)
    assert row["assignee"]["claimed_by"] == "U0ANN" and row["status"] == "pending"

    # Bob's card now says who took it; Ann gets the form card with Open.
    async def bob_updated() -> Any:
        return [c for c in fake_slack.calls("chat.update") if c.params["channel"] == "DU0BOB"] or None

    [update] = await eventually(bob_updated, what="Bob's card updated")
    assert "Taken by <@U0ANN>" in str(update.params["blocks"])
    assert_valid_blocks(update.params["blocks"])

    async def ann_form_card() -> Any:
        return delivered(fake_slack)["DU0ANN"] == 2

    await eventually(ann_form_card, what="Ann's form card")
    # Bob may no longer open it; Ann may.
    await h.click("U0BOB", "flowbot_open", str(task_id), channel="DU0BOB")
    await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
    await h.settle()
    assert len(fake_slack.calls("views.open")) == 1
    view = h.last_view()
    resp = await h.submit("U0ANN", view, {"resolution": {"type": "plain_text_input", "value": "Restarted it"}})
    assert resp.status == 200 and not resp.text.strip()

    async def closed() -> Any:
        report = await h.app.store.report(run_id)
        return report if report and report["status"] == "completed" else None

    report = await eventually(closed, what="the run completed")
    assert report["context"]["resolution"] == "Restarted it"


async def test_a_team_channel_gets_one_card_with_claim(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    fake_slack.set_members("C0HELPDESK", ["U0ANN", "U0BOB"])
    h = await slack_app(TEAM_STAGES)
    _run_id, task_id = await h.app.store.start_run(h.app.registry.get("desk").stage("ticket"),
                                                  {"summary": "Printer", "team": "C0HELPDESK"})

    async def card() -> Any:
        return delivered(fake_slack) or None

    assert await eventually(card, what="the channel card") == Counter({"C0HELPDESK": 1})
    await h.click("U0BOB", "flowbot_claim", str(task_id), channel="C0HELPDESK")
    await h.settle()

    async def claimed() -> Any:
        return (await task_row(h.app.store, task_id))["assignee"].get("claimed_by")

    assert await eventually(claimed, what="the claim") == "U0BOB"


async def test_a_team_given_by_handle_is_resolved_through_usergroups_list(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    group = fake_slack.set_usergroup("helpdesk", ["U0ANN", "U0BOB"])
    h = await slack_app(TEAM_STAGES)
    desk = h.app.registry.get("desk").stage("ticket")
    await h.app.store.start_run(desk, {"summary": "VPN down", "team": "@helpdesk"})

    async def two_cards() -> Any:
        counts = delivered(fake_slack)
        return counts if counts["DU0ANN"] == 1 and counts["DU0BOB"] == 1 else None

    await eventually(two_cards, what="claim cards to both members of @helpdesk")
    # Slack's usergroups.users.list takes the S… id only (the fake refuses a handle, as Slack does).
    assert [c.params["usergroup"] for c in fake_slack.calls("usergroups.users.list")] == [group]
    assert len(fake_slack.calls("usergroups.list")) == 1

    # An unknown handle fails for good, with a clear error, and nobody gets a card.
    _run_id, ghost_task = await h.app.store.start_run(desk, {"summary": "Printer", "team": "@ghosts"})

    async def failed() -> Any:
        return await scalar(h.app.store, "SELECT error FROM outbox WHERE task_id = :t AND status = 'failed'",
                            t=ghost_task)

    assert "no Slack user group '@ghosts'" in await eventually(failed, what="the assignment failed")
    assert sum(delivered(fake_slack).values()) == 2
    assert all(c.params["usergroup"] == group for c in fake_slack.calls("usergroups.users.list"))


WAKE_STAGES = {
    "wake/workflow.py": """
        from engine import Workflow
        workflow = Workflow("wake", title="Wake")
        review = workflow.form("review", assignee="{who}")
        tell = workflow.script("tell")
    """,
    "wake/review.py": """
        from engine.forms import Approval

        def form(task):
            return Approval("Review", {"Item": "{item}"})

        def run(task, answers, ctx):
            pass
    """,
    "wake/tell.py": """
        def run(task, ctx):
            ctx.slack.dm(task["who"], "Your thing was approved")
    """,
}


async def test_assignment_dms_and_stage_messages_leave_at_the_commit_not_at_the_next_poll(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    import asyncio

    from engine.runtime.outbox import OutboxDispatcher

    h = await slack_app(WAKE_STAGES, outbox=False)
    # A poll a minute apart: only the commit's NOTIFY can bring these DMs within seconds.
    dispatcher = OutboxDispatcher(h.app.db, h.app.outbox_handlers, clock=h.app.store.clock, poll_interval=60)
    h.tasks.append(asyncio.create_task(dispatcher.run(h.stop_event)))
    await asyncio.sleep(0.5)  # listening, its first pass over the (empty) outbox done
    wf = h.app.registry.get("wake")

    await h.app.store.start_run(wf.stage("review"), {"who": "U0ANN", "item": "laptop"})
    await eventually(lambda: asyncio.sleep(0, delivered(fake_slack)["DU0ANN"] == 1), within=3,
                     what="the assignment DM (a commit creating only a form task)")

    await h.app.store.start_run(wf.stage("tell"), {"who": "U0BOB"})
    await eventually(lambda: asyncio.sleep(0, delivered(fake_slack)["DU0BOB"] == 1), within=3,
                     what="a stage's DM (a completion carrying an effect)")

    async with h.app.db.transaction() as tx:
        await h.app.store.add_effects(tx, [("slack.dm", {"user": "U0CAT", "text": "hi"}, None, None)],
                                      h.app.store.clock())
    await eventually(lambda: asyncio.sleep(0, delivered(fake_slack)["DU0CAT"] == 1), within=3,
                     what="an effect written on its own")
