"""Reminders and escalation of form tasks nobody answers (driven by a fake clock), safe across
processes; and the configuration of both, validated when workflows load."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from blockkit import assert_valid_blocks
from support import FakeClock, eventually, scalar

from bot.reminders import deliver_reminder
from engine.errors import FlowbotError, WorkflowLoadError
from engine.people.followups import ESCALATED, REMINDER, Reminders, ReminderSettings, follow_ups
from engine.settings import Settings
from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

HOUR = 3600

STAGES = {
    "refund/workflow.py": """
        from engine import Team, Workflow
        workflow = Workflow("refund", title="Refund")
        ask = workflow.script("ask")
        review = workflow.form("review", assignee="{approver}", remind_after=3600,
                               escalate_after=4 * 3600, escalate_to="{lead}")
        triage = workflow.form("triage", assignee=Team("@support"), remind_after=600)
        quiet = workflow.form("quiet", assignee="U0BOB")
        workflow.transition(ask, review, on="refund")
        workflow.transition(ask, triage, on="triage")
        workflow.transition(ask, quiet, on="quiet")
    """,
    "refund/ask.py": """
        def run(task, ctx):
            ctx.send(task.get("route", "refund"), task.payload)
    """,
    "refund/review.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Refund of {amount} EUR", {"Amount": "{amount}"})
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
    """,
    "refund/triage.py": """
        from engine.forms import Form, Text
        form = Form("Triage", [Text("label", "Label")])
        def run(task, answers, ctx):
            pass
    """,
    "refund/quiet.py": """
        from engine.forms import Form, Text
        form = Form("Quiet", [Text("x", "X")])
        def run(task, answers, ctx):
            pass
    """,
}


@pytest.fixture
def people(fake_slack: FakeSlack) -> FakeSlack:
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("lea@example.com", "U0LEA")
    fake_slack.set_usergroup("support", ["U0SAM", "U0TOM"])
    return fake_slack


async def ask(h: SlackHarness, route: str = "refund", **payload: Any) -> int:
    """Start a run whose form task lands at ``route``'s stage; its task id once assigned."""
    stage = h.app.registry.get("refund").stage("ask")
    body = {"amount": 30, "approver": "bob@example.com", "lead": "lea@example.com", "route": route, **payload}
    run_id, _ = await h.app.store.start_run(stage, body)

    async def task() -> Any:
        return await scalar(h.app.store, "SELECT id FROM tasks WHERE run_id = :r AND kind = 'form'", r=run_id)

    task_id = int(await eventually(task, what="the form task"))

    async def carded() -> bool:
        n = await scalar(h.app.store, "SELECT count(*) FROM slack_task_messages WHERE task_id = :t", t=task_id)
        return int(n) > 0

    await eventually(carded, what="its cards")
    return task_id


async def effects(h: SlackHarness, kind: str) -> list[int]:
    rows = await h.app.db.fetch_all(_sql("SELECT task_id FROM outbox WHERE kind = :k ORDER BY id"), {"k": kind})
    return [int(r["task_id"]) for r in rows]


def _sql(text: str) -> Any:
    from sqlalchemy import text as sa_text

    return sa_text(text)


def thread_replies(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return [c.params for c in fake.calls("chat.postMessage")
            if c.response.get("channel") == channel and c.params.get("thread_ts")]


async def test_one_reminder_after_the_delay_under_the_card(slack_app: StartSlack, people: FakeSlack) -> None:
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock)
    task_id = await ask(h)
    reminders = Reminders(h.app)
    clock.advance(HOUR - 1)
    assert (await reminders.tick()).reminded == []
    clock.advance(1)
    done = await reminders.tick()
    assert done.reminded == [task_id] and done.escalated == []
    assert (await reminders.tick()).reminded == []  # once, ever
    replies = await eventually(lambda: _replies(people, "DU0BOB"), what="the reminder")
    card_ts = next(c.response["ts"] for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB")
    assert replies[0]["thread_ts"] == card_ts
    assert_valid_blocks(replies[0]["blocks"])
    assert "Reminder: *Refund of 30 EUR*" in replies[0]["text"]
    assert replies[0]["blocks"][-1]["elements"][0]["action_id"] == "flowbot_open"
    clock.advance(HOUR)
    assert (await reminders.tick()).reminded == []
    assert await effects(h, REMINDER) == [task_id]


async def _replies(fake: FakeSlack, channel: str) -> list[dict[str, Any]]:
    return thread_replies(fake, channel)


async def test_answered_tasks_get_no_reminder(slack_app: StartSlack, people: FakeSlack) -> None:
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock)
    task_id = await ask(h)
    card = next(c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB")
    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=card.response["ts"])

    async def completed() -> bool:
        return await scalar(h.app.store, "SELECT status FROM tasks WHERE id = :t", t=task_id) == "completed"

    await eventually(completed, what="the approval")
    clock.advance(5 * HOUR)
    done = await Reminders(h.app).tick()
    assert done.reminded == [] and done.escalated == []


async def test_passes_in_many_processes_remind_once(slack_app: StartSlack, people: FakeSlack) -> None:
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock, outbox=False)
    ids = [await _ask_quick(h) for _ in range(5)]
    clock.advance(HOUR)
    passes = await asyncio.gather(*(Reminders(h.app).tick() for _ in range(4)))
    reminded = sorted(t for p in passes for t in p.reminded)
    assert reminded == sorted(ids)
    assert sorted(await effects(h, REMINDER)) == sorted(ids)


async def _ask_quick(h: SlackHarness) -> int:
    stage = h.app.registry.get("refund").stage("review")
    _run, task_id = await h.app.store.start_run(stage, {"amount": 5, "approver": "U0BOB", "lead": "U0LEA"})
    return task_id


async def test_escalation_hands_the_task_to_the_fallback(slack_app: StartSlack, people: FakeSlack) -> None:
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock)
    task_id = await ask(h)
    reminders = Reminders(h.app)
    clock.advance(4 * HOUR)
    done = await reminders.tick()
    assert done.escalated == [task_id] and done.reminded == []  # escalated now: no reminder too
    assignee = await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :t", t=task_id)
    assert assignee == {"users": ["lea@example.com"]}
    reason = await scalar(h.app.store, "SELECT reason FROM task_events WHERE task_id = :t ORDER BY id DESC LIMIT 1",
                          t=task_id)
    assert reason.startswith("escalated to lea@example.com")

    async def handed() -> Any:
        lea = [c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0LEA"]
        bob = [c for c in people.calls("chat.update") if c.params.get("channel") == "DU0BOB"]
        return lea and bob

    await eventually(handed, what="Lea's card and Bob's resolved card")
    update = [c for c in people.calls("chat.update") if c.params.get("channel") == "DU0BOB"][-1].params
    assert_valid_blocks(update["blocks"])
    assert "No answer in time: handed to lea@example.com" in json.dumps(update["blocks"])
    assert (await reminders.tick()).escalated == []
    # Bob no longer may answer; Lea does
    lea_card = next(c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0LEA")
    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB")
    await h.click("U0LEA", "flowbot_approve", str(task_id), channel="DU0LEA", message_ts=lea_card.response["ts"])

    async def by_lea() -> Any:
        return await scalar(h.app.store, "SELECT completed_by FROM tasks WHERE id = :t AND status = 'completed'",
                            t=task_id)

    assert await eventually(by_lea, what="Lea's approval") == "U0LEA"


async def test_a_failing_escalation_rule_is_recorded_once(slack_app: StartSlack, people: FakeSlack) -> None:
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock, outbox=False)
    stage = h.app.registry.get("refund").stage("review")
    _run, task_id = await h.app.store.start_run(stage, {"amount": 5, "approver": "U0BOB"})  # no "lead"
    clock.advance(4 * HOUR)
    reminders = Reminders(h.app)
    assert (await reminders.tick()).escalated == [task_id]
    assert (await reminders.tick()).escalated == []
    assert await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :t", t=task_id) == {"users": ["U0BOB"]}
    log = await scalar(h.app.store, "SELECT log FROM tasks WHERE id = :t", t=task_id)
    assert "escalation failed" in log[-1]["message"] and "lead" in log[-1]["message"]


async def test_team_reminders_reply_under_each_claim_card_once(slack_app: StartSlack, people: FakeSlack) -> None:
    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock, outbox=False)
    stage = h.app.registry.get("refund").stage("triage")
    _run, task_id = await h.app.store.start_run(stage, {"amount": 1})
    from bot.delivery import deliver_assignment

    await deliver_assignment(h.ctx, task_id)  # the claim cards to Sam and Tom
    clock.advance(600)
    assert (await Reminders(h.app).tick()).reminded == [task_id]
    row = dict(await h.app.db.fetch_one(_sql("SELECT * FROM outbox WHERE kind = :k"), {"k": REMINDER}))
    first = await deliver_reminder(h.ctx, row)
    again = await deliver_reminder(h.ctx, row)  # a retried delivery sends nothing twice
    assert first == again == {"sent": ["claim:U0SAM", "claim:U0TOM"]}
    for channel in ("DU0SAM", "DU0TOM"):
        [reply] = thread_replies(people, channel)
        assert_valid_blocks(reply["blocks"])
        assert reply["blocks"][-1]["elements"][0]["action_id"] == "flowbot_claim"


def test_follow_up_configuration(make_stages: Any) -> None:
    registry = make_stages({k.replace("refund/", "r/"): v for k, v in STAGES.items()})
    found = {f.stage.name: (f.remind_after, f.escalate_after) for f in follow_ups(registry)}
    assert found == {"review": (3600, 4 * 3600), "triage": (600, None)}
    with_default = {f.stage.name: f.remind_after for f in follow_ups(registry, default_remind_after=900)}
    assert with_default == {"review": 3600, "triage": 600, "quiet": 900}
    def from_env(env: dict[str, str]) -> ReminderSettings:
        return ReminderSettings.from_settings(Settings.from_env(env))

    assert from_env({"FLOWBOT_REMIND_AFTER": "900"}) == ReminderSettings(900.0, 60.0)
    assert from_env({"FLOWBOT_REMINDER_INTERVAL": "15"}) == ReminderSettings(None, 15.0)
    assert from_env({}) == ReminderSettings(None, 60.0)
    with pytest.raises(FlowbotError, match="FLOWBOT_REMIND_AFTER must be a whole number"):
        from_env({"FLOWBOT_REMIND_AFTER": "soon"})
    with pytest.raises(FlowbotError, match="FLOWBOT_REMIND_AFTER must be positive"):
        from_env({"FLOWBOT_REMIND_AFTER": "-5"})


def test_bad_follow_up_options_fail_at_load(make_stages: Any) -> None:
    with pytest.raises(WorkflowLoadError) as err:
        make_stages({
            "bad/workflow.py": """
                from engine import Workflow
                workflow = Workflow("bad")
                go = workflow.script("go")
                a = workflow.form("a", assignee="U0BOB", remind_after=-5)
                b = workflow.form("b", assignee="U0BOB", escalate_after=60)
                c = workflow.form("c", assignee="U0BOB", escalate_after=60, escalate_to="nobody")
                workflow.transition(go, a)
                workflow.transition(go, b)
                workflow.transition(go, c)
            """,
            "bad/go.py": "def run(task, ctx):\n    pass\n",
            **{f"bad/{n}.py": "from engine.forms import Form, Text\nform = Form('F', [Text('x', 'X')])\n"
                              "def run(task, answers, ctx):\n    pass\n" for n in "abc"},
        })
    text = str(err.value)
    assert 'form "a": remind_after must be a positive number of seconds, got -5' in text
    assert 'form "b": escalate_after= and escalate_to= go together' in text
    assert "escalate_to: 'nobody' is not an email" in text
    assert "workflow.py:4" in text and "workflow.py:5" in text


async def test_escalation_marker_kinds_are_delivered(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    assert {REMINDER, ESCALATED, "form.handover"} <= set(h.app.outbox_handlers)
    assert "slack.reminders" in h.app.state


async def test_engine_reassign_is_one_handover_that_resolves_old_cards_before_sending_new(
        slack_app: StartSlack, people: FakeSlack) -> None:
    from engine.people import actions as engine_people

    h = await slack_app(STAGES)
    task_id = await ask(h)  # an approval for Bob
    store = h.app.store
    # Bad input is refused and changes nothing.
    for bad in ({"users": []}, {"users": ["  "]}, {"team": ""}, {"nobody": 1}):
        refused = await engine_people.reassign(store, task_id, bad, "U0ADMIN")
        assert refused.status == engine_people.INVALID and refused.message
    assert await scalar(store, "SELECT assignee FROM tasks WHERE id = :t", t=task_id) == {"users": ["bob@example.com"]}

    done = await engine_people.reassign(store, task_id, {"users": ["lea@example.com"]}, "U0ADMIN")
    assert done.ok
    kinds = await h.app.db.fetch_all(_sql("SELECT kind FROM outbox WHERE task_id = :t ORDER BY id"), {"t": task_id})
    # One sequential effect, not form.reassigned + form.assigned racing in the dispatcher.
    assert [r["kind"] for r in kinds] == ["form.assigned", "form.handover"]
    reason = await scalar(store, "SELECT reason FROM task_events WHERE task_id = :t AND actor = 'U0ADMIN'", t=task_id)
    assert reason == "reassigned to lea@example.com"

    lea_ts = (await eventually(lambda: _posted(people, "DU0LEA"), what="Lea's card"))[0].response["ts"]
    bob = await eventually(lambda: _updated(people, "DU0BOB"), what="Bob's card resolved")
    assert_valid_blocks(bob[0].params["blocks"])
    assert "Handed to lea@example.com by <@U0ADMIN>" in json.dumps(bob[0].params["blocks"])

    async def handed_over() -> Any:
        return await scalar(store, "SELECT status FROM outbox WHERE kind = 'form.handover'") == "delivered"

    await eventually(handed_over, what="the handover delivered")
    cards = await h.app.db.fetch_all(
        _sql("SELECT recipient, ts FROM slack_task_messages WHERE task_id = :t"), {"t": task_id})
    assert [(c["recipient"], c["ts"]) for c in cards] == [("U0LEA", lea_ts)]  # the new card is remembered

    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB")  # no longer Bob's
    await h.click("U0LEA", "flowbot_approve", str(task_id), channel="DU0LEA", message_ts=lea_ts)
    lea = await eventually(lambda: _updated(people, "DU0LEA"), what="Lea's card resolved")
    assert "Approved by <@U0LEA>" in json.dumps(lea[0].params["blocks"])
    assert len(await _updated(people, "DU0BOB")) == 1  # Bob's old card was resolved once, by the handover
    assert await scalar(store, "SELECT completed_by FROM tasks WHERE id = :t", t=task_id) == "U0LEA"
    again = await engine_people.reassign(store, task_id, {"users": ["bob@example.com"]}, "U0ADMIN")
    assert again.status == engine_people.ALREADY and again.by == "U0LEA"


async def _posted(fake: FakeSlack, channel: str) -> list[Any]:
    return [c for c in fake.calls("chat.postMessage") if c.response.get("channel") == channel
            and not c.params.get("thread_ts")]


async def _updated(fake: FakeSlack, channel: str) -> list[Any]:
    return [c for c in fake.calls("chat.update") if c.params.get("channel") == channel]
