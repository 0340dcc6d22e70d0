"""The shipped helpdesk workflow, driven to its end through the test kit: a ticket for a team
(its members from stages/teams.toml, as Slack has no such group in the test)."""

from __future__ import annotations

import pytest

from engine.errors import Invalid
from engine.testing import Flow, FlowTestError


async def test_a_member_claims_the_ticket_resolves_it_and_the_run_closes(flow: Flow) -> None:
    run = await flow.trigger("helpdesk", {"summary": "VPN is down", "priority": "HIGH",
                                          "started_by": "ann@example.com"})
    task = await run.task("resolve")
    assert task.assignee == {"team": "@it-helpdesk"} and task.payload["priority"] == "high"
    with pytest.raises(FlowTestError, match="waits on @it-helpdesk: say who acts"):
        await task.submit({"outcome": "fixed", "resolution": "?"})  # a team's task: claimed first
    await task.claim(as_="sam@example.com")
    await run.task("resolve").submit({"outcome": "fixed", "resolution": "restarted the gateway"})
    report = await run.wait()
    assert report.status == "completed" and report.stages == ["open", "resolve", "close"]
    assert report.context["outcome"] == "fixed"
    assert "restarted the gateway" in flow.slack.messages_to("ann@example.com")[-1]


async def test_an_invalid_answer_is_refused_and_changes_nothing(flow: Flow) -> None:
    run = await flow.trigger("helpdesk", {"summary": "Printer jam"})
    await run.task("resolve").claim(as_="tom@example.com")
    with pytest.raises(Invalid, match="outcome"):
        await run.task("resolve").submit({"outcome": "shrug", "resolution": "?"})
    assert (await run.wait()).status == "waiting"


async def test_a_ticket_without_a_summary_fails_its_run(flow: Flow) -> None:
    run = await flow.trigger("helpdesk", {"priority": "low"})
    with pytest.raises(FlowTestError, match=r"open pending .*needs a summary"):
        await run.wait()  # its first attempt failed; the retry waits for its time
    await flow.clock.advance("5m")
    report = await run.wait()
    assert report.status == "failed" and "needs a summary" in report.step("open")["error"]
    assert report.step("open")["attempts"] == 3


async def test_an_unclaimed_ticket_goes_to_the_it_lead_after_eight_hours(flow: Flow) -> None:
    run = await flow.trigger("helpdesk", {"summary": "Laptop broken"})
    await flow.clock.advance("8h")
    task = await run.task("resolve")
    assert task.assignee == {"users": ["it-lead@example.com"]}
    await task.submit({"outcome": "workaround", "resolution": "loaner laptop"})
    assert (await run.wait()).status == "completed"


async def test_every_member_of_the_team_is_told_of_a_new_ticket(flow: Flow) -> None:
    await flow.trigger("helpdesk", {"summary": "Wifi slow"})
    for member in ("sam@example.com", "tom@example.com"):
        assert "Wifi slow" in flow.slack.messages_to(member)[0]
