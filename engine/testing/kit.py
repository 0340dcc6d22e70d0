"""``Flow``: what a workflow author's test holds (the ``flow`` fixture), and ``open_flow`` to get
one outside pytest.

    async def test_expense_is_paid_once_approved(flow):
        run = await flow.trigger("expense", {"amount": 42, "manager_email": "bob@example.com"})
        await run.task("review").approve(as_="bob@example.com")
        report = await run.wait()
        assert report.status == "completed" and report.stages[-1] == "pay"
        assert flow.slack.messages_to("bob@example.com")

Every call that changes something lets the engine settle before it returns, so the next line
sees what it caused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json as jsonlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from engine.errors import FlowbotError
from engine.ops import runs as run_ops
from engine.ops import tasks as task_ops
from engine.ops.actor import Actor, Edge, Role
from engine.ops.base import Ops, ops_of
from engine.ops.directory import load_teams
from engine.runtime.app import App
from engine.settings import Settings
from engine.store import ops_queries, queries, waits
from engine.testing.clock import TestClock
from engine.testing.handles import FlowTestError, Report, Run
from engine.testing.mail import MailCatcher
from engine.testing.running import Engine, running
from engine.testing.slack import KitSlack
from engine.triggers.hooks.auth import BearerAuth
from engine.triggers.jobs.firing import find_job, fire
from engine.workflow import StageKind

#: The Slack credentials the kit's flowbot uses (the fake Slack accepts them).
BOT_TOKEN = "xoxb-flowbot-test"
SIGNING_SECRET = "flowbot-test-signing-secret"
#: The person runs are started as when the test does not say.
TESTER = "tester@example.com"
#: Who starts the runs of ``flow.trigger`` (as the local admin starts those of `flowbot trigger`).
TEST_ADMIN = Actor("flowbot:test", Role.ADMIN, Edge.API)


class FlowClock:
    """``flow.clock``: the engine's time. ``await flow.clock.advance("49h")`` moves it, and
    everything due on the way happens in order (jobs fire, timers and timeouts end, reminders and
    escalations go out, retries run)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def now(self) -> dt.datetime:
        """The engine's current time (aware, UTC)."""
        return self._engine.clock()

    async def advance(self, duration: str | float | dt.timedelta) -> dt.datetime:
        """Move time on by ``duration`` (``"30m"``, ``"49h"``, ``"2 business days"``, seconds or a
        timedelta); returns the new time."""
        try:
            target = self._engine.clock.target(duration)
        except ValueError as exc:
            raise FlowTestError(str(exc)) from None
        await self._engine.advance_to(target)
        return self.now

    async def advance_to(self, when: dt.datetime) -> dt.datetime:
        """Move time on to ``when`` (aware); returns it."""
        if when.tzinfo is None or when < self.now:
            raise FlowTestError(f"advance_to needs an aware datetime after {self.now.isoformat()}, got {when!r}")
        await self._engine.advance_to(when)
        return self.now


@dataclass(frozen=True)
class HookAnswer:
    """What a hook answered: status, body (JSON when it is), and the runs it started."""

    status: int
    text: str

    @property
    def json(self) -> Any:
        """The body as JSON (None when it is not JSON)."""
        try:
            return jsonlib.loads(self.text)
        except ValueError:
            return None

    @property
    def run_ids(self) -> list[str]:
        """The runs the request started (flowbot's own answer: ``{"ok": true, "run_ids": [...]}``)."""
        body = self.json
        return [str(r) for r in body.get("run_ids", [])] if isinstance(body, dict) else []


class Flow:
    """One test's flowbot: a fresh database, the engine running in-process, the Slack fake
    (``slack``), the SMTP catcher (``mail``) and the clock (``clock``)."""

    def __init__(self, engine: Engine, slack: KitSlack, mail: MailCatcher, session: aiohttp.ClientSession,
                 secrets_: dict[str, str]) -> None:
        self.engine = engine
        self.slack = slack
        self.mail = mail
        self.clock = FlowClock(engine)
        self._session = session
        self._secrets = secrets_

    @property
    def app(self) -> App:
        """The open flowbot (settings, database, workflows, store)."""
        return self.engine.app

    @property
    def ops(self) -> Ops:
        """Operations as people do them (``engine.ops``)."""
        return ops_of(self.app)

    @property
    def url(self) -> str:
        """Where its HTTP server listens: ``http://127.0.0.1:<port>``."""
        return self.engine.base_url

    async def settle(self, within: float = 30.0) -> None:
        """Let the engine finish everything due at the clock's time."""
        await self.engine.settle(within)

    # --- starting runs ----------------------------------------------------------------------

    async def trigger(self, workflow: str, payload: dict[str, Any] | None = None, *,
                      stage: str | None = None) -> Run:
        """Start a test run of ``workflow`` at its start stage (or ``stage``) with ``payload``, as
        ``flowbot trigger --test`` does; the engine settles before it returns."""
        try:
            started = await run_ops.trigger(self.ops, workflow, payload or {}, TEST_ADMIN, stage=stage,
                                            trigger={"kind": "test"}, test=True)
        except FlowbotError as exc:
            raise FlowTestError(str(exc)) from None
        await self.settle()
        return Run(self, started["run_id"], started["workflow"])

    async def start(self, workflow: str, answers: dict[str, Any], *, as_: str = TESTER) -> Run:
        """Submit ``workflow``'s start form with ``answers`` as ``as_`` (``/flowbot start`` in Slack)."""
        result = await task_ops.start(self.ops, workflow, answers, Actor(as_, Role.MEMBER, Edge.API))
        async with self.app.db.transaction() as tx:
            await tx.execute(queries.MARK_TEST_RUNS, {"ids": [result["run_id"]]})
        await self.settle()
        return Run(self, result["run_id"], result["workflow"])

    async def run(self, run_id: str) -> Run:
        """A handle on a run the test did not start itself (a hook's, a job's, a child)."""
        row = await self.app.store.get_run(str(run_id))
        if row is None:
            raise FlowTestError(f"no run {run_id}")
        return Run(self, str(row["id"]), row["workflow"])

    async def runs(self, workflow: str | None = None) -> list[Run]:
        """Runs (of ``workflow``), oldest first."""
        await self.settle()
        rows = await self.app.db.fetch_all(ops_queries.LIST_RUNS_VISIBLE, {
            "workflow": workflow, "status": None, "limit": 10_000, "all": True, "workflows": [], "people": []})
        return [Run(self, str(r["id"]), r["workflow"]) for r in reversed(rows)]

    # --- what arrives from outside ------------------------------------------------------------

    async def hook(self, path: str, *, json: Any = None, data: bytes | str | None = None,
                   headers: dict[str, str] | None = None) -> HookAnswer:
        """POST to ``/hooks/<path>`` over HTTP; a bearer-token hook gets the right token unless
        ``headers`` carries an ``Authorization`` of its own."""
        path = path.strip("/")
        stage = next((s for s in self.app.registry.stages(StageKind.HOOK) if s.path == path), None)
        if stage is None:
            known = ", ".join(sorted(str(s.path) for s in self.app.registry.stages(StageKind.HOOK))) or "none"
            raise FlowTestError(f"no hook at /hooks/{path} (hooks: {known})")
        sent = dict(headers or {})
        auth = stage.auth
        if isinstance(auth, BearerAuth) and "Authorization" not in sent:
            sent["Authorization"] = f"Bearer {self._secret(auth.secret_env)}"
        if json is not None:
            data = jsonlib.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        async with self._session.post(f"{self.url}/hooks/{path}", data=data, headers=sent) as resp:
            answer = HookAnswer(resp.status, await resp.text())
        await self.settle()
        return answer

    def _secret(self, env: str) -> str:
        value = os.environ.get(env)
        if not value:
            value = self._secrets.setdefault(env, secrets.token_hex(16))
            os.environ[env] = value
        return value

    async def emit(self, event: str, key: str, payload: dict[str, Any] | None = None) -> int:
        """An event for waiting runs (``flowbot events send``); how many waits it completed."""
        published = await waits.send_event(self.app.store, event, key, payload or {}, source="test")
        await self.settle()
        return int(published.matched)

    async def run_job(self, name: str) -> None:
        """Fire the job ``name`` (``workflow/stage``, or a name naming one job) now, by hand."""
        try:
            job = find_job(self.app.registry, name)
        except FlowbotError as exc:
            raise FlowTestError(str(exc)) from None
        result = await fire(self.app.store, job, self.clock.now, manual=True, owner="flowbot-test",
                            max_payload_bytes=self.app.settings.max_payload_bytes)
        if result.status == "failed":
            raise FlowTestError(f"job {job.key} failed: {result.error}")
        await self.settle()


def kit_settings(database_url: str, stages: Path, home: Path, slack: KitSlack, mail: MailCatcher,
                 **changes: Any) -> Settings:
    """The settings of a test's flowbot: the test database, Slack pointed at the fake (HTTP mode),
    mail at the catcher, quick polls, passes driven by the clock."""
    base = Settings(
        database_url=database_url, home=home, stages_dir=stages, host="127.0.0.1", port=0,
        api_token=secrets.token_hex(8), poll_interval=0.5, slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET, slack_api_url=slack.url, smtp_url=mail.url,
        mail_from="flowbot@example.com", reminder_interval=10**9, shutdown_grace=2.0,
    )
    return base.with_(**changes) if changes else base


@contextlib.contextmanager
def _restored_env(names: dict[str, str]) -> Iterator[None]:
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in names:
            if name not in before:
                os.environ.pop(name, None)


@contextlib.asynccontextmanager
async def open_flow(database_url: str, stages: Path, home: Path, *, start: dt.datetime | None = None,
                    **settings: Any) -> AsyncIterator[Flow]:
    """A ``Flow`` on ``database_url`` (migrated) with the workflows under ``stages``."""
    clock = TestClock(start)
    mail = MailCatcher()
    mail.start()
    hook_secrets: dict[str, str] = {}
    try:
        async with KitSlack() as slack, aiohttp.ClientSession() as session:
            # The teams of the teams file are Slack user groups too: their members get the DMs.
            for handle, members in load_teams(Path(stages)).items():
                slack.set_usergroup(handle.lstrip("@"), [slack.user_id(m) for m in members])
            config = kit_settings(database_url, Path(stages), Path(home), slack, mail, **settings)
            with _restored_env(hook_secrets):
                async with running(config, clock) as engine:
                    flow = Flow(engine, slack, mail, session, hook_secrets)
                    await flow.settle()
                    yield flow
                    await flow.settle()
    finally:
        mail.stop()


__all__ = ["Flow", "FlowClock", "HookAnswer", "Report", "Run", "open_flow"]
