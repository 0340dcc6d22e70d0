"""The shipped expense workflow, driven to its end through the test kit (the ``flow`` fixture)."""

from __future__ import annotations

from engine.testing import Flow

CLAIM = {"employee": "Ann", "amount": 42.5, "currency": "EUR", "description": "Taxi to the airport",
         "manager_email": "bob@example.com", "requester": "ann@example.com"}


async def test_a_claim_posted_to_the_hook_is_paid_once_the_manager_approves(flow: Flow) -> None:
    answer = await flow.hook("expense", json=CLAIM)
    assert answer.status == 200, answer.text
    [run_id] = answer.run_ids
    run = await flow.run(run_id)
    [card] = flow.slack.messages_to("bob@example.com")
    assert "Taxi to the airport" in card and "42.5 EUR" in card
    await run.task("review").approve(as_="bob@example.com")
    report = await run.wait()
    assert report.status == "completed"
    assert report.stages == ["review", "pay"]  # a hook is no step: it starts the run
    assert report.context["payment"].startswith("PAY-")
    assert "was approved" in flow.slack.messages_to("ann@example.com")[-1]


async def test_a_declined_claim_tells_the_requester_why(flow: Flow) -> None:
    [run_id] = (await flow.hook("expense", json=CLAIM)).run_ids
    run = await flow.run(run_id)
    await run.task("review").decline(comment="not a business trip", as_="bob@example.com")
    report = await run.wait()
    assert report.stages[-1] == "notify-declined" and report.status == "completed"
    assert report.context["declined_because"] == "not a business trip"
    assert "not a business trip" in flow.slack.messages_to("ann@example.com")[-1]


async def test_an_unanswered_claim_is_reminded_after_a_day_and_goes_to_finance_after_three(flow: Flow) -> None:
    [run_id] = (await flow.hook("expense", json=CLAIM)).run_ids
    run = await flow.run(run_id)
    await flow.clock.advance("25h")
    assert len(flow.slack.messages_to("bob@example.com")) == 2  # the card, then the reminder
    assert (await run.task("review")).assignee == {"users": ["bob@example.com"]}
    await flow.clock.advance("2d")
    task = await run.task("review")
    assert task.assignee == {"users": ["finance@example.com"]}
    assert flow.slack.messages_to("finance@example.com")
    await task.approve()  # as its one assignee, finance
    assert (await run.wait()).status == "completed"


async def test_a_claim_filed_with_the_start_form_reaches_the_manager(flow: Flow) -> None:
    run = await flow.start("expense", {"description": "Hotel", "amount": 120, "currency": "EUR",
                                       "manager_email": "bob@example.com"}, as_="ann@example.com")
    report = await run.wait()
    assert report.status == "waiting" and report.stages == ["submit", "review"]
    await run.task("review").approve(as_="bob@example.com")
    assert (await run.wait()).status == "completed"


async def test_a_claim_missing_fields_is_refused_by_the_hook_and_starts_nothing(flow: Flow) -> None:
    answer = await flow.hook("expense", json={"employee": "Ann"})
    assert answer.status == 422
    assert set(answer.json["errors"]) == {"amount", "description", "manager_email"}
    assert await flow.runs("expense") == []
