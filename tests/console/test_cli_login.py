"""The real CLI in a subprocess: `flowbot run` prints the local admin's sign-in link, `flowbot
login --as EMAIL` prints one for anyone; each signs its person in once."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from support import ROOT, cli_env, flowbot, free_port, spawn, stop, wait_listening
from test_pages import _csrf


async def _spend(http: aiohttp.ClientSession, link: str) -> int:
    async with http.get(link) as resp:
        csrf = _csrf(await resp.text())
    async with http.post(link, data={"_csrf": csrf}, allow_redirects=False) as resp:
        return resp.status


async def test_flowbot_run_prints_the_local_admins_link_and_login_prints_one_for_a_person(
        database_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(database_url, ROOT / "stages", FLOWBOT_HOME=str(tmp_path / "home"), PORT=str(port),
                  FLOWBOT_HOST="127.0.0.1", EXPENSE_HOOK_TOKEN="x")
    log = tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=120)
        admin_link = re.search(r"http://127\.0\.0\.1:\d+/console/link/\S+", log.read_text())
        assert admin_link, log.read_text()
        out = flowbot("login", "--as", "ann@example.com", env=env)
        assert out.returncode == 0, out.stderr
        ann_link = re.search(r"http://\S+/console/link/\S+", out.stdout)
        assert ann_link, out.stdout
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            assert await _spend(http, admin_link.group(0)) == 303
            async with http.get(f"http://127.0.0.1:{port}/console/outbox") as resp:
                assert resp.status == 200  # an admin
                assert "(admin)" in await resp.text()
            assert await _spend(http, admin_link.group(0)) == 410  # once
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            assert await _spend(http, ann_link.group(0)) == 303
            async with http.get(f"http://127.0.0.1:{port}/console/inbox") as resp:
                assert "ann@example.com" in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/console/outbox") as resp:
                assert resp.status == 403  # a member
    finally:
        stop(server)
    bad = flowbot("login", "--as", "", env=env)
    assert bad.returncode == 2 and "needs an email" in bad.stdout + bad.stderr
