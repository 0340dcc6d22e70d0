"""Transport: signed requests only, HTTP mode beside the rest of flowbot, Socket Mode when asked,
"Slack is off" said once, and the app manifest."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from support import cli_env, eventually, flowbot, scalar, write_stages

from bot import manifest as bot_manifest
from bot.plugin import STATE_CONTEXT, SlackPlugin
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from tests.fakeslack import FakeSlack
from tests.slack import StartSlack, slack_settings

ROOT = Path(__file__).resolve().parents[2]

STAGES = {
    "hello/workflow.py": """
        from engine import Workflow
        workflow = Workflow("hello")
        hi = workflow.script("hi")
    """,
    "hello/hi.py": """
        def run(task, ctx):
            pass
    """,
}


async def test_a_forged_signature_is_refused_with_401_and_reaches_no_listener(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    payload = {"type": "block_actions", "user": {"id": "U0EVE"}, "trigger_id": "1.2.3",
               "actions": [{"action_id": "flowbot_approve", "value": "1", "block_id": "flowbot_task"}]}
    forged = await h.interact(payload, signature="v0=" + "0" * 64)
    assert forged.status == 401
    wrong_secret = await h.interact(payload, secret="not-the-secret")
    assert wrong_secret.status == 401
    assert fake_slack.requests == []  # no listener ran: not even auth.test


async def test_a_stale_timestamp_is_refused_even_with_a_valid_signature(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    stale = int(time.time()) - 10 * 60
    resp = await h.event({"type": "app_home_opened", "user": "U0ANN", "tab": "home"}, timestamp=stale)
    assert resp.status == 401
    assert fake_slack.requests == []


async def test_a_click_is_answered_at_once_and_handled_after_the_acks_still_due(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    with h.ctx.priority.urgent():  # another request of the burst still awaits its ack
        resp = await h.click("U0EVE", "flowbot_approve", "424242", channel="DU0EVE")
        assert (resp.status, resp.text) == (200, "")
        await asyncio.sleep(0.05)
        assert fake_slack.calls("chat.postEphemeral") == []  # Bolt has not run the listener yet
    await h.settle()
    [told] = fake_slack.calls("chat.postEphemeral")
    assert told.params["user"] == "U0EVE" and "no longer exists" in told.params["text"]


async def test_a_click_nobody_listens_to_is_answered_200_and_changes_nothing(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    resp = await h.click("U0ANN", "another_apps_button", "1", channel="DU0ANN")
    assert (resp.status, resp.text) == (200, "")
    await h.settle()
    assert [c.method for c in fake_slack.requests if c.method != "auth.test"] == []


async def test_ssl_check_is_answered_unsigned_and_malformed_signed_bodies_get_400(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    async with h.session.post(h.events_url, data="ssl_check=1&token=abc",
                              headers={"Content-Type": "application/x-www-form-urlencoded"}) as resp:
        assert resp.status == 200
    for body, content_type in (("payload=%7Bnot+json", "application/x-www-form-urlencoded"),
                               ("payload=%5B1%2C2%5D", "application/x-www-form-urlencoded"),
                               ("[1, 2]", "application/json")):
        bad = await h.post(body, content_type=content_type)
        assert bad.status == 400 and "malformed body" in bad.json["error"], body
    unsigned = await h.post("payload=%7Bnot+json", content_type="application/x-www-form-urlencoded",
                            signature="v0=" + "0" * 64)
    assert unsigned.status == 401  # the signature is checked before anything is read into the body
    assert [c.method for c in fake_slack.requests if c.method != "auth.test"] == []


async def test_a_burst_right_after_a_start_calls_auth_test_once(slack_app: StartSlack,
                                                                 fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    options = {"type": "block_suggestion", "user": {"id": "U0ANN"}, "team": {"id": "T0FAKE"},
               "action_id": "pick", "value": "x", "view": {"private_metadata": "no-such-session"}}
    resps = await asyncio.gather(*(h.interact(options) for _ in range(20)))
    assert [r.status for r in resps] == [200] * 20
    assert [r.json for r in resps] == [{"options": []}] * 20
    # The first request asked auth.test; the others waited for its answer instead of asking too.
    assert len(fake_slack.calls("auth.test")) == 1


async def test_web_api_calls_share_kept_alive_connections_closed_with_the_app(
        database_url: str, fake_slack: FakeSlack, tmp_path: Path) -> None:
    settings = slack_settings(database_url, write_stages(tmp_path / "stages", STAGES), fake_slack, tmp_path / "home")
    async with open_app(settings, pool_size=2) as app:
        client = app.state[STATE_CONTEXT].client
        for n in range(5):
            await client.chat_postMessage(channel="C0GENERAL", text=f"hello {n}")
        session = client.session
    # One connection for the five calls (with Slack: one TLS handshake, not five).
    assert len({c.peer for c in fake_slack.calls("chat.postMessage")}) == 1
    assert session is not None and session.closed


async def test_flowbot_run_asks_auth_test_at_start_and_says_who_it_is_or_why_slack_refused(
        slack_app: StartSlack, fake_slack: FakeSlack, caplog: Any) -> None:
    from bot.identity import identity_part

    h = await slack_app(STAGES)
    caplog.set_level(logging.INFO, logger="bot.identity")
    stop = asyncio.Event()
    stop.set()
    await identity_part(h.ctx.identity)(stop)
    assert "slack: signed in as" in caplog.text
    assert len(fake_slack.calls("auth.test")) == 1
    options = {"type": "block_suggestion", "user": {"id": "U0ANN"}, "team": {"id": "T0FAKE"},
               "action_id": "pick", "value": "x", "view": {"private_metadata": "no-such-session"}}
    assert (await h.interact(options)).json == {"options": []}
    assert len(fake_slack.calls("auth.test")) == 1  # requests use the answer asked at start

    refused = await slack_app(STAGES)
    fake_slack.fail("auth.test", "invalid_auth")
    await identity_part(refused.ctx.identity)(stop)
    assert "the bot token was refused (auth.test: invalid_auth)" in caplog.text


async def test_after_a_refused_request_or_a_failed_auth_test_the_next_request_authorizes(
        slack_app: StartSlack, fake_slack: FakeSlack) -> None:
    h = await slack_app(STAGES)
    options = {"type": "block_suggestion", "user": {"id": "U0ANN"}, "team": {"id": "T0FAKE"},
               "action_id": "pick", "value": "x", "view": {"private_metadata": "no-such-session"}}
    forged = await h.interact(options, signature="v0=" + "0" * 64)
    assert forged.status == 401 and fake_slack.requests == []
    fake_slack.fail("auth.test", "invalid_auth")
    resps = await asyncio.gather(*(h.interact(options) for _ in range(5)))
    # One was refused by Bolt (its auth.test failed); the next one asked again, and passed.
    refused = [r for r in resps if '"options"' not in r.text]
    assert len(refused) == 1 and "reinstall" in refused[0].text
    assert sorted(r.text for r in resps if r not in refused) == ['{"options": []}'] * 4
    assert len(fake_slack.calls("auth.test")) == 2


async def test_a_signed_url_verification_gets_its_challenge_back(slack_app: StartSlack) -> None:
    h = await slack_app(STAGES)
    body = json.dumps({"token": "x", "challenge": "abc123", "type": "url_verification"})
    resp = await h.post(body, content_type="application/json")
    assert resp.status == 200 and resp.json == {"challenge": "abc123"}


async def test_the_rest_of_flowbot_is_served_beside_slack(slack_app: StartSlack) -> None:
    h = await slack_app(STAGES)
    async with h.session.get(h.base_url + "/healthz") as resp:
        assert resp.status == 200
    async with h.session.get(h.base_url + "/api/workflows",
                             headers={"Authorization": "Bearer test-api-token"}) as resp:
        assert resp.status == 200


async def test_without_slack_settings_flowbot_runs_and_says_once_that_slack_is_off(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.slack import write_stages

    stages = write_stages(tmp_path / "stages", STAGES)
    settings = Settings(database_url=database_url, stages_dir=stages, home=tmp_path)
    plugin = SlackPlugin()
    caplog.set_level(logging.INFO, logger="bot.plugin")
    async with open_app(settings, load_plugins_=False) as app:
        await plugin.setup(app)
        await plugin.setup(app)
        assert app.routes == [] and app.outbox_handlers == {} and app.background == []
    said = [r.getMessage() for r in caplog.records if r.name == "bot.plugin"]
    assert len(said) == 1 and said[0].startswith("Slack is off")


async def test_socket_mode_runs_as_a_background_part_when_an_app_token_is_set(
        database_url: str, tmp_path: Path, fake_slack: FakeSlack) -> None:
    from tests.slack import write_stages

    stages = write_stages(tmp_path / "stages", STAGES)
    settings = Settings(database_url=database_url, stages_dir=stages, home=tmp_path, slack_bot_token="xoxb-t",
                        slack_app_token="xapp-t", slack_api_url=fake_slack.url)
    plugin = SlackPlugin()
    async with open_app(settings, load_plugins_=False) as app:
        await plugin.setup(app)
        parts = [getattr(p, "__qualname__", "") for p in app.background]
        assert parts.count("socket_mode_part.<locals>.part") == 1
        # No signing secret: no unauthenticated HTTP endpoint is mounted.
        assert app.routes == []
        assert "slack.post" in app.outbox_handlers and "form.assigned" in app.outbox_handlers


def test_the_manifest_command_prints_a_manifest_with_http_urls(tmp_path: Path) -> None:
    proc = flowbot("slack", "manifest", "--url", "https://flowbot.example.com/", env=cli_env(None))
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    url = "https://flowbot.example.com/slack/events"
    assert m["display_information"]["name"] == "flowbot"
    assert m["features"]["app_home"]["home_tab_enabled"] is True
    assert m["features"]["app_home"]["messages_tab_enabled"] is True
    [command] = m["features"]["slash_commands"]
    assert command["command"] == "/flowbot" and command["url"] == url
    assert m["settings"]["interactivity"] == {"is_enabled": True, "request_url": url,
                                              "message_menu_options_url": url}
    assert m["settings"]["event_subscriptions"] == {"request_url": url, "bot_events": ["app_home_opened"]}
    assert m["settings"]["socket_mode_enabled"] is False
    assert "commands" in m["oauth_config"]["scopes"]["bot"]
    _check_manifest_shape(m)


@pytest.mark.parametrize("url", ["ftp://x", "http://flowbot.example.com", "flowbot.example.com", "https://"])
def test_the_manifest_command_refuses_a_url_that_is_not_https(url: str) -> None:
    proc = flowbot("slack", "manifest", "--url", url, env=cli_env(None))
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip() == (f"flowbot: --url must be flowbot's public https URL (like "
                                   f"https://flowbot.example.com), got {url!r}: Slack sends requests only to https")


def test_the_manifest_without_a_url_is_for_socket_mode() -> None:
    m = bot_manifest.manifest()
    assert m["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in m["settings"]["interactivity"]
    assert "url" not in m["features"]["slash_commands"][0]
    _check_manifest_shape(m)


def test_the_manifest_asks_for_exactly_the_scopes_of_the_web_api_calls_made() -> None:
    called: set[str] = set()
    for path in (ROOT / "bot").glob("*.py"):
        for name in re.findall(r"client\.([a-z]+_[A-Za-z_]+)\(", path.read_text()):
            called.add(_method(name))
    assert called, "no Web API calls found"
    assert called <= set(bot_manifest.METHODS), f"calls without a scope entry: {called - set(bot_manifest.METHODS)}"
    needed = {s for m in called for s in bot_manifest.METHODS[m]} | {"commands"}
    assert set(bot_manifest.bot_scopes()) == needed, "scopes for methods no longer called"


def _method(attr: str) -> str:
    """``chat_postMessage`` → ``chat.postMessage``; ``usergroups_users_list`` → ``usergroups.users.list``."""
    return attr.replace("_", ".")


def _check_manifest_shape(m: dict[str, object]) -> None:
    """What Slack's manifest validation requires of the parts flowbot fills in."""
    assert set(m) == {"display_information", "features", "oauth_config", "settings"}
    info = m["display_information"]
    assert isinstance(info, dict) and 1 <= len(info["name"]) <= 35 and len(info["description"]) <= 140
    features = m["features"]
    assert isinstance(features, dict)
    assert 1 <= len(features["bot_user"]["display_name"]) <= 80
    for cmd in features["slash_commands"]:
        assert re.fullmatch(r"/[a-z0-9_-]{1,31}", cmd["command"]) and len(cmd["description"]) <= 2000
    scopes = m["oauth_config"]["scopes"]["bot"]  # type: ignore[index]
    assert scopes == sorted(set(scopes)) and all(re.fullmatch(r"[a-z.:]+", s) for s in scopes)
    assert json.loads(json.dumps(m)) == m


class SocketFakeSlack(FakeSlack):
    """FakeSlack plus Socket Mode: ``apps.connections.open`` and the WebSocket it points at."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.acks: list[dict[str, Any]] = []
        self.connected = asyncio.Event()
        self.acked = asyncio.Event()
        self._ws: web.WebSocketResponse | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/link", self._socket)
        super().add_routes(app)

    async def stop(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        await super().stop()

    def _api_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": f"ws://127.0.0.1:{self._port}/link"}

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A0FLOWBOT"},
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        self.connected.set()
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.acks.append(json.loads(msg.data))
                self.acked.set()
        return ws

    async def send(self, envelope: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(envelope)


SOCKET_STAGES = {
    "ok/workflow.py": """
        from engine import Workflow
        workflow = Workflow("ok")
        review = workflow.form("review", assignee="U0BOB")
    """,
    "ok/review.py": """
        from engine.forms import Approval
        form = Approval("OK?", {"What": "{what}"})
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
    """,
}


async def test_socket_mode_receives_a_button_click_over_the_socket_and_acks_it(
        database_url: str, tmp_path: Path) -> None:
    from tests.slack import write_stages

    stages = write_stages(tmp_path / "stages", SOCKET_STAGES)
    async with SocketFakeSlack() as fake:
        settings = Settings(database_url=database_url, stages_dir=stages, home=tmp_path, slack_bot_token="xoxb-t",
                            slack_app_token="xapp-t", slack_api_url=fake.url)
        async with open_app(settings) as app:
            [socket] = [p for p in app.background if "socket_mode_part" in getattr(p, "__qualname__", "")]
            stop = asyncio.Event()
            running = asyncio.create_task(socket(stop))
            try:
                await asyncio.wait_for(fake.connected.wait(), 10)
                _run, task_id = await app.store.start_run(app.registry.get("ok").stage("review"), {"what": "x"})
                await fake.send({
                    "envelope_id": "env-1", "type": "interactive", "accepts_response_payload": False,
                    "payload": {
                        "type": "block_actions", "user": {"id": "U0BOB"}, "team": {"id": "T0FAKE"},
                        "api_app_id": "A0FLOWBOT", "trigger_id": "1.2.3",
                        "channel": {"id": "DU0BOB"}, "container": {"type": "message", "channel_id": "DU0BOB"},
                        "actions": [{"type": "button", "action_id": "flowbot_approve", "block_id": "flowbot_task",
                                     "value": str(task_id), "action_ts": "1.2"}],
                    },
                })
                await asyncio.wait_for(fake.acked.wait(), 10)
                assert fake.acks[0]["envelope_id"] == "env-1"

                async def done() -> Any:
                    return await scalar(app.store, "SELECT status FROM tasks WHERE id = :t", t=task_id) == "completed"

                await eventually(done, what="the approval over Socket Mode")
                assert (await app.store.report(_run) or {})["context"]["decision"] == "approved"
                assert fake.calls("apps.connections.open")[0].token == "xapp-t"
            finally:
                stop.set()
                await running


async def test_flowbot_run_serves_slack_in_http_mode_and_without_settings_says_once_slack_is_off(
        database_url: str, tmp_path: Path, fake_slack: FakeSlack) -> None:
    from support import free_port, spawn, stop, wait_listening

    from tests.slack import SIGNING_SECRET, sign, write_stages

    stages = write_stages(tmp_path / "stages", STAGES)
    base = cli_env(database_url, stages, FLOWBOT_HOME=str(tmp_path / "home"), FLOWBOT_LOG_LEVEL="INFO")

    # Without Slack settings: flowbot runs, and says so once.
    port, log = free_port(), tmp_path / "off.log"
    proc = spawn("run", env={**base, "PORT": str(port)}, log=log)
    try:
        await asyncio.to_thread(wait_listening, port, proc, log)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"http://127.0.0.1:{port}/slack/events", data="{}") as resp:
                assert resp.status == 404
    finally:
        assert stop(proc) == 0
    assert log.read_text().count("Slack is off") == 1

    # With them: /slack/events answers signed requests and refuses forged ones.
    port, log = free_port(), tmp_path / "on.log"
    env = {**base, "PORT": str(port), "SLACK_BOT_TOKEN": "xoxb-t", "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_API_URL": fake_slack.url}
    proc = spawn("run", env=env, log=log)
    try:
        await asyncio.to_thread(wait_listening, port, proc, log)
        body = json.dumps({"token": "x", "challenge": "c-42", "type": "url_verification"})
        url = f"http://127.0.0.1:{port}/slack/events"
        async with aiohttp.ClientSession() as session:
            async with session.post(url, data=body, headers={"Content-Type": "application/json",
                                                              **sign(body)}) as resp:
                assert resp.status == 200 and (await resp.json()) == {"challenge": "c-42"}
            forged = {**sign(body), "X-Slack-Signature": "v0=" + "1" * 64}
            async with session.post(url, data=body, headers={"Content-Type": "application/json", **forged}) as resp:
                assert resp.status == 401
    finally:
        assert stop(proc) == 0
    text = log.read_text()
    assert "Slack is off" not in text and "slack: on (HTTP mode at /slack/events)" in text
