"""People answer forms in a real Chromium: sign-in link, inbox, the web form, submit."""

from __future__ import annotations

from browsing import screenshot

from engine.runtime.report import wait_for


async def test_a_manager_approves_an_expense_from_a_one_time_link(console, page) -> None:
    run_id = await console.trigger("expense", {"employee": "ann@example.com", "amount": 42.5, "currency": "EUR",
                                               "description": "Train to Lyon", "manager_email": "max@example.com"},
                                   stage="review")
    task_id = await console.pending_form(run_id)
    link = await console.link("max@example.com", task_id=task_id)

    await page.goto(link)
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(f"**/console/tasks/{task_id}")
    await page.get_by_role("heading", name="Expense approval").wait_for()
    assert "Train to Lyon" in await page.locator("dl.facts").inner_text()
    await screenshot(page, "web-form")
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_role("heading", name="Approved. Thank you.").wait_for()

    report = await console.app.store.report(run_id)
    assert report is not None
    review = next(s for s in report["steps"] if s["stage"] == "review")
    assert review["status"] == "completed"
    assert review["completed_by"] == "max@example.com"

    # The link was single-use: a second visit does not sign anyone in.
    await page.context.clear_cookies()
    await page.goto(link)
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("heading", name="This link does not work").wait_for()
    data = await wait_for(console.app.store, run_id, within=1)
    assert data["status"] in ("running", "completed", "waiting")


async def _sign_in(page, console, person: str, *, role: str = "member") -> None:
    await page.goto(await console.link(person, role=role))
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url("**/console/inbox")


async def test_a_start_form_completed_in_the_browser_starts_a_run(console, page) -> None:
    await _sign_in(page, console, "ann@example.com")
    await page.get_by_role("link", name="Expense approval").click()
    await page.get_by_label("What was it for?").fill("Conference ticket")
    await page.get_by_label("Amount").fill("199.90")
    await page.get_by_label("Currency").select_option("USD")
    await page.get_by_label("Your manager's email").fill("max@example.com")
    await page.get_by_role("button", name="Send for approval").click()
    await page.wait_for_url("**/console/runs/*")
    run_id = page.url.rsplit("/", 1)[1]
    report = await console.app.store.report(run_id)
    assert report is not None
    assert report["context"]["started_by"] == "ann@example.com"
    assert [(s["stage"], s["status"]) for s in report["steps"]] == [("submit", "completed"), ("review", "pending")]
    assert report["steps"][1]["payload"]["amount"] == 199.9
    assert report["steps"][1]["assignee"] == {"users": ["max@example.com"]}


async def test_a_multi_page_form_shows_a_validation_error_then_takes_a_valid_answer(console, page) -> None:
    run_id = await console.trigger("onboard", {"name": "Kim", "team": "ops", "it": "ivy@example.com"})
    task_id = await console.pending_form(run_id)
    await _sign_in(page, console, "ivy@example.com")
    await page.goto(f"{console.base}/console/tasks/{task_id}")
    assert "Set up Kim" in await page.locator(".md").inner_text()
    assert await page.get_by_label("Desks").input_value() == "1"  # the default
    await page.get_by_label("Login name").fill("k")  # too short
    await page.get_by_label("linux").check()
    await page.get_by_role("button", name="Next").click()
    await page.get_by_text("Please correct 1 field below.").wait_for()
    error = page.locator("#err-login")
    assert "at least 3" in await error.inner_text()
    assert await page.get_by_label("Login name").get_attribute("aria-invalid") == "true"
    await page.get_by_label("Login name").fill("kim")
    await page.get_by_role("button", name="Next").click()
    # "linux" skips the Mac page (Page(when=...)): straight to the dates.
    await page.get_by_label("First day").wait_for()
    assert await page.get_by_label("Model").count() == 0
    await page.get_by_label("First day").fill("2026-03-02")
    await page.get_by_label("Groups").select_option(["eng", "ops"])
    city = page.get_by_label("City")
    await city.fill("li")  # Berlin, Lisbon, Lima
    await page.wait_for_function("document.querySelectorAll('#dl-city option').length === 3")
    await city.fill("Lisbon")
    await page.get_by_role("button", name="Submit").click()
    await page.get_by_role("heading", name="Sent. Thank you.").wait_for()
    report = await console.app.store.report(run_id)
    assert report is not None
    answers = report["context"]["answers"]
    assert answers["login"] == "kim" and answers["laptop"] == "linux" and answers["desks"] == 1
    assert answers["start"] == "2026-03-02" and answers["groups"] == ["eng", "ops"] and answers["city"] == "Lisbon"
    assert "model" not in answers


async def test_a_form_can_be_completed_with_the_keyboard_alone(console, page) -> None:
    run_id = await console.trigger("onboard", {"name": "Lee", "team": "eng", "it": "ivy@example.com"})
    task_id = await console.pending_form(run_id)
    await _sign_in(page, console, "ivy@example.com")
    await page.goto(f"{console.base}/console/tasks/{task_id}")
    kb = page.keyboard

    async def tab_to(label: str) -> None:
        for _ in range(40):
            await kb.press("Tab")
            focused = await page.evaluate(
                "() => { const e = document.activeElement; const l = e && e.labels && e.labels[0];"
                " return l ? l.innerText.trim() : (e ? e.innerText || e.value : ''); }")
            if focused.startswith(label):
                return
        raise AssertionError(f"Tab never reached {label!r}")

    await tab_to("Login name")
    await kb.type("lee")
    await tab_to("mac")
    await kb.press("Space")
    await tab_to("Next")
    await kb.press("Enter")
    await page.get_by_label("Model").wait_for()  # the Mac page this time
    await tab_to("Model")
    await kb.press("ArrowDown")
    await kb.press("ArrowDown")
    await tab_to("Next")
    await kb.press("Enter")
    await page.get_by_label("First day").wait_for()
    await tab_to("First day")
    await kb.type("04022026")  # the date input takes digits in the locale's order (en-US: mm dd yyyy)
    await tab_to("City")
    await kb.type("Berlin")
    await tab_to("Submit")
    await kb.press("Enter")
    await page.get_by_role("heading", name="Sent. Thank you.").wait_for()
    report = await console.app.store.report(run_id)
    assert report is not None
    answers = report["context"]["answers"]
    assert (answers["login"], answers["laptop"], answers["model"], answers["start"], answers["city"]) == \
        ("lee", "mac", "pro", "2026-04-02", "Berlin")


UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
    .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length))
    .map(e => e.name || e.id)"""


async def test_pages_fit_a_phone_and_every_input_has_a_label(console, browser) -> None:
    run_id = await console.trigger("onboard", {"name": "Kim", "team": "ops", "it": "ivy@example.com"})
    task_id = await console.pending_form(run_id)
    context = await browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)
    try:
        page = await context.new_page()
        await _sign_in(page, console, "ivy@example.com", role="admin")
        for path in [f"/console/tasks/{task_id}", "/console/start/expense/submit", "/console/board",
                     "/console/tasks", "/console/inbox", f"/console/runs/{run_id}"]:
            await page.goto(console.base + path)
            assert await page.evaluate(UNLABELLED) == [], path
            overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (path, overflow)
    finally:
        await context.close()
