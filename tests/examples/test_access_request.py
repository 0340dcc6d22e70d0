"""The shipped access-request workflow, driven to its end through the test kit."""

from __future__ import annotations

import pytest

from engine.errors import Forbidden, Invalid
from engine.testing import Flow, FlowTestError

REQUEST = {"system": "aws", "level": "admin", "reason": "deploys", "approver": "bob@example.com"}


async def test_an_approved_request_grants_the_access_and_tells_the_requester(flow: Flow) -> None:
    run = await flow.start("access-request", REQUEST, as_="ann@example.com")
    [card] = flow.slack.messages_to("bob@example.com")
    assert "deploys" in card and "aws" in card
    await run.task("approve").approve(as_="bob@example.com")
    report = await run.wait()
    assert report.status == "completed" and report.stages == ["request", "approve", "grant"]
    assert report.context["granted"] == {"system": "aws", "level": "admin"}


async def test_a_decline_needs_a_comment_and_the_requester_is_told_it(flow: Flow) -> None:
    run = await flow.start("access-request", REQUEST, as_="ann@example.com")
    with pytest.raises(Invalid, match="comment"):
        await run.task("approve").decline(as_="bob@example.com")
    await run.task("approve").decline(comment="use read only", as_="bob@example.com")
    report = await run.wait()
    assert report.stages[-1] == "notify-refused" and report.context["refused"] == "use read only"


async def test_only_the_chosen_approver_may_decide(flow: Flow) -> None:
    run = await flow.start("access-request", REQUEST, as_="ann@example.com")
    with pytest.raises(Forbidden, match=r"^mallory@example\.com may not"):
        await run.task("approve").approve(as_="mallory@example.com")
    assert (await run.wait()).status == "waiting"


async def test_the_approver_is_reminded_after_four_hours(flow: Flow) -> None:
    await flow.start("access-request", REQUEST, as_="ann@example.com")
    await flow.clock.advance("3h")
    assert len(flow.slack.messages_to("bob@example.com")) == 1
    await flow.clock.advance("1h")
    assert len(flow.slack.messages_to("bob@example.com")) == 2


async def test_asking_for_a_stage_the_workflow_lacks_names_the_stages_it_has(flow: Flow) -> None:
    run = await flow.start("access-request", REQUEST, as_="ann@example.com")
    with pytest.raises(FlowTestError, match=r'no stage "aprove" \(its stages: request, approve, grant'):
        await run.task("aprove").approve()
    with pytest.raises(FlowTestError, match='"grant" of "access-request" is a script'):
        await run.task("grant")
    await run.task("approve").approve(as_="bob@example.com")
    with pytest.raises(FlowTestError, match=r'no task waits on a person at "approve" .*run completed'):
        await run.task("approve").approve(as_="bob@example.com")
