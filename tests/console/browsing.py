"""Helpers of the console tests: a flowbot server on loopback with test workflows, sign-in links,
and a real Chromium (Debian's ``chromium`` package) driven by Playwright.

The browser tests never skip in CI: with ``CI`` set, a missing Chromium fails them (``.ci/install-deps``
installs it). Outside CI they skip with the command that installs it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import text
from support import drain, write_stages

from engine.loader import find_stage
from engine.people import links
from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.web.server import serve

CHROMIUM = os.environ.get("FLOWBOT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
#: Where the browser tests save screenshots for the docs (only with FLOWBOT_SCREENSHOTS=1).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"

STAGES = {
    "expense/workflow.py": """
        from engine import Workflow
        workflow = Workflow("expense", title="Expense approval")
        submit = workflow.form("submit")
        review = workflow.form("review", assignee="{manager_email}")
        pay = workflow.script("pay")
        declined = workflow.script("declined")
        workflow.transition(submit, review)
        workflow.transition(review, pay, on="approved")
        workflow.transition(review, declined, on="declined")
    """,
    "expense/submit.py": """
        from engine.forms import Email, Form, LongText, Number, Select, Text
        form = Form("New expense", [
            Text("description", "What was it for?", max_length=200),
            Number("amount", "Amount", min=0.01, decimal=True),
            Select("currency", "Currency", ["EUR", "USD", "GBP"], default="EUR"),
            Email("manager_email", "Your manager's email"),
            LongText("notes", "Notes", required=False),
        ], submit_label="Send for approval")
        def run(task, answers, ctx):
            ctx.send("expense", {**answers, "employee": ctx.run.get("started_by")})
    """,
    "expense/review.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Expense approval", {"Employee": "{employee}", "Amount": "{amount} {currency}",
                                                  "For": "{description}"},
                            text="An expense claim waits for your approval.")
        def run(task, answers, ctx):
            ctx.run["decision"] = answers["decision"]
            ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
    """,
    "expense/pay.py": "def run(task, ctx):\n    ctx.run['paid'] = True\n",
    "expense/declined.py": "def run(task, ctx):\n    ctx.run['declined'] = task.get('comment')\n",
    "onboard/workflow.py": """
        from engine import Workflow
        workflow = Workflow("onboard", title="Onboarding")
        intake = workflow.script("intake")
        setup = workflow.form("setup", assignee="{it}")
        done = workflow.script("done")
        workflow.transition(intake, setup)
        workflow.transition(setup, done)
    """,
    "onboard/intake.py": "def run(task, ctx):\n    ctx.send('hire', task.payload)\n",
    "onboard/setup.py": """
        from engine.forms import (Checkboxes, Date, DateTime, Facts, Form, Links, Markdown, MultiSelect, Number,
                                  Page, Radio, Rule, Select, Text, Url)
        def cities(query, payload):
            return [c for c in ["Berlin", "Lisbon", "London", "Lima"] if query.lower() in c.lower()]
        form = Form("Set up a new hire", pages=[
            Page("who", [
                Markdown("Set up *{name}* (payload text: {name})"),
                Facts({"Name": "{name}", "Team": "{team}"}),
                Links([("Handbook", "https://example.com/handbook")]),
                Text("login", "Login name", min_length=3),
                Radio("laptop", "Laptop", ["mac", "linux"]),
                Number("desks", "Desks", min=1, max=3, default=1),
            ]),
            Page("laptop", [
                Select("model", "Model", ["air", "pro"]),
                Checkboxes("extras", "Extras", ["mouse", "dock"], required=False),
            ], when=lambda answers: answers.get("laptop") == "mac", title="Mac details"),
            Page("dates", [
                Date("start", "First day"),
                DateTime("meeting", "Welcome meeting", required=False),
                Url("wiki", "Wiki page", required=False),
                MultiSelect("groups", "Groups", ["eng", "ops", "sales"], required=False),
                Select("city", "City", options_from=cities),
            ]),
        ])
        def run(task, answers, ctx):
            ctx.run["answers"] = answers
            ctx.send("ready", answers)
    """,
    "onboard/done.py": "def run(task, ctx):\n    ctx.run['done'] = True\n",
}


class Console:
    """A running flowbot (HTTP server, console) and ways into it."""

    def __init__(self, app: App, base: str) -> None:
        self.app = app
        self.base = base

    async def link(self, person: str, *, role: str = "member", task_id: int | None = None) -> str:
        """A one-time sign-in link (as `flowbot login` prints)."""
        purpose = links.TASK if task_id else links.SIGNIN
        token = await links.create(self.app.db, person, self.app.store.clock(), role=role, purpose=purpose,
                                   task_id=task_id)
        return links.url(self.base, token)

    async def trigger(self, workflow: str, payload: dict[str, Any], stage: str | None = None) -> str:
        """Start a run at a script stage and run its scripts until it waits on a person."""
        run_id, _ = await self.app.store.start_run(find_stage(self.app.registry, workflow, stage), payload,
                                                   trigger={"kind": "test"})
        await drain(self.app.store)
        return run_id

    async def pending_form(self, run_id: str) -> int:
        """The id of the run's pending form task."""
        row = await self.app.db.fetch_one(
            text("SELECT id FROM tasks WHERE run_id = :r AND status = 'pending' AND kind = 'form'"),
            {"r": uuid.UUID(run_id)})
        assert row is not None, run_id
        return int(row["id"])


async def start_console(settings: Settings, *, load_plugins: bool = False) -> AsyncIterator[Console]:
    """Serve a flowbot on a loopback port for the duration of the block."""
    async with open_app(settings, load_plugins_=load_plugins, pool_size=4) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))
        port = await asyncio.wait_for(bound, 10)
        try:
            yield Console(app, f"http://127.0.0.1:{port}")
        finally:
            stop.set()
            await server


def console_settings(database_url: str, tmp_path: Path, files: dict[str, str] | None = None, **kw: Any) -> Settings:
    """Settings of a test flowbot with the test workflows."""
    return Settings(database_url=database_url, home=tmp_path / "home", api_token="test-token",
                    stages_dir=write_stages(tmp_path / "stages", files or STAGES), secret_key="test-secret", **kw)




async def screenshot(page: Any, name: str) -> None:
    """Save a screenshot for the docs when FLOWBOT_SCREENSHOTS=1 (the suite leaves the tree clean)."""
    if os.environ.get("FLOWBOT_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


class Inbox:
    """What the SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    def link(self, index: int = -1) -> str:
        body = self.messages[index].get_body(("plain",)).get_content()  # type: ignore[union-attr]
        found = re.search(r"http://\S+/console/link/\S+", body)
        assert found, body
        return found.group(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """An SMTP server on a fixed loopback port that can be stopped and started again."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.port = _free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None
