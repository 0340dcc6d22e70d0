"""Forms as modals: every field kind, defaults, display blocks, validation errors inline,
multi-page forms whose next page depends on the answers, external-select options, and form state
kept in Postgres (the modal carries only a session id)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from blockkit import assert_valid_blocks, assert_valid_modal
from support import eventually, scalar, task_row

from tests.fakeslack import FakeSlack
from tests.slack import SlackHarness, StartSlack

STAGES = {
    "trip/workflow.py": """
        from engine import Workflow
        workflow = Workflow("trip", title="Business trip")
        plan = workflow.form("plan", assignee="U0ANN")
        book = workflow.script("book")
        workflow.transition(plan, book, on="planned")
    """,
    "trip/plan.py": """
        from engine.forms import (Checkboxes, Date, DateTime, Email, Facts, Form, Links, LongText, Markdown,
                                  MultiSelect, Number, Page, Radio, Rule, Select, Text, Url, UserPicker)

        AIRLINES = [("af", "Air France"), ("lh", "Lufthansa"), ("ba", "British Airways"), ("tp", "TAP")]

        def airlines(query, payload):
            return [a for a in AIRLINES if query.lower() in a[1].lower()]

        form = Form("Plan your trip", pages=[
            Page("where", [
                Markdown("Trip for **{employee}**: see the [policy](https://example.com/policy)."),
                Facts({"Employee": "{employee}", "Budget": "{budget} EUR"}),
                Text("city", "Destination city", default_from="city", max_length=50),
                Number("nights", "Nights", min=1, max=30),
                Radio("transport", "Transport", [("train", "Train"), ("plane", "Plane")], default="train"),
            ]),
            Page("flight", [
                Select("airline", "Airline", options_from=airlines),
                Date("departure", "Departure date"),
            ], when=lambda answers: answers.get("transport") == "plane"),
            Page("extras", [
                Links({"Travel policy": "https://example.com/policy"}),
                Checkboxes("needs", "Needs", [("hotel", "Hotel"), ("car", "Rental car")], required=False),
                MultiSelect("tags", "Tags", ["client", "internal", "conference"], required=False),
                Email("contact", "Contact email"),
                Url("agenda", "Agenda link", required=False),
                UserPicker("backup", "Who covers for you?"),
                DateTime("meeting", "First meeting", required=False),
                LongText("notes", "Notes", required=False),
            ], rules=[Rule(lambda a: "car" not in (a.get("needs") or []) or a["nights"] >= 2, "needs",
                           "A rental car needs at least two nights")]),
        ])

        def run(task, answers, ctx):
            ctx.send("planned", {**task.payload, **answers})
    """,
    "trip/book.py": """
        def run(task, ctx):
            ctx.run["booked"] = {k: task.get(k) for k in ("city", "nights", "transport", "airline", "departure",
                                                          "needs", "contact", "backup")}
    """,
}


async def open_form(h: SlackHarness, fake: FakeSlack) -> tuple[int, str, dict[str, Any]]:
    wf = h.app.registry.get("trip")
    run_id, task_id = await h.app.store.start_run(wf.stage("plan"), {"employee": "Ann", "budget": 900,
                                                                      "city": "Lisbon"})

    async def card() -> Any:
        return [c for c in fake.calls("chat.postMessage") if c.response.get("channel") == "DU0ANN"] or None

    [posted] = await eventually(card, what="the assignment DM")
    assert_valid_blocks(posted.params["blocks"])
    opens = [e for b in posted.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert [e["action_id"] for e in opens] == ["flowbot_open", "flowbot_reassign"]
    resp = await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
    assert resp.status == 200
    await eventually(lambda: _value(fake.calls("views.open")), what="the modal")
    return task_id, run_id, h.last_view()


async def _value(v: Any) -> Any:
    return v


def page_one(nights: str | None, transport: str = "plane") -> dict[str, dict[str, Any]]:
    return {
        "city": {"type": "plain_text_input", "value": "Lisbon"},
        "nights": {"type": "number_input", "value": nights},
        "transport": {"type": "radio_buttons", "selected_option": {"value": transport}},
    }


def page_extras(needs: list[str], contact: str = "ann@example.com") -> dict[str, dict[str, Any]]:
    return {
        "needs": {"type": "checkboxes", "selected_options": [{"value": v} for v in needs]},
        "tags": {"type": "multi_static_select", "selected_options": [{"value": "client"}]},
        "contact": {"type": "email_text_input", "value": contact},
        "agenda": {"type": "url_text_input", "value": None},
        "backup": {"type": "users_select", "selected_user": "U0BOB"},
        "meeting": {"type": "datetimepicker", "selected_date_time": None},
        "notes": {"type": "plain_text_input", "value": None},
    }


async def test_a_multi_page_form_branches_on_answers_and_keeps_state_in_postgres(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id, run_id, view = await open_form(h, fake_slack)
    first = h.sent_modals()[-1]
    assert_valid_modal(first)
    # Defaults from the payload and the field; display blocks filled from the payload.
    blocks = {b.get("block_id"): b for b in first["blocks"]}
    assert blocks["city"]["element"]["initial_value"] == "Lisbon"
    assert blocks["transport"]["element"]["initial_option"]["value"] == "train"
    assert "*Ann*" in str(first["blocks"]) and "<https://example.com/policy|policy>" in str(first["blocks"])
    assert first["submit"]["text"] == "Next"
    # The modal carries only a session id; the session lives in Postgres.
    session_id = first["private_metadata"]
    uuid.UUID(session_id)
    assert await scalar(h.app.store, "SELECT task_id FROM form_sessions WHERE id = CAST(:s AS uuid)",
                        s=session_id) == task_id

    # Page 1 with "plane": the flight page comes next.
    resp = await h.submit("U0ANN", view, page_one("3", "plane"))
    assert resp.status == 200 and resp.json["response_action"] == "update"
    flight = resp.json["view"]
    assert_valid_modal(flight)
    assert [b.get("block_id") for b in flight["blocks"]] == ["airline", "departure"]
    assert flight["blocks"][0]["element"]["type"] == "external_select"
    stored = await scalar(h.app.store, "SELECT answers FROM form_sessions WHERE id = CAST(:s AS uuid)", s=session_id)
    assert stored == {"city": "Lisbon", "nights": 3, "transport": "plane"}

    # Options of the external select come from the stage's function.
    opts = await h.suggest("U0ANN", {**view, **flight}, "airline", "fra")
    assert opts.status == 200
    assert [o["value"] for o in opts.json["options"]] == ["af"]

    flight_view = {**view, **flight}
    resp = await h.submit("U0ANN", flight_view, {
        "airline": {"type": "external_select", "selected_option": {"value": "af"}},
        "departure": {"type": "datepicker", "selected_date": "2026-12-01"},
    })
    extras = resp.json["view"]
    assert_valid_modal(extras)
    assert extras["submit"]["text"] == "Submit"

    # The page's rule: a rental car needs two nights; 3 nights is fine.
    resp = await h.submit("U0ANN", {**view, **extras}, page_extras(["hotel", "car"]))
    assert resp.status == 200 and not resp.text.strip(), resp.text

    async def booked() -> Any:
        report = await h.app.store.report(run_id)
        return report if report and report["status"] == "completed" else None

    report = await eventually(booked, what="the run completed")
    assert report["context"]["booked"] == {
        "city": "Lisbon", "nights": 3, "transport": "plane", "airline": "af", "departure": "2026-12-01",
        "needs": ["hotel", "car"], "contact": "ann@example.com", "backup": "U0BOB",
    }
    assert await scalar(h.app.store, "SELECT count(*) FROM form_sessions") == 0


async def test_the_branch_skips_a_page_that_does_not_apply(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id, _run_id, view = await open_form(h, fake_slack)
    resp = await h.submit("U0ANN", view, page_one("1", "train"))
    nxt = resp.json["view"]
    assert "needs" in [b.get("block_id") for b in nxt["blocks"]]  # straight to extras
    # The cross-field rule of the extras page shows inline: car with one night.
    resp = await h.submit("U0ANN", {**view, **nxt}, page_extras(["car"]))
    assert resp.json == {"response_action": "errors", "errors": {"needs": "A rental car needs at least two nights"}}
    assert (await task_row(h.app.store, task_id))["status"] == "pending"


async def test_a_submission_with_errors_shows_them_inline_then_a_valid_one_completes(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id, _run_id, view = await open_form(h, fake_slack)
    # Missing required number, then one out of range, then a word.
    for nights in (None, "45", "many"):
        resp = await h.submit("U0ANN", view, page_one(nights, "train"))
        assert resp.status == 200
        body = resp.json
        assert body["response_action"] == "errors" and set(body["errors"]) == {"nights"}, body
    assert await scalar(h.app.store, "SELECT answers FROM form_sessions") == {}
    resp = await h.submit("U0ANN", view, page_one("2", "train"))
    nxt = resp.json["view"]
    resp = await h.submit("U0ANN", {**view, **nxt}, page_extras([], contact="not-an-email"))
    assert resp.json["response_action"] == "errors" and set(resp.json["errors"]) == {"contact"}
    assert (await task_row(h.app.store, task_id))["status"] == "pending"
    resp = await h.submit("U0ANN", {**view, **nxt}, page_extras([]))
    assert resp.status == 200 and not resp.text.strip()
    row = await task_row(h.app.store, task_id)
    assert row["status"] == "completed" and row["completed_by"] == "U0ANN"


async def test_in_socket_mode_bolt_gives_a_submission_the_same_answers(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id, _run_id, view = await open_form(h, fake_slack)
    resp = await h.submit_over_bolt("U0ANN", view, page_one("45", "train"))
    assert resp.json["response_action"] == "errors" and set(resp.json["errors"]) == {"nights"}
    nxt = (await h.submit_over_bolt("U0ANN", view, page_one("2", "train"))).json["view"]
    assert "needs" in [b.get("block_id") for b in nxt["blocks"]]
    resp = await h.submit_over_bolt("U0ANN", {**view, **nxt}, page_extras([]))
    assert resp.status == 200 and not resp.text.strip()  # the modal closes
    assert (await task_row(h.app.store, task_id))["status"] == "completed"


async def test_a_double_submit_of_the_last_page_completes_once(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id, _run_id, view = await open_form(h, fake_slack)
    nxt = (await h.submit("U0ANN", view, page_one("2", "train"))).json["view"]
    a, b = await asyncio.gather(h.submit("U0ANN", {**view, **nxt}, page_extras([])),
                                h.submit("U0ANN", {**view, **nxt}, page_extras([])))
    bodies = sorted([a.text.strip(), b.text.strip()], key=len)
    assert bodies[0] == ""  # the winner's modal closes
    loser = b.json if b.text.strip() else a.json
    assert loser["response_action"] == "update"
    text = str(loser["view"]["blocks"])
    # The same person's first submit won: they are told theirs was recorded, never that it was lost.
    assert "Your answer was already recorded" in text or "expired" in text
    assert "not recorded" not in text
    assert_valid_modal(loser["view"])
    assert await scalar(h.app.store, "SELECT count(*) FROM task_events WHERE task_id = :t AND to_status = 'completed'",
                        t=task_id) == 1
    assert await scalar(h.app.store, "SELECT count(*) FROM tasks WHERE stage = 'book'") == 1


async def test_someone_else_cannot_open_or_submit_the_form(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    task_id, _run_id, view = await open_form(h, fake_slack)
    # Eve replays Ann's modal: the session is Ann's.
    resp = await h.submit("U0EVE", view, page_one("2", "train"))
    assert resp.json["response_action"] == "update" and "expired" in str(resp.json["view"])
    assert await scalar(h.app.store, "SELECT answers FROM form_sessions") == {}
    assert (await task_row(h.app.store, task_id))["status"] == "pending"


BAD_STAGES = {
    "bad/workflow.py": """
        from engine import Workflow
        workflow = Workflow("bad")
        ask = workflow.form("ask", assignee="U0ANN")
    """,
    "bad/ask.py": """
        from engine.forms import Form, Select, Text
        form = Form("A title that is far too long for a modal", [
            Select("pick", "Pick one", [str(i) for i in range(150)]),
            Text("x" * 300, "Name"),
        ])
        def run(task, answers, ctx):
            pass
    """,
}


async def test_a_form_slack_would_reject_fails_at_start_with_a_clear_message(
        database_url: str, tmp_path: Any, fake_slack: FakeSlack) -> None:
    import pytest

    from engine.errors import WorkflowLoadError
    from engine.runtime.lifecycle import open_app
    from tests.slack import slack_settings, write_stages

    stages = write_stages(tmp_path / "stages", BAD_STAGES)
    # The loader checks forms against Slack's limits itself: opening fails before Slack starts.
    with pytest.raises(WorkflowLoadError) as info:
        async with open_app(slack_settings(database_url, stages, fake_slack, tmp_path)):
            pass
    message = str(info.value)
    assert ("bad.ask" in message and "ask.py" in message) or "workflow.py" in message
    assert "title is 40 characters long; Slack allows at most 24" in message
    assert "has 150 options" in message
    assert "block_id and action_id, at most 255" in message
    assert fake_slack.requests == []


DYNAMIC_STAGES = {
    "dyn/workflow.py": """
        from engine import Workflow
        workflow = Workflow("dyn")
        ask = workflow.form("ask", assignee="U0ANN")
        start = workflow.form("start")
        workflow.transition(start, ask, on="asked")
    """,
    "dyn/ask.py": """
        from engine.forms import Approval, Form, Select
        def form(task):
            if task.get("huge"):
                return Form("Pick", [Select("pick", "Pick", [str(i) for i in range(task["huge"])])])
            return Approval("Approve {what}".format(what=task["what"]), {"What": "{what}"})
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
    """,
    "dyn/start.py": """
        from engine.forms import Form, Text
        form = Form("Start", [Text("what", "What?", default_from="what")])
        def run(task, answers, ctx):
            ctx.run["started"] = ctx.run.get("started_by")
            ctx.send("asked", {"what": answers["what"]})
    """,
}


async def test_a_form_built_per_task_that_slack_would_reject_is_refused_with_an_explanation(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(DYNAMIC_STAGES)
    _run, task_id = await h.app.store.start_run(h.app.registry.get("dyn").stage("ask"), {"huge": 150})
    await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
    await h.settle()
    [eph] = fake_slack.calls("chat.postEphemeral")
    assert "cannot be shown" in eph.params["text"] and "150 options" in eph.params["text"]
    assert fake_slack.calls("views.open") == []


async def test_a_start_form_starts_a_run_and_an_approval_opens_as_a_modal(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    from bot import interactions

    h = await slack_app(DYNAMIC_STAGES)
    stage = h.app.registry.get("dyn").stage("start")
    await interactions.open_start_form(h.ctx, "1.2.3", "U0CAT", stage, {"what": "a desk"})
    view = h.last_view()
    assert_valid_modal(h.sent_modals()[-1])
    assert view["blocks"][0]["element"]["initial_value"] == "a desk"
    resp = await h.submit("U0CAT", view, {"what": {"type": "plain_text_input", "value": "a chair"}})
    assert resp.status == 200 and not resp.text.strip(), resp.text
    task_id = await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'ask'")
    run = await scalar(h.app.store, "SELECT context FROM runs")
    assert run["started"] == "U0CAT"
    # The Approval's Open shows the decision as a modal; submitting it approves.
    await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
    await eventually(lambda: _value(len(fake_slack.calls("views.open")) == 2), what="the approval modal")
    modal = h.sent_modals()[-1]
    assert_valid_modal(modal)
    assert modal["title"]["text"] == "Approve a chair"
    resp = await h.submit("U0ANN", h.last_view(), {
        "decision": {"type": "radio_buttons", "selected_option": {"value": "approved"}},
        "comment": {"type": "plain_text_input", "value": None},
    })
    assert resp.status == 200 and not resp.text.strip(), resp.text
    assert (await task_row(h.app.store, task_id))["status"] == "completed"
    assert (await scalar(h.app.store, "SELECT context FROM runs"))["decision"] == "approved"


FAILING_STAGES = {
    "fail/workflow.py": """
        from engine import Workflow
        workflow = Workflow("fail")
        ask = workflow.form("ask", assignee="U0ANN")
    """,
    "fail/ask.py": """
        from engine.forms import Form, Text
        form = Form("Ask", [Text("name", "Name")])
        def run(task, answers, ctx):
            if answers["name"] == "boom":
                raise ValueError("the CRM is down")
            ctx.run["name"] = answers["name"]
    """,
}


async def test_a_form_whose_code_fails_keeps_the_modal_open_with_the_error_and_the_task_pending(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(FAILING_STAGES)
    _run, task_id = await h.app.store.start_run(h.app.registry.get("fail").stage("ask"), {})
    await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
    await h.settle()
    view = h.last_view()
    resp = await h.submit("U0ANN", view, {"name": {"type": "plain_text_input", "value": "boom"}})
    assert resp.json["response_action"] == "errors"
    assert "ValueError: the CRM is down" in resp.json["errors"]["name"]
    assert (await task_row(h.app.store, task_id))["status"] == "pending"
    resp = await h.submit("U0ANN", view, {"name": {"type": "plain_text_input", "value": "Ann"}})
    assert resp.status == 200 and not resp.text.strip()
    assert (await task_row(h.app.store, task_id))["status"] == "completed"


def test_the_loader_reports_a_form_slack_would_reject_with_file_and_line(tmp_path: Any) -> None:
    import pytest

    from engine.errors import WorkflowLoadError
    from engine.loader import load_workflows
    from engine.people import actions as people
    from tests.slack import write_stages

    people.register_checks()
    people.register_checks()
    stages = write_stages(tmp_path / "stages", BAD_STAGES)
    with pytest.raises(WorkflowLoadError) as info:
        load_workflows(stages)
    text = str(info.value)
    assert "workflow.py" in text and 'form "ask"' in text and "has 150 options" in text


def test_flowbot_workflows_refuses_a_form_slack_would_reject(tmp_path: Any) -> None:
    from support import cli_env, flowbot

    from tests.slack import write_stages

    stages = write_stages(tmp_path / "stages", BAD_STAGES)
    proc = flowbot("workflows", env=cli_env(None, stages))
    assert proc.returncode == 1
    assert "ask.py" in proc.stderr or "workflow.py" in proc.stderr
    assert "title is 40 characters long; Slack allows at most 24" in proc.stderr
    assert "has 150 options" in proc.stderr


async def test_an_expired_form_session_says_so_and_is_forgotten(slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    import datetime as dt

    from support import FakeClock

    clock = FakeClock()
    h = await slack_app(STAGES, clock=clock)
    task_id, _run_id, view = await open_form(h, fake_slack)
    clock.advance(7 * 3600)  # past the session's six hours
    resp = await h.submit("U0ANN", view, page_one("2", "train"))
    assert resp.json["response_action"] == "update" and "expired" in str(resp.json["view"]["blocks"])
    assert_valid_modal(resp.json["view"])
    # Opening it again works, and the stale session is gone.
    await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
    await h.settle()
    assert await scalar(h.app.store, "SELECT count(*) FROM form_sessions WHERE expires_at > :now",
                        now=clock.now - dt.timedelta(seconds=1)) == 1
    assert await scalar(h.app.store, "SELECT count(*) FROM form_sessions") == 1


SLOW_STAGES = {
    "slow/workflow.py": """
        from engine import Workflow
        workflow = Workflow("slow")
        ask = workflow.form("ask", assignee="U0ANN")
    """,
    "slow/ask.py": """
        import time
        from engine.forms import Form, Text
        form = Form("Ask", [Text("name", "Name")])
        def run(task, answers, ctx):
            time.sleep(1.0)  # a slow CRM call, longer than the ack budget below
            if answers["name"] == "boom":
                raise ValueError("the CRM said no")
            ctx.run["name"] = answers["name"]
    """,
}


async def test_a_slow_form_is_acked_in_time_and_finishes_after_the_ack(
        slack_app: StartSlack, fake_slack: FakeSlack, monkeypatch: Any) -> None:
    import time

    from bot import submissions

    monkeypatch.setattr(submissions, "SUBMIT_BUDGET_SECONDS", 0.3)
    h = await slack_app(SLOW_STAGES)
    _run, ok_task = await h.app.store.start_run(h.app.registry.get("slow").stage("ask"), {})
    _run, bad_task = await h.app.store.start_run(h.app.registry.get("slow").stage("ask"), {})
    views = []
    for task_id in (ok_task, bad_task):
        await h.click("U0ANN", "flowbot_open", str(task_id), channel="DU0ANN")
        await h.settle()
        views.append(h.last_view())
    started = time.monotonic()
    resp = await h.submit("U0ANN", views[0], {"name": {"type": "plain_text_input", "value": "Ann"}})
    assert time.monotonic() - started < 0.9
    assert resp.json["response_action"] == "update" and "being processed" in str(resp.json["view"]["blocks"])
    assert_valid_modal(resp.json["view"])

    async def completed() -> Any:
        return (await task_row(h.app.store, ok_task))["status"] == "completed"

    await eventually(completed, what="the slow submission completed")
    resp = await h.submit("U0ANN", views[1], {"name": {"type": "plain_text_input", "value": "boom"}})
    assert "being processed" in str(resp.json["view"]["blocks"])

    async def told() -> Any:
        return [c for c in fake_slack.calls("chat.postMessage") if "the CRM said no" in str(c.params.get("text"))]

    [dm] = await eventually(told, what="the failure DM")
    assert dm.params["channel"] == "U0ANN"
    assert (await task_row(h.app.store, bad_task))["status"] == "pending"
