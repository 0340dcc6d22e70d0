"""Fixtures of the console tests (helpers in ``browsing``): a flowbot on loopback, a client
with cookies, and a real Chromium (Debian's ``chromium``) driven by Playwright. The browser
tests never skip in CI: with ``CI`` set, a missing Chromium fails them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from browsing import CHROMIUM, CHROMIUM_ARGS, Console, Inbox, Server, console_settings, start_console


@pytest.fixture
async def console(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    async for c in start_console(console_settings(database_url, tmp_path)):
        yield c


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client with its own cookie jar (the loopback address's cookies are kept)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (one per test session)."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240  (once per session)
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing ({CHROMIUM}): run .ci/install-deps")
        pytest.skip("Chromium is not installed: run .ci/install-deps (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser context (its own cookies) and page."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        p = await context.new_page()
        p.set_default_timeout(10_000)
        yield p
    finally:
        await context.close()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, Server]]:
    inbox = Inbox()
    server = Server(inbox)
    server.start()
    try:
        yield inbox, server
    finally:
        server.stop()
