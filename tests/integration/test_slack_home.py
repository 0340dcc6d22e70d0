"""The App Home tab: my pending tasks with Open buttons and my recent runs, published when the
tab opens and again whenever a task of mine is assigned, completed, claimed or reassigned."""

from __future__ import annotations

import json
from typing import Any

from blockkit import assert_valid_home, assert_valid_modal
from support import eventually, scalar

from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

STAGES = {
    "order/workflow.py": """
        from engine import Workflow
        workflow = Workflow("order", title="Order approval")
        place = workflow.script("place")
        check = workflow.form("check", assignee="{approver}")
        workflow.transition(place, check, on="order")
    """,
    "order/place.py": """
        def run(task, ctx):
            ctx.send("order", task.payload)
    """,
    "order/check.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Order of {item}", {"Item": "{item}"})
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
    """,
}


def publishes(fake: FakeSlack, user: str) -> list[dict[str, Any]]:
    """Every Home view published for ``user`` (as sent), oldest first."""
    return [c.params["view"] for c in fake.calls("views.publish") if c.params.get("user_id") == user]


async def next_publish(fake: FakeSlack, user: str, after: int) -> dict[str, Any]:
    """The first Home view published for ``user`` after ``after`` earlier ones (validated)."""

    async def published() -> Any:
        views = publishes(fake, user)
        return views[after] if len(views) > after else None

    view: dict[str, Any] = await eventually(published, what=f"a Home publish for {user}")
    assert_valid_home(view)
    return view


async def place(h: SlackHarness, item: str, approver: str = "U0BOB") -> str:
    stage = h.app.registry.get("order").stage("place")
    run_id, _ = await h.app.store.start_run(stage, {"item": item, "approver": approver},
                                            trigger={"kind": "slack", "user": "U0ANN"})
    return run_id


def open_buttons(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b["accessory"] for b in view["blocks"] if b.get("accessory", {}).get("type") == "button"]


async def test_opening_the_tab_publishes_my_tasks_and_runs(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    resp = await h.event({"type": "app_home_opened", "user": "U0BOB", "channel": "D0BOB", "tab": "home"})
    assert resp.status == 200
    empty = await next_publish(fake_slack, "U0BOB", 0)
    text = json.dumps(empty)
    assert "Nothing waits for you" in text and "No runs yet" in text
    run_id = await place(h, "chairs")
    await next_publish(fake_slack, "U0BOB", 1)  # the assignment republished it
    await h.event({"type": "app_home_opened", "user": "U0BOB", "channel": "D0BOB", "tab": "home"})
    view = await next_publish(fake_slack, "U0BOB", 2)
    [button] = open_buttons(view)
    task_id = int(await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'check'"))
    assert button["action_id"] == f"flowbot_open.{task_id}" and button["value"] == str(task_id)
    assert "Order of chairs" in json.dumps(view) and run_id[:8] in json.dumps(view)
    # the starter sees the run among theirs
    await h.event({"type": "app_home_opened", "user": "U0ANN", "channel": "D0ANN", "tab": "home"})
    ann = await next_publish(fake_slack, "U0ANN", 0)
    assert run_id[:8] in json.dumps(ann) and open_buttons(ann) == []
    # the Messages tab publishes nothing
    await h.event({"type": "app_home_opened", "user": "U0EVE", "channel": "D0EVE", "tab": "messages"})
    assert publishes(fake_slack, "U0EVE") == []


async def test_home_follows_assignment_and_completion(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await place(h, "desk")
    assigned = await next_publish(fake_slack, "U0BOB", 0)
    [button] = open_buttons(assigned)
    card = await eventually(lambda: _card(fake_slack), what="Bob's card")
    resp = await h.click("U0BOB", "flowbot_approve", button["value"], channel="DU0BOB", message_ts=card)
    assert resp.status == 200
    done = await next_publish(fake_slack, "U0BOB", 1)
    assert open_buttons(done) == [] and "Nothing waits for you" in json.dumps(done)
    assert "completed" in json.dumps(done)


async def _card(fake: FakeSlack) -> str | None:
    calls = [c for c in fake.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB"]
    return str(calls[0].response["ts"]) if calls else None


async def test_open_button_on_the_home_tab_opens_the_form(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await place(h, "lamp")
    view = await next_publish(fake_slack, "U0BOB", 0)
    [button] = open_buttons(view)
    home = {**view, "id": "VHOME"}
    resp = await h.click("U0BOB", button["action_id"], button["value"], view=home)
    assert resp.status == 200
    await eventually(lambda: _opened(fake_slack), what="the modal")
    modal = fake_slack.calls("views.open")[-1].params["view"]
    assert_valid_modal(modal)
    assert modal["type"] == "modal" and "lamp" in json.dumps(modal)
    # someone else clicking the same button gets a notice, not the form
    resp = await h.click("U0EVE", button["action_id"], button["value"], view=home)
    assert resp.status == 200

    async def refused() -> Any:
        views = [c.params["view"] for c in fake_slack.calls("views.open")]
        return len(views) >= 2 and views[-1]

    notice = await eventually(refused, what="a notice for Eve")
    assert "only they can act on it" in json.dumps(notice)
    assert int(await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE status = 'pending'")) == 1


async def _opened(fake: FakeSlack) -> bool:
    return bool(fake.calls("views.open"))


async def test_a_long_home_stays_within_slacks_limits(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES, outbox=False)
    for i in range(30):
        await place(h, f"item {i}")

    async def all_assigned() -> bool:
        return int(await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE stage = 'check'")) == 30

    await eventually(all_assigned, what="30 tasks for Bob")
    from bot.home import HOME_TASKS_SHOWN, refresh_home

    view = await refresh_home(h.ctx, "U0BOB")
    assert_valid_home(view)
    assert len(open_buttons(view)) == HOME_TASKS_SHOWN
    assert f"and {30 - HOME_TASKS_SHOWN} more" in json.dumps(view)
    assert len(view["blocks"]) <= 100


TEAM_STAGES = {
    "triage/workflow.py": """
        from engine import Team, Workflow
        workflow = Workflow("triage", title="Triage")
        ask = workflow.script("ask")
        sort = workflow.form("sort", assignee=Team("@support"))
        workflow.transition(ask, sort)
    """,
    "triage/ask.py": """
        def run(task, ctx):
            ctx.send("ticket", task.payload)
    """,
    "triage/sort.py": """
        from engine.forms import Form, Text
        form = Form("Sort {subject}", [Text("label", "Label")])
        def run(task, answers, ctx):
            pass
    """,
}


async def test_a_team_task_is_on_every_members_home_until_claimed(slack_app: StartSlack,
                                                                  fake_slack: FakeSlack) -> None:
    fake_slack.set_usergroup("support", ["U0SAM", "U0TOM"])
    h = await slack_app(TEAM_STAGES)
    await h.app.store.start_run(h.app.registry.get("triage").stage("ask"), {"subject": "printer"})
    sam = await next_publish(fake_slack, "U0SAM", 0)
    tom = await next_publish(fake_slack, "U0TOM", 0)
    [button] = open_buttons(sam)
    assert open_buttons(tom) == [button] and "Sort printer" in json.dumps(sam)
    tom_card = next(c for c in fake_slack.calls("chat.postMessage") if c.response.get("channel") == "DU0TOM")
    await h.click("U0TOM", "flowbot_claim", button["value"], channel="DU0TOM", message_ts=tom_card.response["ts"])

    async def sams_home_emptied() -> Any:
        views = publishes(fake_slack, "U0SAM")
        return len(views) > 1 and open_buttons(views[-1]) == []

    await eventually(sams_home_emptied, what="Sam's Home without the claimed task")

    async def toms_home_kept() -> Any:
        views = publishes(fake_slack, "U0TOM")
        return len(views) > 1 and open_buttons(views[-1]) == [button]

    await eventually(toms_home_kept, what="Tom's Home with his task")


async def test_a_burst_of_refreshes_publishes_once_at_once_and_once_more_after_the_interval(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    import asyncio
    import time

    from bot.home import REFRESHES_STATE, HomeRefreshes, refresh_quietly

    h = await slack_app(STAGES, worker=False, outbox=False)
    h.app.state[REFRESHES_STATE] = HomeRefreshes(h.ctx, interval=0.5)
    began = time.monotonic()
    await asyncio.gather(*(refresh_quietly(h.ctx, "U0BOB") for _ in range(20)))
    assert len(publishes(fake_slack, "U0BOB")) == 1  # the first change: at once
    await refresh_quietly(h.ctx, "U0BOB")  # still within the interval: gathered with the others
    await h.ctx.follow_ups.idle(optional=True)
    assert len(publishes(fake_slack, "U0BOB")) == 2  # one more for everything asked meanwhile
    assert time.monotonic() - began >= 0.5  # ... at the end of the interval
    await refresh_quietly(h.ctx, "U0ANN")  # other people have intervals of their own
    assert len(publishes(fake_slack, "U0ANN")) == 1
    await asyncio.sleep(0.6)
    await refresh_quietly(h.ctx, "U0BOB")  # after a quiet interval: at once again
    assert len(publishes(fake_slack, "U0BOB")) == 3


async def test_a_pending_home_refresh_is_cancelled_when_the_app_closes(slack_app: StartSlack,
                                                                       fake_slack: FakeSlack) -> None:
    import time

    from bot.home import REFRESHES_STATE, HomeRefreshes, refresh_quietly

    h = await slack_app(STAGES, worker=False, outbox=False)
    h.app.state[REFRESHES_STATE] = HomeRefreshes(h.ctx, interval=30)
    await refresh_quietly(h.ctx, "U0BOB")
    await refresh_quietly(h.ctx, "U0BOB")  # due in 30 s
    assert h.ctx.follow_ups.running == 1
    began = time.monotonic()
    await h.ctx.follow_ups.close()
    assert time.monotonic() - began < 5 and h.ctx.follow_ups.running == 0
    assert len(publishes(fake_slack, "U0BOB")) == 1
