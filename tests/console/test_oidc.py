"""Sign-in through an OpenID Connect provider, against a real provider on loopback, in Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from browsing import Console, console_settings, start_console
from oidc_provider import Provider


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    p = Provider()
    runner = web.AppRunner(p.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    p.issuer = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield p
    finally:
        await runner.cleanup()


@pytest.fixture
async def oidc_console(database_url: str, tmp_path: Path, provider: Provider) -> AsyncIterator[Console]:
    settings = console_settings(database_url, tmp_path, oidc_issuer=provider.issuer,
                                oidc_client_id=provider.client_id, oidc_client_secret=provider.client_secret)
    async for console in start_console(settings):
        yield console


async def test_a_person_signs_in_through_the_identity_provider(oidc_console, provider, page) -> None:
    await page.goto(oidc_console.base + "/console/board")
    await page.wait_for_url(lambda url: "/console/signin?next=" in url)
    await page.get_by_role("button", name="Sign in with your identity provider").click()
    await page.wait_for_url("**/console/board")
    assert "olga@example.com" in await page.locator(".who").inner_text()


async def test_an_id_token_with_the_wrong_nonce_signs_nobody_in(oidc_console, provider, page) -> None:
    provider.tamper_nonce = True
    await page.goto(oidc_console.base + "/console/signin")
    await page.get_by_role("button", name="Sign in with your identity provider").click()
    await page.get_by_role("heading", name="Sign-in failed").wait_for()
    assert "nonce" in (await page.locator("main").inner_text()).lower()
    await page.goto(oidc_console.base + "/console/inbox")
    await page.wait_for_url(lambda url: "/console/signin?next=" in url)


async def test_a_callback_with_a_forged_state_is_refused(oidc_console, provider, page) -> None:
    await page.goto(oidc_console.base + "/console/oidc/callback?code=x&state=forged")
    await page.get_by_role("heading", name="Sign-in failed").wait_for()


@pytest.fixture
async def admin_claim_console(database_url: str, tmp_path: Path, provider: Provider) -> AsyncIterator[Console]:
    settings = console_settings(database_url, tmp_path, oidc_issuer=provider.issuer,
                                oidc_client_id=provider.client_id, oidc_client_secret=provider.client_secret,
                                oidc_admin_claim="groups=flowbot-admins", admins=("root@example.com",))
    async for console in start_console(settings):
        yield console


async def _sign_in(console: Console, page) -> str:
    await page.goto(console.base + "/console/signin")
    await page.get_by_role("button", name="Sign in with your identity provider").click()
    await page.wait_for_url("**/console/inbox")
    return await page.locator(".who").inner_text()


async def test_an_oidc_sign_in_is_a_member_unless_the_admin_claim_or_flowbot_admins_says_admin(
        admin_claim_console, provider, browser) -> None:
    async def outbox_status(who_claims: dict, email: str) -> tuple[str, int]:
        provider.claims, provider.email = who_claims, email
        context = await browser.new_context()
        try:
            page = await context.new_page()
            who = await _sign_in(admin_claim_console, page)
            resp = await page.goto(admin_claim_console.base + "/console/outbox")
            return who.splitlines()[0], resp.status
        finally:
            await context.close()

    assert await outbox_status({"groups": ["staff"]}, "olga@example.com") == ("olga@example.com", 403)
    assert await outbox_status({"groups": ["staff", "flowbot-admins"]}, "olga@example.com") == (
        "olga@example.com (admin)", 200)
    assert await outbox_status({}, "Root@Example.com") == ("root@example.com (admin)", 200)


def test_the_admin_claim_is_a_true_claim_or_a_value_in_it() -> None:
    from engine.web.console.oidc import admin_by_claim

    assert admin_by_claim({"flowbot_admin": True}, "flowbot_admin")
    assert not admin_by_claim({"flowbot_admin": False}, "flowbot_admin")
    assert admin_by_claim({"role": "admin"}, "role=admin")
    assert not admin_by_claim({"role": "administrator"}, "role=admin")
    assert admin_by_claim({"groups": ["a", "ops"]}, "groups=ops")
    assert not admin_by_claim({"groups": ["a"]}, "groups=ops")
    assert not admin_by_claim({"groups": ["ops"]}, None)
