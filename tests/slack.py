"""Slack test fixtures: the fake Web API, a started flowbot with the Slack plugin, signed requests.

    async def test_x(slack_app, fake_slack):
        h = await slack_app(STAGES)                 # dict of files, or a stages directory
        resp = await h.click("U0ANN", "flowbot_approve", str(task_id), channel="DU0ANN")
        assert resp.status == 200

``slack_app(...)`` opens a real flowbot App (real Postgres: the test's database) with the Slack
plugin set up through its entry point, serves its aiohttp app on a free loopback port and runs a
worker and the outbox dispatcher in the background. Requests to ``/slack/events`` are signed with
the signing secret exactly as Slack signs them (``v0=HMAC-SHA256(secret, "v0:ts:body")``);
interactivity bodies are form-encoded ``payload=<json>``, slash commands form-encoded fields,
events JSON. Registered in tests/conftest.py through ``pytest_plugins``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.store.tasks import Clock, utcnow
from tests.fakeslack import FakeSlack
from tests.support import write_stages

SIGNING_SECRET = "test-signing-secret-0123456789abcdef"
BOT_TOKEN = "xoxb-test-token"
TEAM_ID = "T0FAKE"

_trigger_ids = itertools.count(1)


def sign(body: str, *, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """The headers Slack adds to a request: timestamp and ``v0=`` HMAC-SHA256 signature."""
    ts = int(time.time()) if timestamp is None else timestamp
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={digest}"}


def trigger_id() -> str:
    """A fresh trigger id (FakeSlack's views.open only needs one to be present)."""
    return f"{next(_trigger_ids)}.{uuid.uuid4().int % 10**12}.abcdef"


@dataclass
class Response:
    """What ``/slack/events`` answered."""

    status: int
    text: str

    @property
    def json(self) -> Any:
        """The body as JSON (None when empty)."""
        return json.loads(self.text) if self.text.strip() else None


def submission_payload(user: str, view: dict[str, Any], values: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    """The ``view_submission`` payload of ``view`` submitted by ``user`` with ``values`` (see
    ``SlackHarness.submit``)."""
    state = {name: {name: element} for name, element in (values or {}).items()}
    return {
        "type": "view_submission",
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "A0FLOWBOT",
        "team": {"id": TEAM_ID, "domain": "fake"},
        "trigger_id": trigger_id(),
        "view": {**view, "state": {"values": state}},
    }


@dataclass
class SlackHarness:
    """A running flowbot with Slack: the App, its Bolt app and context, and request helpers."""

    app: App
    fake: FakeSlack
    base_url: str
    session: aiohttp.ClientSession
    stop_event: asyncio.Event
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def bolt(self) -> Any:
        """The Bolt AsyncApp."""
        return self.app.state["slack.bolt"]

    @property
    def ctx(self) -> Any:
        """The BotContext."""
        return self.app.state["slack.context"]

    @property
    def events_url(self) -> str:
        """``http://127.0.0.1:<port>/slack/events``."""
        return self.base_url + "/slack/events"

    # --- raw ------------------------------------------------------------------------------

    async def post(self, body: str, *, content_type: str, timestamp: int | None = None,
                   signature: str | None = None, secret: str = SIGNING_SECRET) -> Response:
        """POST ``body`` to /slack/events, signed (``signature`` overrides the real one)."""
        headers = {"Content-Type": content_type, **sign(body, timestamp=timestamp, secret=secret)}
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        async with self.session.post(self.events_url, data=body.encode(), headers=headers) as resp:
            return Response(resp.status, await resp.text())

    async def interact(self, payload: dict[str, Any], **kw: Any) -> Response:
        """An interactivity request: form-encoded ``payload=<json>``, as Slack sends it."""
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, content_type="application/x-www-form-urlencoded", **kw)

    async def event(self, event: dict[str, Any], **kw: Any) -> Response:
        """An Events API callback (JSON)."""
        body = json.dumps({
            "token": "legacy", "team_id": TEAM_ID, "api_app_id": "A0FLOWBOT", "type": "event_callback",
            "event_id": f"Ev{uuid.uuid4().hex[:10]}", "event_time": int(time.time()), "event": event,
        })
        return await self.post(body, content_type="application/json", **kw)

    async def command(self, user: str, text: str, *, command: str = "/flowbot", channel: str = "C0GENERAL",
                      response_url: str | None = None, **kw: Any) -> Response:
        """A slash command (form-encoded fields)."""
        fields = {
            "token": "legacy", "team_id": TEAM_ID, "team_domain": "fake", "channel_id": channel,
            "channel_name": "general", "user_id": user, "user_name": user.lower(), "command": command,
            "text": text, "api_app_id": "A0FLOWBOT",
            "response_url": response_url or self.base_url + "/_response", "trigger_id": trigger_id(),
        }
        return await self.post(urlencode(fields), content_type="application/x-www-form-urlencoded", **kw)

    # --- interactivity ----------------------------------------------------------------------

    async def click(self, user: str, action_id: str, value: str, *, channel: str | None = None,
                    message_ts: str | None = None, block_id: str = "flowbot_task", container: str = "message",
                    view: dict[str, Any] | None = None, **kw: Any) -> Response:
        """A ``block_actions`` button click by ``user`` (in a DM/channel message, or a view)."""
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
            "api_app_id": "A0FLOWBOT",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "trigger_id": trigger_id(),
            "response_url": self.base_url + "/_response",
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": block_id, "value": value,
                "text": {"type": "plain_text", "text": action_id}, "action_ts": f"{time.time():.6f}",
            }],
        }
        if view is not None:
            payload["container"] = {"type": "view", "view_id": view.get("id")}
            payload["view"] = view
        else:
            chan = channel or "D" + user
            payload["container"] = {"type": container, "channel_id": chan, "message_ts": message_ts or "1.1",
                                    "is_ephemeral": False}
            payload["channel"] = {"id": chan, "name": "directmessage"}
            payload["message"] = {"type": "message", "ts": message_ts or "1.1", "text": ""}
        return await self.interact(payload, **kw)

    async def submit(self, user: str, view: dict[str, Any], values: dict[str, dict[str, Any]] | None = None,
                     **kw: Any) -> Response:
        """A ``view_submission`` of ``view`` (as stored by FakeSlack) with ``state.values``.

        ``values`` maps a block/action id (a field name) to its element state, e.g.
        ``{"amount": {"type": "number_input", "value": "12"}}``.
        """
        return await self.interact(submission_payload(user, view, values), **kw)

    async def submit_over_bolt(self, user: str, view: dict[str, Any],
                               values: dict[str, dict[str, Any]] | None = None) -> Response:
        """``submit`` as Socket Mode delivers it: to Bolt, not through the HTTP endpoint."""
        from slack_bolt.request.async_request import AsyncBoltRequest

        request = AsyncBoltRequest(body=submission_payload(user, view, values), mode="socket_mode")
        answer = await self.bolt.async_dispatch(request)
        return Response(answer.status, answer.body)

    async def suggest(self, user: str, view: dict[str, Any], action_id: str, query: str, **kw: Any) -> Response:
        """A ``block_suggestion`` (external select typed into) inside ``view``."""
        payload = {
            "type": "block_suggestion",
            "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
            "api_app_id": "A0FLOWBOT",
            "team": {"id": TEAM_ID, "domain": "fake"},
            "container": {"type": "view", "view_id": view.get("id")},
            "view": view,
            "action_id": action_id,
            "block_id": action_id,
            "value": query,
        }
        return await self.interact(payload, **kw)

    # --- inspection -------------------------------------------------------------------------

    def last_view(self) -> dict[str, Any]:
        """The view most recently opened, pushed or updated (as FakeSlack stores it)."""
        calls = [c for c in self.fake.requests if c.method in ("views.open", "views.push", "views.update")
                 and c.response.get("ok")]
        assert calls, "no view was opened"
        return dict(calls[-1].response["view"])

    def sent_views(self) -> list[dict[str, Any]]:
        """Every view flowbot sent (views.open/push/update/publish params and modal acks), as sent:
        what to validate against the Block Kit schema."""
        return [dict(c.params["view"]) for c in self.fake.requests
                if c.method.startswith("views.") and isinstance(c.params.get("view"), dict)]

    def sent_modals(self) -> list[dict[str, Any]]:
        """The modal views flowbot opened, pushed or updated, as sent."""
        return [v for v in self.sent_views() if v.get("type") == "modal"]

    def sent_blocks(self) -> list[list[dict[str, Any]]]:
        """The blocks of every message flowbot posted or updated."""
        return [list(c.params["blocks"]) for c in self.fake.requests
                if c.method in ("chat.postMessage", "chat.update", "chat.postEphemeral")
                and isinstance(c.params.get("blocks"), list)]

    async def settle(self, within: float = 10.0) -> None:
        """Wait for the work listeners do after their ack (HTTP mode acks first)."""
        await self.ctx.follow_ups.idle(within)

    async def stop(self) -> None:
        """Stop the background parts and close the HTTP session (the App closes with the fixture)."""
        await self.settle()
        self.stop_event.set()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.session.close()


StartSlack = Callable[..., Awaitable[SlackHarness]]


def slack_settings(database_url: str, stages: Path, fake: FakeSlack, home: Path, **changes: Any) -> Settings:
    """Settings of a flowbot with Slack pointed at ``fake`` (HTTP mode)."""
    base = Settings(
        database_url=database_url, home=home, stages_dir=stages, host="127.0.0.1", port=0,
        api_token="test-api-token", poll_interval=0.2, slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET, slack_api_url=fake.url,
    )
    return base.with_(**changes) if changes else base


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A started fake Slack Web API (users and groups are added by the test)."""
    async with FakeSlack() as fake:
        yield fake


@pytest.fixture
async def slack_app(database_url: str, fake_slack: FakeSlack, tmp_path: Path) -> AsyncIterator[StartSlack]:
    """``await slack_app(stages, worker=True, outbox=True, clock=None, **settings)``: a started
    flowbot with Slack on the test's database. ``stages`` is a stages directory or a dict of
    files (written under tmp_path, dedented). Call again for a "restarted" process."""
    async with contextlib.AsyncExitStack() as stack:
        written: dict[int, Path] = {}

        async def start(stages: Path | dict[str, str], *, worker: bool = True, outbox: bool = True,
                        clock: Clock = utcnow, **changes: Any) -> SlackHarness:
            if isinstance(stages, dict):
                key = id(stages)
                if key not in written:
                    written[key] = write_stages(tmp_path / f"stages_{uuid.uuid4().hex[:6]}", stages)
                stages_dir = written[key]
            else:
                stages_dir = stages
            settings = slack_settings(database_url, stages_dir, fake_slack, tmp_path / "home", **changes)
            app = await stack.enter_async_context(open_app(settings, clock=clock, pool_size=5))
            return await _serve(stack, app, fake_slack, worker=worker, outbox=outbox)

        yield start


async def _serve(stack: contextlib.AsyncExitStack, app: App, fake: FakeSlack, *, worker: bool,
                 outbox: bool) -> SlackHarness:
    from engine.cli.main import worker_part
    from engine.runtime.outbox import OutboxDispatcher
    from engine.web.server import serve

    stop = asyncio.Event()
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    tasks = [asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))]
    if worker:
        tasks.append(asyncio.create_task(worker_part(app)(stop)))
    if outbox:
        dispatcher = OutboxDispatcher(app.db, app.outbox_handlers, clock=app.store.clock, poll_interval=0.1)
        tasks.append(asyncio.create_task(dispatcher.run(stop)))
    port = await asyncio.wait_for(bound, 10)
    session = aiohttp.ClientSession()
    harness = SlackHarness(app=app, fake=fake, base_url=f"http://127.0.0.1:{port}", session=session,
                           stop_event=stop, tasks=tasks)
    stack.push_async_callback(harness.stop)
    return harness
