"""The shipped weekly report: the job fires on Monday at 09:00 as the test's clock passes it."""

from __future__ import annotations

import datetime as dt

from engine.testing import Flow


async def test_the_report_is_posted_on_monday_morning_counting_real_runs_only(flow: Flow) -> None:
    answer = await flow.hook("expense", json={"employee": "Ann", "amount": 10, "description": "Lunch",
                                              "manager_email": "bob@example.com"})
    assert answer.status == 200
    await flow.trigger("inventory-reorder")  # a test run: not in the figures
    monday = flow.clock.now + dt.timedelta(days=(7 - flow.clock.now.weekday()) % 7 or 7)
    await flow.clock.advance_to(monday.replace(hour=8, minute=59, second=0))
    assert flow.slack.messages_in("#ops") == []
    await flow.clock.advance("1m")
    [post] = flow.slack.messages_in("#ops")
    assert post.text.startswith("Weekly flowbot report: ") and ", 0 failed" in post.text
    # The claim's run counts (it waits for Bob); the test run does not. (The nights on the way
    # ran the purchase example's invoice job: its runs count too.)
    assert "*expense*  1 run: " in post and "waiting" in post
    assert "inventory-reorder" not in post


async def test_the_report_can_be_fired_by_hand(flow: Flow) -> None:
    await flow.run_job("weekly-report")
    [post] = flow.slack.messages_in("#ops")
    assert "No runs this week" in post
