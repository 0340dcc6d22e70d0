"""Operators in a real Chromium: the live board, a run page, payloads shown as text."""

from __future__ import annotations

from browsing import screenshot
from test_browser_forms import _sign_in

from engine.web.console.live import CHANGED, Hub

EXPENSE = {"employee": "ann@example.com", "amount": 12, "currency": "EUR", "description": "Taxi",
           "manager_email": "max@example.com"}


async def test_the_board_updates_live_when_a_run_moves(console, page) -> None:
    for i in range(3):
        await console.trigger("expense", {**EXPENSE, "description": f"Claim {i}"}, stage="review")
    await _sign_in(page, console, "admin@example.com", role="admin")
    await page.goto(console.base + "/console/board")
    waiting = page.locator("#col-waiting .badge")
    assert await waiting.inner_text() == "3"
    await page.locator(".live").get_by_text("Live").wait_for()
    await screenshot(page, "board")

    new_run = await console.trigger("expense", {**EXPENSE, "description": "Arrived while watching"}, stage="review")
    # No reload: the board hears of the change over Server-Sent Events and fetches its columns.
    await page.locator(f'a[href="/console/runs/{new_run}"]').wait_for(timeout=10_000)
    assert await waiting.inner_text() == "4"


async def test_a_payload_containing_a_script_tag_is_shown_as_text(console, page) -> None:
    evil = "<script>window.pwned = 1</script><img src=x onerror=\"window.pwned = 2\">"
    run_id = await console.trigger("expense", {**EXPENSE, "description": evil}, stage="review")
    task_id = await console.pending_form(run_id)
    await _sign_in(page, console, "max@example.com")
    await page.goto(f"{console.base}/console/tasks/{task_id}")
    assert evil in await page.locator("dl.facts").inner_text()
    assert await page.evaluate("window.pwned") is None
    await _sign_in(page, console, "admin@example.com", role="admin")
    await page.goto(f"{console.base}/console/runs/{run_id}")
    await page.locator("summary").first.click()
    assert "<script>window.pwned = 1</script>" in await page.locator("pre").nth(0).inner_text()
    assert await page.evaluate("window.pwned") is None


async def test_the_run_page_draws_the_graph_with_the_run_path(console, page) -> None:
    run_id = await console.trigger("onboard", {"name": "Kim", "team": "ops", "it": "ivy@example.com"})
    await _sign_in(page, console, "admin@example.com", role="admin")
    await page.goto(f"{console.base}/console/runs/{run_id}")
    intake = page.locator("#n_intake :is(path, polygon)").first
    setup = page.locator("#n_setup :is(path, polygon)").first
    assert await intake.evaluate("e => getComputedStyle(e).fill") == "rgb(231, 245, 236)"  # done
    assert await setup.evaluate("e => getComputedStyle(e).fill") == "rgb(239, 233, 251)"  # here now
    assert await page.locator("#n_done :is(path, polygon)").first.evaluate("e => getComputedStyle(e).fill") != \
        "rgb(231, 245, 236)"
    await screenshot(page, "run")


async def test_a_run_started_between_drawing_the_board_and_opening_its_stream_is_told_at_once(console) -> None:
    """The board page carries the mark it was drawn at; a change in the gap before the stream
    opens is announced as the stream's first notice, not lost."""
    hub = Hub(console.app.db, interval=3600)  # the poll never comes round again in this test
    drawn_at = await hub.mark()
    await console.trigger("expense", {**EXPENSE, "description": "In the gap"}, stage="review")
    async with hub.subscribe(since=drawn_at) as queue:
        assert queue.get_nowait() == CHANGED
    async with hub.subscribe(since=await hub.mark()) as queue:
        assert queue.empty()  # nothing moved since this board was drawn
    await hub.close()
