"""A small world for the operation tests: workflows with operators, viewers, a start form, an
approval, a team task and a stage that fails; a running API server on loopback and a client.

People: ann (starts expenses), bob (the manager who approves), ops@ (operator), fin@ (operator
through the @finance-ops team of teams.toml), vic@ (viewer), sam@ and tom@ (the @helpers team),
eve@ (nobody in particular).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from engine.ops.actor import Actor, Edge, Role
from engine.ops.base import Ops, ops_of
from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.web.server import serve
from tests.support import write_stages

TOKEN = "ops-admin-token-0123456789"

ANN, BOB, OPS, FIN, VIC, SAM, TOM, EVE = (f"{n}@example.com" for n in
                                          ("ann", "bob", "ops", "fin", "vic", "sam", "tom", "eve"))

STAGES = {
    "teams.toml": """
        finance-ops = ["fin@example.com"]
        "@helpers" = ["sam@example.com", "tom@example.com"]
    """,
    "pay/workflow.py": """
        from engine import Workflow
        workflow = Workflow("pay", title="Payments", operators=["ops@example.com", "@finance-ops"],
                            viewers=["vic@example.com"])
        submit = workflow.form("submit")
        review = workflow.form("review", assignee="{manager}")
        pay = workflow.script("pay", max_attempts=1)
        declined = workflow.script("declined")
        workflow.transition(submit, review, on="claim")
        workflow.transition(review, pay, on="approved")
        workflow.transition(review, declined, on="declined")
    """,
    "pay/submit.py": """
        from engine.forms import Email, Form, Number, Text
        form = Form("Claim", [Text("note", "What for"), Number("amount", "Amount", min=1),
                              Email("manager", "Manager")])
        def run(task, answers, ctx):
            ctx.send("claim", answers)
    """,
    "pay/review.py": """
        from engine.forms import Approval
        form = Approval("Approve {note}?", {"Amount": "{amount}"})
        def run(task, answers, ctx):
            ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
    """,
    "pay/pay.py": """
        def run(task, ctx):
            if task.payload.get("amount", 0) > 1000:
                raise RuntimeError("over the limit")
            ctx.run["paid"] = task.payload["amount"]
    """,
    "pay/declined.py": "def run(task, ctx):\n    ctx.run['declined'] = task.payload.get('comment')\n",
    "desk/workflow.py": """
        from engine import Team, Workflow
        workflow = Workflow("desk", title="Desk")
        open_ = workflow.script("open")
        resolve = workflow.form("resolve", assignee=Team("@helpers"))
        workflow.transition(open_, resolve, on="ticket")
    """,
    "desk/open.py": "def run(task, ctx):\n    ctx.send('ticket', task.payload)\n",
    "desk/resolve.py": """
        from engine.forms import Form, LongText
        form = Form("Resolve", [LongText("resolution", "Resolution")])
        def run(task, answers, ctx):
            ctx.run["resolution"] = answers["resolution"]
    """,
}

CLAIM = {"note": "Taxi", "amount": 42, "manager": BOB}


def person(email: str, role: Role = Role.MEMBER, edge: Edge = Edge.API) -> Actor:
    """A person acting through ``edge``."""
    return Actor(email, role, edge)


ADMIN = Actor("admin@example.com", Role.ADMIN, Edge.API)


def settings_for(database_url: str, tmp_path: Path, **changes: Any) -> Settings:
    """Settings of the world's flowbot (stages written under ``tmp_path``)."""
    stages = tmp_path / "stages"
    if not stages.exists():
        write_stages(stages, STAGES)
    return Settings(database_url=database_url, home=tmp_path / "home", stages_dir=stages, api_token=TOKEN,
                    host="127.0.0.1", port=0, poll_interval=0.2).with_(**changes)


_SPECS: dict[str, Any] = {}


def conforms(base: str, method: str, path: str, query: str, status: int, raw: bytes) -> None:
    """Check one real answer of ``/api`` against the served OpenAPI document (openapi-core)."""
    from urllib.parse import parse_qsl

    from openapi_core import OpenAPI
    from openapi_core.testing import MockRequest, MockResponse

    from engine.web.openapi import document

    if base not in _SPECS:
        doc = document()
        doc["servers"] = [{"url": base + "/api"}]
        _SPECS[base] = OpenAPI.from_dict(doc)
    request = MockRequest(base, method.lower(), path, args=dict(parse_qsl(query)))
    _SPECS[base].validate_response(request, MockResponse(raw, status_code=status))


#: Every (method, route path, status) checked against the document in this session.
CHECKED: set[tuple[str, str, int]] = set()


class Client:
    """An HTTP client of the API as one bearer (the admin token by default)."""

    def __init__(self, base: str, session: aiohttp.ClientSession, token: str = TOKEN,
                 as_: str | None = None) -> None:
        self.base, self.session, self.token, self.as_ = base, session, token, as_
        #: Every (method, path, status, body) answered, for the OpenAPI check.
        self.seen: list[tuple[str, str, str, int, Any, Any]] = []

    def as_person(self, who: str) -> Client:
        """The same client acting as ``who`` (the admin token with X-Flowbot-As)."""
        other = Client(self.base, self.session, self.token, who)
        other.seen = self.seen
        return other

    def with_token(self, token: str) -> Client:
        """The same client with another bearer token."""
        other = Client(self.base, self.session, token)
        other.seen = self.seen
        return other

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """One call: (status, JSON body)."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.as_:
            headers["X-Flowbot-As"] = self.as_
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        async with self.session.request(method, self.base + path, data=data, headers=headers, **kw) as resp:
            raw = await resp.read()
            assert resp.content_type == "application/json", (resp.status, raw)
            answer = json.loads(raw)
            if resp.url.path.startswith("/api/"):
                conforms(self.base, method, resp.url.path, resp.url.query_string, resp.status, raw)
                CHECKED.add((method, resp.url.path, resp.status))
            self.seen.append((method, path, str(resp.url.query_string), resp.status, body, answer))
            return resp.status, answer


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[App, Ops, Client]]:
    """A flowbot app serving HTTP on loopback (no worker: tests drain), its Ops and a client."""
    async with open_app(settings, load_plugins_=False, pool_size=4) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        server = asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))
        port = await asyncio.wait_for(bound, 10)
        try:
            async with aiohttp.ClientSession() as session:
                yield app, ops_of(app), Client(f"http://127.0.0.1:{port}", session)
        finally:
            stop.set()
            await server
