"""The shipped examples in stages/, end to end through signed Slack requests: an expense filed
with `/flowbot start expense` and approved in a DM, an access request declined with a comment,
and a helpdesk ticket sent to a team whose member claims and resolves it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from blockkit import assert_valid_blocks, assert_valid_modal
from support import ROOT, cli_env, eventually, flowbot, scalar

from tests.fakeslack import FakeSlack
from tests.slack import Response, SlackHarness, StartSlack

EXAMPLES = ("expense", "access_request", "helpdesk")


@pytest.fixture
def stages(tmp_path: Path) -> Path:
    """A copy of the three examples (other workflows of stages/ are not this test's business)."""
    root = tmp_path / "examples"
    for name in EXAMPLES:
        shutil.copytree(ROOT / "stages" / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture
def people(fake_slack: FakeSlack) -> FakeSlack:
    fake_slack.add_user("ann@example.com", "U0ANN")
    fake_slack.add_user("bob@example.com", "U0BOB")
    fake_slack.add_user("finance@example.com", "U0FIN")
    fake_slack.add_user("it-lead@example.com", "U0LEAD")
    fake_slack.set_usergroup("it-helpdesk", ["U0SAM", "U0TOM"])
    return fake_slack


async def command(h: SlackHarness, user: str, text: str) -> Response:
    resp = await h.command(user, text, response_url=h.fake.url + "respond")
    assert resp.status == 200
    return resp


async def opened_view(fake: FakeSlack, n: int) -> dict[str, Any]:
    """The ``n``-th view opened (as sent, validated), waiting for it; with FakeSlack's id."""

    async def opened() -> Any:
        calls = fake.calls("views.open")
        return calls[n - 1] if len(calls) >= n else None

    call = await eventually(opened, what=f"view #{n}")
    assert_valid_modal(call.params["view"])
    return dict(call.response["view"])


async def card(fake: FakeSlack, channel: str, n: int = 1) -> tuple[str, list[dict[str, Any]]]:
    """(ts, blocks) of the ``n``-th message posted to ``channel`` (validated)."""

    async def posted() -> Any:
        calls = [c for c in fake.calls("chat.postMessage") if c.response.get("channel") == channel]
        return calls[n - 1] if len(calls) >= n else None

    call = await eventually(posted, what=f"message #{n} in {channel}")
    blocks = call.params.get("blocks") or []
    if blocks:
        assert_valid_blocks(blocks)
    return str(call.response["ts"]), blocks


def text_of(fake: FakeSlack, channel: str) -> str:
    return json.dumps([c.params for c in fake.calls("chat.postMessage") if c.response.get("channel") == channel])


async def run_of(h: SlackHarness, workflow: str, *statuses: str) -> dict[str, Any]:
    async def settled() -> Any:
        run_id = await scalar(h.app.store, "SELECT id FROM runs WHERE workflow = :w", w=workflow)
        report = await h.app.store.report(str(run_id)) if run_id else None
        return report if report and report["status"] in statuses else None

    report: dict[str, Any] = await eventually(settled, what=f"{workflow} {statuses}")
    return report


def test_the_examples_load(stages: Path) -> None:
    result = flowbot("workflows", env=cli_env(None, stages))
    assert result.returncode == 0, result.stderr
    for name in ("expense", "access-request", "helpdesk"):
        assert name in result.stdout


async def test_expense_filed_by_slash_command_and_approved_in_a_dm(
        slack_app: StartSlack, people: FakeSlack, stages: Path) -> None:
    h = await slack_app(stages)
    await command(h, "U0ANN", "start expense amount=42.5")
    form = await opened_view(people, 1)
    assert form["blocks"][1]["element"]["initial_value"] == "42.5"
    resp = await h.submit("U0ANN", form, {
        "description": {"type": "plain_text_input", "value": "Taxi to the airport"},
        "amount": {"type": "number_input", "value": "42.5"},
        "currency": {"type": "static_select", "selected_option": {"value": "EUR"}},
        "manager_email": {"type": "email_text_input", "value": "bob@example.com"},
    })
    assert resp.status == 200 and not (resp.json or {}).get("errors")
    ts, blocks = await card(people, "DU0BOB")
    flat = json.dumps(blocks)
    assert "Expense approval" in flat and "Taxi to the airport" in flat and "42.5 EUR" in flat
    task_id = int(await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'review'"))
    await h.click("U0BOB", "flowbot_approve", str(task_id), channel="DU0BOB", message_ts=ts)
    report = await run_of(h, "expense", "completed")
    assert [s["stage"] for s in report["steps"]] == ["submit", "review", "pay"]
    assert report["context"]["decision"] == "approved" and report["context"]["payment"].startswith("PAY-")
    _ts, _ = await card(people, "DU0ANN")
    assert "was approved" in text_of(people, "DU0ANN")

    async def resolved() -> Any:
        return [c for c in people.calls("chat.update") if c.params.get("channel") == "DU0BOB"]

    [update] = await eventually(resolved, what="Bob's card resolved")
    assert "Approved by <@U0BOB>" in json.dumps(update.params["blocks"])


async def test_access_request_declined_with_a_comment(slack_app: StartSlack, people: FakeSlack, stages: Path) -> None:
    h = await slack_app(stages)
    await command(h, "U0ANN", "start access-request system=aws")
    form = await opened_view(people, 1)
    resp = await h.submit("U0ANN", form, {
        "system": {"type": "static_select", "selected_option": {"value": "aws"}},
        "level": {"type": "radio_buttons", "selected_option": {"value": "admin"}},
        "reason": {"type": "plain_text_input", "value": "deploys <!channel> & <@U0BOB>"},
        "approver": {"type": "users_select", "selected_user": "U0BOB"},
    })
    assert resp.status == 200 and not (resp.json or {}).get("errors")
    ts, blocks = await card(people, "DU0BOB")  # validated against the Block Kit schema
    facts = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1]
             for b in blocks if b["type"] == "section" for f in b.get("fields") or []}
    # The author's "<@{requester}>" is a mention; what the requester typed is only text.
    assert facts["*Requested by*"] == "<@U0ANN>"
    assert facts["*Reason*"] == "deploys &lt;!channel&gt; &amp; &lt;@U0BOB&gt;"
    assert facts["*Level*"] == "admin" and facts["*System*"] == "aws"
    task_id = int(await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'approve'"))
    await h.click("U0BOB", "flowbot_decline", str(task_id), channel="DU0BOB", message_ts=ts)
    comment_form = await opened_view(people, 2)
    empty = await h.submit("U0BOB", comment_form, {"comment": {"type": "plain_text_input", "value": ""}})
    assert "comment" in (empty.json or {}).get("errors", {})
    await h.submit("U0BOB", comment_form, {"comment": {"type": "plain_text_input", "value": "use read only"}})
    report = await run_of(h, "access-request", "completed")
    assert [s["stage"] for s in report["steps"]] == ["request", "approve", "notify-refused"]
    assert report["context"]["refused"] == "use read only"
    await card(people, "DU0ANN")
    assert "declined: use read only" in text_of(people, "DU0ANN")

    async def resolved() -> Any:
        return [c for c in people.calls("chat.update") if c.params.get("channel") == "DU0BOB"]

    [update] = await eventually(resolved, what="Bob's card resolved")
    assert_valid_blocks(update.params["blocks"])
    flat = json.dumps(update.params["blocks"])
    assert "*Requested by*\\n<@U0ANN>" in flat and "&lt;!channel&gt;" in flat and "<!channel>" not in flat


async def test_helpdesk_ticket_claimed_by_a_team_member(slack_app: StartSlack, people: FakeSlack, stages: Path) -> None:
    h = await slack_app(stages)
    await command(h, "U0ANN", 'start helpdesk summary="VPN is down" priority=high')
    sam_ts, sam_card = await card(people, "DU0SAM")
    tom_ts, _ = await card(people, "DU0TOM")
    assert "VPN is down" in json.dumps(sam_card) and "flowbot_claim" in json.dumps(sam_card)
    task_id = int(await scalar(h.app.store, "SELECT id FROM tasks WHERE stage = 'resolve'"))
    await h.click("U0TOM", "flowbot_claim", str(task_id), channel="DU0TOM", message_ts=tom_ts)

    async def claimed() -> Any:
        assignee = await scalar(h.app.store, "SELECT assignee FROM tasks WHERE id = :t", t=task_id)
        return assignee.get("claimed_by") == "U0TOM"

    await eventually(claimed, what="Tom's claim")
    await h.click("U0SAM", "flowbot_claim", str(task_id), channel="DU0SAM", message_ts=sam_ts)  # too late
    open_ts, open_card = await card(people, "DU0TOM", 2)  # Tom's own card with Open
    assert "flowbot_open" in json.dumps(open_card)
    await h.click("U0TOM", "flowbot_open", str(task_id), channel="DU0TOM", message_ts=open_ts)
    form = await opened_view(people, 1)
    await h.submit("U0TOM", form, {
        "outcome": {"type": "radio_buttons", "selected_option": {"value": "fixed"}},
        "resolution": {"type": "plain_text_input", "value": "restarted the gateway"},
    })
    report = await run_of(h, "helpdesk", "completed")
    assert [s["stage"] for s in report["steps"]] == ["open", "resolve", "close"]
    assert report["context"]["outcome"] == "fixed"
    assert report["steps"][1]["completed_by"] == "U0TOM"
    await card(people, "DU0ANN")
    assert "restarted the gateway" in text_of(people, "DU0ANN")
    assert int(await scalar(h.app.store, "SELECT count(*) FROM runs")) == 1
