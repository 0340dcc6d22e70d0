"""The shipped purchase workflow (and the invoice-processing workflow its nightly job feeds),
driven to their ends through the test kit: two approvals from the purchasing team (never the
requester's own) within two business days, else the finance leads, else declined; the supplier's
payment webhook completing the wait on its order id, even when it comes first; an unpaid order
chased; invoices fanned out every night."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from engine.durations import parse_duration
from engine.errors import Forbidden
from engine.testing import Flow, Run

REQUEST = {"item": "Standing desk", "supplier": "Desks & Co", "amount": 1200, "currency": "EUR"}


async def approved_order(flow: Flow) -> tuple[Run, str]:
    run = await flow.start("purchase", REQUEST, as_="ann@example.com")
    await run.task("approve").approve(as_="pat@example.com")
    await run.task("approve").approve(as_="lee@example.com")
    report = await run.wait()
    return run, report.context["order_id"]


async def test_an_approved_purchase_is_ordered_and_completes_when_the_supplier_pays(flow: Flow) -> None:
    run = await flow.start("purchase", REQUEST, as_="ann@example.com")
    for member in ("pat@example.com", "lee@example.com", "kim@example.com"):
        assert "Standing desk" in flow.slack.messages_to(member)[0]
    first = await run.task("approve").approve(as_="lee@example.com")
    assert first["status"] == "recorded"  # one approval of two: the task stays open
    assert (await run.report()).stages == ["request", "approve"]
    await run.task("approve").approve(as_="kim@example.com", comment="within budget")
    report = await run.wait()  # waiting for the payment: nothing to do until the supplier calls
    assert report.status == "waiting"
    assert report.context["approved_by"] == ["lee@example.com", "kim@example.com"]
    order_id = report.context["order_id"]
    assert report.step("payment")["waiting_for"]["key"] == order_id
    assert order_id in flow.slack.messages_to("ann@example.com")[-1]

    answer = await flow.hook("purchase/payments", json={"order_id": order_id, "amount": 1200})
    assert answer.status == 200 and answer.json == {"ok": True}
    report = await run.wait()
    assert report.status == "completed"
    assert report.stages == ["request", "approve", "order", "payment", "record-payment"]
    assert report.context["paid"] == 1200
    assert "is paid" in flow.slack.messages_to("ann@example.com")[-1]


async def test_a_payment_for_another_order_leaves_the_run_waiting(flow: Flow) -> None:
    run, order_id = await approved_order(flow)
    assert order_id != "PO-999999"
    assert (await flow.hook("purchase/payments", json={"order_id": "PO-999999", "amount": 5})).status == 200
    report = await run.report()
    assert report.step("payment")["status"] == "pending" and "paid" not in report.context


async def test_a_payment_that_arrives_before_the_wait_begins_still_completes_it(flow: Flow) -> None:
    run = await flow.start("purchase", REQUEST, as_="ann@example.com")
    task = await run.task("approve")
    # The order id is the order task's: the one after the approval's (ids come in sequence).
    early = f"PO-{task.id + 1:06d}"
    assert await flow.emit("payment.received", early, {"paid_amount": 1200}) == 0  # kept for later
    await task.approve(as_="kim@example.com")
    await task.approve(as_="pat@example.com")
    report = await run.wait()
    assert report.context["order_id"] == early
    assert report.status == "completed" and report.context["paid"] == 1200


async def test_an_unpaid_order_is_chased_after_two_weeks(flow: Flow) -> None:
    run, _ = await approved_order(flow)
    await flow.clock.advance("13d")
    assert flow.slack.messages_in("#purchasing") == []
    await flow.clock.advance("1d")
    report = await run.wait()
    assert report.stages[-1] == "chase-payment" and report.context["overdue"] is True
    [chased] = flow.slack.messages_in("#purchasing")
    assert "still unpaid" in chased.text


async def test_the_requester_may_not_approve_their_own_purchase_and_one_decline_declines_it(flow: Flow) -> None:
    run = await flow.start("purchase", REQUEST, as_="pat@example.com")  # pat is in @purchasing
    with pytest.raises(Forbidden):
        await run.task("approve").approve(as_="pat@example.com")
    await run.task("approve").approve(as_="lee@example.com")
    await run.task("approve").decline(as_="kim@example.com", comment="buy it second hand")
    report = await run.wait()
    assert report.stages[-1] == "notify-declined" and report.context["declined_because"] == "buy it second hand"
    assert "buy it second hand" in flow.slack.messages_to("pat@example.com")[-1]


async def test_without_two_approvals_in_two_business_days_the_finance_leads_decide(flow: Flow) -> None:
    run = await flow.start("purchase", REQUEST, as_="ann@example.com")
    await run.task("approve").approve(as_="lee@example.com")  # one of the two
    deadline = parse_duration("2 business days").after(flow.clock.now, "Europe/Berlin")
    assert deadline.astimezone(ZoneInfo("Europe/Berlin")).weekday() < 5
    await flow.clock.advance_to(deadline - dt.timedelta(minutes=1))
    assert (await run.task("approve")).assignee["team"] == "@purchasing"
    await flow.clock.advance("1m")
    task = await run.task("approve")
    assert task.assignee["users"] == ["cfo@example.com", "finance-director@example.com"]
    assert "Standing desk" in flow.slack.messages_to("cfo@example.com")[0]
    await task.approve(as_="cfo@example.com")  # Lee's approval still counts: this is the second
    report = await run.wait()
    assert report.context["approved_by"] == ["lee@example.com", "cfo@example.com"]
    assert report.stages[2] == "order" and report.status == "waiting"  # ordered: waits for the payment


async def test_a_request_nobody_approves_in_three_business_days_is_declined(flow: Flow) -> None:
    run = await flow.start("purchase", REQUEST, as_="ann@example.com")
    await flow.clock.advance("2 business days")
    assert (await run.task("approve")).assignee["users"] == ["cfo@example.com", "finance-director@example.com"]
    await flow.clock.advance("1 business day")
    report = await run.wait()
    assert report.status == "completed" and report.stages[-1] == "notify-declined"
    assert report.context["declined_because"] == "nobody approved it in time"
    assert "nobody approved it in time" in flow.slack.messages_to("ann@example.com")[-1]


async def test_the_payment_webhook_refuses_a_body_that_is_no_payment(flow: Flow) -> None:
    answer = await flow.hook("purchase/payments", json={"amount": -3})
    assert answer.status == 422 and set(answer.json["errors"]) == {"order_id", "amount"}


async def test_each_night_the_suppliers_invoices_become_invoice_processing_runs(flow: Flow) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    local = flow.clock.now.astimezone(berlin)
    night = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(2, 0), tzinfo=berlin)
    await flow.clock.advance_to(night - dt.timedelta(minutes=1))
    assert await flow.runs("invoice-processing") == []
    await flow.clock.advance("1m")
    runs = await flow.runs("invoice-processing")
    assert len(runs) == 3
    reports = {r.context["invoice"]: r for r in [await run.wait() for run in runs]}
    assert reports["INV-2001"].status == "completed" and reports["INV-2001"].context["booked"]["amount"] == 1200
    assert reports["INV-2002"].status == "completed"
    # The one invoiced above its order waits on accounts, who approve it: then it is booked.
    mismatch = reports["INV-2003"]
    assert mismatch.status == "waiting" and mismatch.step("review")["payload"]["difference"] == 60
    [pending] = [run for run in runs if run.id == mismatch["id"]]
    await pending.task("review").approve(as_="accounts@example.com")
    assert (await pending.wait()).context["booked"]["invoice"] == "INV-2003"
    await flow.clock.advance("1d")
    assert len(await flow.runs("invoice-processing")) == 6  # the next night's


async def test_accounts_reject_an_invoice_and_purchasing_hears_of_it(flow: Flow) -> None:
    await flow.run_job("purchase/nightly-invoices")
    [run] = [r for r in await flow.runs("invoice-processing")
             if (await r.report()).context.get("invoice") == "INV-2003"]
    await run.task("review").decline(comment="price was agreed at 500", as_="accounts@example.com")
    assert (await run.wait()).context["rejected"] == "price was agreed at 500"
    assert "INV-2003" in flow.slack.messages_in("#purchasing")[-1].text
