"""An operator acts on runs in a real Chromium: cancel, retry, rerun (the engine's operations,
with their access checks and audit records)."""

from __future__ import annotations

from sqlalchemy import text
from test_browser_forms import _sign_in

EXPENSE = {"employee": "ann@example.com", "amount": 12, "currency": "EUR", "description": "Taxi",
           "manager_email": "max@example.com"}


async def test_an_operator_cancels_retries_and_reruns_runs(console, page) -> None:
    waiting = await console.trigger("expense", EXPENSE, stage="review")
    await _sign_in(page, console, "admin@example.com", role="admin")
    await page.goto(f"{console.base}/console/runs/{waiting}")
    await page.get_by_label("Reason (optional)").fill("duplicate claim")
    await page.get_by_role("button", name="Cancel run").click()
    await page.locator(".badge.cancelled").first.wait_for()
    report = await console.app.store.report(waiting)
    assert report is not None and report["status"] == "cancelled"
    assert any(a["action"] == "cancel" and a["edge"] == "web" for a in report["audit"])

    # A failed run: its failing step fixed (here: the data), retried from that step.
    failing = await console.trigger("onboard", {"name": "Kim", "it": "ivy@example.com", "fail": True})
    async with console.app.db.transaction() as tx:
        await tx.execute(text("UPDATE tasks SET status = 'failed', error = 'RuntimeError: boom' "
                              "WHERE run_id = CAST(:r AS uuid) AND status = 'pending'"), {"r": failing})
        await tx.execute(text("UPDATE runs SET status = 'failed' WHERE id = CAST(:r AS uuid)"), {"r": failing})
    await page.goto(f"{console.base}/console/runs/{failing}")
    await page.get_by_role("button", name="Retry failed steps").click()
    await page.wait_for_url(f"**/console/runs/{failing}")
    report = await console.app.store.report(failing)
    assert report is not None and report["status"] in ("running", "waiting")

    rerun_box = page.get_by_label("Payload of the rerun (JSON; empty: the same)")
    await rerun_box.fill('{"name": "Lee", "it": "ivy@example.com"}')
    await page.get_by_role("button", name="Rerun").click()
    await page.get_by_text("Rerun of").wait_for()
    new_id = page.url.rsplit("/", 1)[1]
    rerun = await console.app.store.report(new_id)
    assert rerun is not None and rerun["rerun_of"] == failing


async def test_a_person_who_may_not_operate_sees_no_actions_and_is_refused(console, page) -> None:
    run_id = await console.trigger("expense", EXPENSE, stage="review")
    await _sign_in(page, console, "max@example.com")  # the assignee: may read the run, not cancel it
    await page.goto(f"{console.base}/console/runs/{run_id}")
    assert await page.get_by_role("button", name="Cancel run").count() == 0
    csrf = await page.evaluate("document.querySelector('meta[name=csrf-token]').content")
    status = await page.evaluate(
        "async ([u, c]) => (await fetch(u, {method: 'POST', headers: {'X-CSRF-Token': c}})).status",
        [f"{console.base}/console/runs/{run_id}/cancel", csrf])
    assert status == 403
    report = await console.app.store.report(run_id)
    assert report is not None and report["status"] == "waiting"
