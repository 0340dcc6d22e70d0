"""The /flowbot slash command through signed requests: start (with and without a start form),
permissions, status, tasks, reassign, help; acknowledged at once, the work after the ack."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from blockkit import assert_valid_blocks, assert_valid_modal
from support import eventually, scalar

from engine.errors import WorkflowLoadError
from tests.fakeslack import FakeSlack
from tests.slack import Response, SlackHarness, StartSlack

STAGES = {
    "ticket/workflow.py": """
        from engine import Workflow
        workflow = Workflow("ticket", title="Ticket")
        open_ = workflow.script("open")
        fix = workflow.form("fix", assignee="{owner}")
        workflow.transition(open_, fix, on="ticket")
    """,
    "ticket/open.py": """
        def run(task, ctx):
            ctx.run["opened_by"] = ctx.run.get("started_by")
            ctx.send("ticket", {**task.payload, "owner": task.get("owner", "U0BOB")})
    """,
    "ticket/fix.py": """
        from engine.forms import Form, LongText
        form = Form("Fix the ticket", [LongText("note", "What did you do?")])
        def run(task, answers, ctx):
            ctx.run["note"] = answers["note"]
    """,
    "leave/workflow.py": """
        from engine import Team, Workflow
        workflow = Workflow("leave", title="Leave request", starters=["ann@example.com", "@staff"])
        ask = workflow.form("ask")
        approve = workflow.form("approve", assignee="{manager}")
        workflow.transition(ask, approve, on="asked")
    """,
    "leave/ask.py": """
        from engine.forms import Email, Form, Number
        form = Form("Leave request", [Number("days", "How many days?", min=1, default_from="days"),
                                      Email("manager", "Manager's email")])
        def run(task, answers, ctx):
            ctx.send("asked", {**answers, "who": task.get("started_by")})
    """,
    "leave/approve.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Leave", {"Who": "<@{who}>", "Days": "{days}"})
        def run(task, answers, ctx):
            pass
    """,
}


async def command(h: SlackHarness, user: str, text: str) -> Response:
    """``/flowbot text`` by ``user``; its response_url leads to FakeSlack (recorded as ``respond``)."""
    return await h.command(user, text, response_url=h.fake.url + "respond")


async def answer(fake: FakeSlack, n: int = 1) -> dict[str, Any]:
    """The ``n``-th ephemeral answer sent to a response_url (waits for it)."""

    async def arrived() -> Any:
        calls = fake.calls("respond")
        return calls[n - 1] if len(calls) >= n else None

    call = await eventually(arrived, what=f"answer #{n}")
    params = dict(call.params)
    assert params["response_type"] == "ephemeral"
    if params.get("blocks"):
        assert_valid_blocks(params["blocks"])
    return params


async def runs(h: SlackHarness) -> int:
    return int(await scalar(h.app.store, "SELECT count(*) FROM runs"))


@pytest.fixture
def people(fake_slack: FakeSlack) -> FakeSlack:
    fake_slack.add_user("ann@example.com", "U0ANN")
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("eve@example.com", "U0EVE")
    fake_slack.add_user("sam@example.com", "U0SAM")
    fake_slack.set_usergroup("staff", ["U0SAM"])
    return fake_slack


async def test_help_is_answered_in_the_ack(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    resp = await command(h, "U0EVE", "help")
    assert resp.status == 200
    body = resp.json
    assert body["response_type"] == "ephemeral"
    assert "/flowbot start <workflow>" in body["text"] and "`ticket` (Ticket)" in body["text"]
    assert "`leave` (Leave request)" in body["text"]
    empty = await command(h, "U0EVE", "")
    assert "/flowbot status" in empty.json["text"]
    unknown = await command(h, "U0EVE", "launch rockets")
    assert "`launch` is not a flowbot command" in unknown.json["text"]
    assert people.calls("respond") == []  # nothing more than the ack


async def test_start_without_form_acks_at_once_then_starts_the_run(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    began = time.monotonic()
    resp = await command(h, "U0ANN", 'start ticket title="VPN is down" priority=2 urgent=true owner=U0BOB')
    assert time.monotonic() - began < 1.0
    assert resp.status == 200 and resp.json is None  # an empty ack: the answer follows
    text = (await answer(people))["text"]
    assert "Started *Ticket*" in text
    run_id = text.split("run `")[1].split("`")[0]
    report = await h.app.store.report(run_id)
    assert report is not None
    assert report["trigger"] == {"kind": "slack", "user": "U0ANN", "command": "/flowbot", "stage": "open"}
    # A run started from Slack is an action of a person, in the audit trail like every edge's.
    assert [(a["actor"], a["action"], a["edge"], a["acting_as"]) for a in report["audit"]] == [
        ("U0ANN", "start", "slack", "starter")]
    first = report["steps"][0]
    assert first["stage"] == "open"
    payload = await scalar(h.app.store, "SELECT payload FROM tasks WHERE id = :id", id=first["task_id"])
    assert payload == {"title": "VPN is down", "priority": 2, "urgent": True, "owner": "U0BOB",
                       "started_by": "U0ANN"}

    async def waiting() -> Any:
        r = await h.app.store.report(run_id)
        return r if r and r["status"] == "waiting" else None

    report = await eventually(waiting, what="the run waiting on Bob")
    assert report["context"]["opened_by"] == "U0ANN"


async def test_started_by_cannot_be_forged(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await command(h, "U0EVE", "start ticket started_by=U0BOSS")
    await answer(people)
    payload = await scalar(h.app.store, "SELECT payload FROM tasks WHERE stage = 'open'")
    assert payload["started_by"] == "U0EVE"


async def test_unknown_workflow_and_bad_arguments_start_nothing(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await command(h, "U0ANN", "start tickets")
    assert "There is no workflow called `tickets`" in (await answer(people, 1))["text"]
    await command(h, "U0ANN", "start ticket justaword")
    assert "`justaword` is not `key=value`" in (await answer(people, 2))["text"]
    await command(h, "U0ANN", "start")
    assert "Usage" in (await answer(people, 3))["text"]
    resp = await command(h, "U0ANN", 'start ticket title="unclosed')
    assert "Usage" in resp.json["text"]
    assert await runs(h) == 0


async def test_only_starters_may_start_a_workflow(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await command(h, "U0EVE", "start leave")
    assert "not allowed to start *Leave request*" in (await answer(people))["text"]
    assert people.calls("views.open") == [] and await runs(h) == 0
    # by email (users.lookupByEmail) and by user group membership (usergroups.users.list)
    for n, user in enumerate(("U0ANN", "U0SAM"), start=1):
        await command(h, user, "start leave days=3")
        await eventually(lambda n=n: _views(people, n), what="the start form")  # type: ignore[misc]
    assert len(people.calls("respond")) == 1  # opening a modal says nothing more


async def _views(fake: FakeSlack, n: int) -> bool:
    return len(fake.calls("views.open")) >= n


async def test_start_form_opens_as_a_modal_and_its_submission_starts_the_run(
        slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    resp = await command(h, "U0ANN", "start leave days=4")
    assert resp.status == 200
    await eventually(lambda: _views(people, 1), what="the start form")
    view = h.last_view()
    assert_valid_modal(people.calls("views.open")[-1].params["view"])
    assert view["blocks"][0]["element"]["initial_value"] == "4"  # default from the key=value payload
    assert await runs(h) == 0  # nothing starts until the form is submitted
    done = await h.submit("U0ANN", view, {"days": {"type": "number_input", "value": "4"},
                                          "manager": {"type": "email_text_input", "value": "bob@example.com"}})
    assert done.status == 200
    row = await scalar(h.app.store, "SELECT row_to_json(r) FROM runs r")
    assert row["trigger"]["user"] == "U0ANN" and row["workflow"] == "leave"
    approve = await scalar(h.app.store, "SELECT payload FROM tasks WHERE stage = 'approve'")
    assert approve == {"days": 4, "manager": "bob@example.com", "who": "U0ANN"}


async def test_status_shows_a_run_report_or_my_recent_runs(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await command(h, "U0ANN", "status")
    assert "no runs yet" in (await answer(people, 1))["text"]
    await command(h, "U0ANN", "start ticket owner=U0BOB")
    text = (await answer(people, 2))["text"]
    run_id = text.split("run `")[1].split("`")[0]
    await command(h, "U0ANN", f"status {run_id[:8]}")
    report = await answer(people, 3)
    flat = json.dumps(report["blocks"])
    assert "`open` completed" in flat or "`open` pending" in flat or "`open` locked" in flat
    assert run_id in flat
    await command(h, "U0ANN", "status")
    mine = await answer(people, 4)
    assert run_id[:8] in json.dumps(mine["blocks"])
    await command(h, "U0ANN", "status 00000000-0000-0000-0000-000000000000")
    assert "There is no run" in (await answer(people, 5))["text"]


async def test_status_of_a_run_is_for_who_took_part_and_its_operators_and_viewers(
        slack_app: StartSlack, people: FakeSlack) -> None:
    """The engine's one access rule (READ_RUN): being allowed to start a workflow is not being
    allowed to read everyone's runs of it."""
    h = await slack_app(STAGES)
    ask = h.app.registry.get("leave").stage("ask")
    run_id, _ = await h.app.store.start_run(ask, {"days": 2}, trigger={"kind": "slack", "user": "U0ANN"})
    n = 0

    async def status_of(user: str, run: str) -> str:
        nonlocal n
        await command(h, user, f"status {run}")
        n += 1
        return str((await answer(people, n))["text"])

    assert (await status_of("U0ANN", run_id)).startswith("leave:")  # started it
    # Sam is in @staff, who may start leave requests, but took no part in Ann's: no such run for him.
    assert "There is no run" in await status_of("U0SAM", run_id)
    assert "There is no run" in await status_of("U0EVE", run_id)
    # The owner a ticket is assigned to sees it; someone else does not, though everyone may start one.
    open_stage = h.app.registry.get("ticket").stage("open")
    ticket_run, _ = await h.app.store.start_run(open_stage, {"owner": "U0BOB", "title": "x"})

    async def waiting() -> bool:
        report = await h.app.store.report(ticket_run)
        return report is not None and report["status"] == "waiting"

    await eventually(waiting, what="the ticket waits on its owner")
    assert (await status_of("U0BOB", ticket_run)).startswith("ticket:")
    assert "There is no run" in await status_of("U0EVE", ticket_run)


async def test_tasks_lists_mine_with_open_buttons_that_open_the_form(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    await command(h, "U0BOB", "tasks")
    assert "Nothing waits for you" in (await answer(people, 1))["text"]
    for title in ("one", "two"):
        stage = h.app.registry.get("ticket").stage("open")
        await h.app.store.start_run(stage, {"title": title, "owner": "bob@example.com"})

    async def assigned() -> bool:
        n = await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE stage = 'fix'")
        return int(n) == 2 and len(people.calls("chat.postMessage")) >= 2

    await eventually(assigned, what="two tasks for Bob")
    await command(h, "U0BOB", "tasks")
    listed = await answer(people, 2)
    buttons = [b["accessory"] for b in listed["blocks"] if b.get("accessory")]
    assert len(buttons) == 2 and all(b["action_id"].startswith("flowbot_open.") for b in buttons)
    assert "Fix the ticket" in json.dumps(listed["blocks"])
    resp = await h.click("U0BOB", buttons[0]["action_id"], buttons[0]["value"], channel="C0GENERAL")
    assert resp.status == 200
    await eventually(lambda: _views(people, 1), what="the task's modal")
    assert_valid_modal(people.calls("views.open")[-1].params["view"])
    await command(h, "U0EVE", "tasks")
    assert "Nothing waits for you" in (await answer(people, 3))["text"]


async def bobs_ticket(h: Any, people: FakeSlack) -> int:
    """A ticket run whose "fix" task is Bob's, once his card is out; the task's id."""
    stage = h.app.registry.get("ticket").stage("open")
    await h.app.store.start_run(stage, {"title": "printer", "owner": "U0BOB"})

    async def card() -> Any:
        return [c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB"]

    await eventually(card, what="Bob's card")
    return int(await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'fix'"))


async def test_reassign_hands_my_task_to_someone_else(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id = await bobs_ticket(h, people)
    await command(h, "U0EVE", f"reassign {task_id} <@U0EVE|eve>")
    assert "only they can act on it. Nothing was changed" in (await answer(people, 1))["text"]
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0BOB"]}
    # Slack escapes the command text (should_escape): an email arrives as a mailto link.
    await command(h, "U0BOB", f"reassign {task_id} <mailto:sam@example.com|sam@example.com>")
    assert "now <@U0SAM>'s" in (await answer(people, 2))["text"]
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0SAM"]}

    async def handed() -> Any:
        sam = [c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0SAM"]
        bob = [c for c in people.calls("chat.update") if c.params.get("channel") == "DU0BOB"]
        return sam and bob

    await eventually(handed, what="Sam's card and Bob's card resolved")
    update = [c for c in people.calls("chat.update") if c.params.get("channel") == "DU0BOB"][-1]
    assert_valid_blocks(update.params["blocks"])
    assert "Handed to <@U0SAM> by <@U0BOB>" in json.dumps(update.params["blocks"])

    async def sams_home() -> Any:
        views = [c.params["view"] for c in people.calls("views.publish") if c.params.get("user_id") == "U0SAM"]
        return views and f"flowbot_open.{task_id}" in json.dumps(views[-1])

    await eventually(sams_home, what="Sam's Home listing the task")
    await command(h, "U0SAM", f"reassign {task_id} <mailto:nobody@example.com|nobody@example.com>")
    assert "no Slack user has the email nobody@example.com" in (await answer(people, 3))["text"]
    await command(h, "U0BOB", "reassign x y")
    assert "Usage" in (await answer(people, 4))["text"]


def test_starters_are_validated_at_load(make_stages: Any) -> None:
    with pytest.raises(WorkflowLoadError) as err:
        make_stages({
            "bad/workflow.py": """
                from engine import Workflow
                workflow = Workflow("bad", starters=["not a person", 42])
                go = workflow.script("go")
            """,
            "bad/go.py": "def run(task, ctx):\n    pass\n",
        })
    text = str(err.value)
    assert "starters: 'not a person' is not an email" in text and "starters: 42" in text
    assert "workflow.py:2" in text


async def test_the_reassign_button_opens_a_people_picker_and_hands_the_task_over(
        slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id = await bobs_ticket(h, people)
    card = [c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB"][-1]
    assert [e["action_id"] for b in card.params["blocks"] if b["type"] == "actions"
            for e in b["elements"]] == ["flowbot_open", "flowbot_reassign"]
    # Not Eve's to hand over: she is told why, and gets no picker.
    await h.click("U0EVE", "flowbot_reassign", str(task_id), channel="C0SHARED")
    await h.settle()
    assert people.calls("views.open") == []
    told = [c.params["text"] for c in people.calls("chat.postEphemeral") if c.params["user"] == "U0EVE"]
    assert len(told) == 1 and "only they can act on it" in told[0]
    # Bob gets the picker.
    await h.click("U0BOB", "flowbot_reassign", str(task_id), channel="DU0BOB")
    await h.settle()
    view = people.calls("views.open")[-1].params["view"]
    assert_valid_modal(view)
    assert view["callback_id"] == "flowbot_reassign" and view["private_metadata"] == str(task_id)
    # Nobody picked: the error shows under the picker, nothing changes.
    empty = await h.submit("U0BOB", view, {"to": {"type": "users_select", "selected_user": None}})
    assert empty.json["response_action"] == "errors" and set(empty.json["errors"]) == {"to"}
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0BOB"]}
    done = await h.submit("U0BOB", view, {"to": {"type": "users_select", "selected_user": "U0SAM"}})
    assert done.status == 200 and not done.json  # the modal closes
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0SAM"]}

    async def sams_card() -> Any:
        return [c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0SAM"]

    await eventually(sams_card, what="Sam's card")
    # The same modal submitted again (another tab): the task is not Bob's any more.
    again = await h.submit("U0BOB", view, {"to": {"type": "users_select", "selected_user": "U0EVE"}})
    assert again.json["response_action"] == "update" and "only they can act on it" in json.dumps(again.json)
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0SAM"]}


async def test_reassign_to_a_mention_as_slack_escapes_it(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id = await bobs_ticket(h, people)
    # "/flowbot reassign 12 @sam" reaches flowbot as "<@U0SAM|sam>" once the command escapes.
    await command(h, "U0BOB", f"reassign {task_id} <@U0SAM|sam>")
    assert "now <@U0SAM>'s" in (await answer(people, 1))["text"]
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0SAM"]}
    assert people.calls("users.lookupByEmail") == []  # a mention needs no lookup
    # A bare "@sam" (an app whose command does not escape) cannot name anyone: said, nothing changes.
    await command(h, "U0SAM", f"reassign {task_id} @bob")
    assert "@bob is not a Slack user: mention them or give their email" in (await answer(people, 2))["text"]
    assert (await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :id", id=task_id)) == {"users": ["U0SAM"]}
    assert people.calls("users.lookupByEmail") == []


def test_the_manifest_has_slack_escape_the_command_text() -> None:
    from bot.manifest import manifest

    [cmd] = manifest(url="https://flowbot.example.com")["features"]["slash_commands"]
    assert cmd["should_escape"] is True


async def test_start_arguments_are_unescaped_as_slack_escapes_them(slack_app: StartSlack, people: FakeSlack) -> None:
    h = await slack_app(STAGES)
    text = ('start ticket title="R&amp;D &lt;lab&gt; &amp;lt;" owner=<@U0BOB|bob> room=<#C0LAB|lab> '
            "contact=<mailto:ann@example.com|ann@example.com> link=<https://x.example/a?b=1&amp;c=2|x.example/a> "
            "group=<!subteam^S0STAFF|@staff> n=&lt;3")
    await command(h, "U0ANN", text)
    assert "Started *Ticket*" in (await answer(people))["text"]
    payload = await scalar(h.app.store, "SELECT payload FROM tasks WHERE stage = 'open'")
    assert payload == {
        "title": "R&D <lab> &lt;",  # a typed "&lt;" arrives as "&amp;lt;" and stays as typed
        "owner": "U0BOB", "room": "C0LAB", "contact": "ann@example.com",
        "link": "https://x.example/a?b=1&c=2", "group": "S0STAFF", "n": "<3", "started_by": "U0ANN",
    }

    async def bobs_card() -> Any:  # the mention worked as an assignee: Bob got the card
        return [c for c in people.calls("chat.postMessage") if c.response.get("channel") == "DU0BOB"]

    await eventually(bobs_card, what="Bob's card")
    # An escaped word that is not key=value is named as the person typed it.
    await command(h, "U0ANN", "start ticket &lt;oops&gt;")
    assert "`&lt;oops&gt;` is not `key=value`" in (await answer(people, 2))["text"]
    assert await runs(h) == 1


async def test_a_user_group_handle_is_resolved_to_its_id_once(slack_app: StartSlack, people: FakeSlack) -> None:
    staff = people.set_usergroup("staff", ["U0SAM", "U0TOM"])  # the fixture's group, now with Tom
    h = await slack_app(STAGES)
    for n, user in enumerate(("U0SAM", "U0TOM"), start=1):
        await command(h, user, "start leave days=2")
        await eventually(lambda n=n: _views(people, n), what="the start form")  # type: ignore[misc]
    await command(h, "U0EVE", "start leave")
    assert "not allowed to start *Leave request*" in (await answer(people))["text"]
    assert len(people.calls("usergroups.list")) == 1  # handles are cached
    assert {c.params["usergroup"] for c in people.calls("usergroups.users.list")} == {staff}
    assert all(c.response["ok"] for c in people.calls("usergroups.users.list"))
