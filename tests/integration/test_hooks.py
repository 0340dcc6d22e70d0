"""Hook stages served over real HTTP on loopback, against a real Postgres.

Each test starts flowbot's own aiohttp application (``build_http_app``) on 127.0.0.1 and talks to
it with an aiohttp client; what a request created is read back from the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from support import FakeClock, eventually, scalar

from engine.errors import WorkflowLoadError
from engine.loader import Registry
from engine.runtime.app import App
from engine.runtime.worker import Worker, WorkerOptions
from engine.settings import Settings
from engine.store.db import Database
from engine.store.tasks import Store
from engine.triggers.hooks import sign_github, sign_hmac, sign_slack, sign_stripe
from engine.web.server import build_http_app

SECRET = "it-is-a-secret-from-the-environment"

STAGES = {
    # -- a GitHub repository webhook feeding a script ----------------------------------------------
    "gh/workflow.py": """
        from engine import GitHubAuth, Workflow
        workflow = Workflow("gh")
        github = workflow.hook("github", path="github/events", auth=GitHubAuth("HOOK_SECRET"))
        record = workflow.script("record")
        workflow.transition(github, record, on="push")
    """,
    "gh/github.py": """
        from engine import HookResponse

        def run(request, ctx):
            event = request.headers["X-GitHub-Event"]
            if event == "ping":
                return {"pong": True}
            push = request.data
            ctx.send(event, {"repo": push["repository"]["full_name"], "after": push["after"],
                             "delivery": request.delivery_id})
            return HookResponse(status=202, json={"accepted": event}, headers={"X-Seen": "1"})
    """,
    "gh/record.py": """
        def run(task, ctx):
            ctx.run["recorded"] = task["repo"]
            ctx.run["delivery"] = task["delivery"]
    """,
    # -- one hook per auth preset, all sending to one script ---------------------------------------
    "signed/workflow.py": """
        from engine import BearerAuth, GitHubAuth, HmacAuth, SlackAuth, StripeAuth, Workflow
        workflow = Workflow("signed")
        sink = workflow.script("sink")
        for name, auth in [("bearer", BearerAuth("HOOK_SECRET")), ("hmac", HmacAuth("HOOK_SECRET")),
                           ("github", GitHubAuth("HOOK_SECRET")), ("stripe", StripeAuth("HOOK_SECRET")),
                           ("slack", SlackAuth("HOOK_SECRET"))]:
            workflow.transition(workflow.hook(name, path=f"signed/{name}", auth=auth, module="take"), sink)
    """,
    "signed/take.py": """
        def run(request, ctx):
            ctx.send("item", {"body": request.text_body})
            return {"ok": True}
    """,
    "signed/sink.py": "def run(task, ctx):\n    pass\n",
    # -- unauthenticated hooks showing the request and response shapes ----------------------------
    "misc/workflow.py": """
        from engine import Workflow
        workflow = Workflow("misc")
        sink = workflow.script("sink")
        for name, extra in [("open", {}), ("crash", {}), ("refuse", {}), ("small", {"max_bytes": 100}),
                            ("forms", {"accept": ["application/x-www-form-urlencoded", "multipart/form-data"]}),
                            ("raw", {"accept": "*/*"})]:
            workflow.transition(workflow.hook(name, auth=None, **extra), sink, on="item")
        quiet = workflow.hook("quiet", auth=None)
        lookup = workflow.hook("lookup", path="lookup/v1", auth=None, methods=["GET", "DELETE"])
        named = workflow.hook("named", auth=None)
        workflow.transition(named, sink)
    """,
    "misc/open.py": """
        async def run(request, ctx):
            data = await request.json()
            ctx.run["via"] = "open"
            ctx.send("item", data)
            return {"got": data}
    """,
    "misc/crash.py": """
        def run(request, ctx):
            ctx.send("item", {"n": 1})
            raise RuntimeError("internal detail: db password is hunter2")
    """,
    "misc/refuse.py": """
        from engine import HookResponse
        def run(request, ctx):
            ctx.send("item", {"n": 1})
            return HookResponse(status=422, json={"error": "amount is missing"})
    """,
    "misc/small.py": "def run(request, ctx):\n    ctx.send('item', {})\n",
    "misc/quiet.py": "def run(request, ctx):\n    return None\n",
    "misc/forms.py": """
        def run(request, ctx):
            ctx.send("item", {"data": request.data})
            return {
                "content_type": request.content_type,
                "data": request.data,
                "form": {key: request.form.getall(key) for key in request.form},
                "files": {name: [f.filename, f.content_type, f.size, f.content.decode()]
                          for name, f in request.files.items()},
            }
    """,
    "misc/raw.py": """
        from engine import HookResponse
        def run(request, ctx):
            ctx.send("item", {"size": len(request.body)})
            return HookResponse(body=request.body[::-1], content_type="application/octet-stream")
    """,
    "misc/lookup.py": """
        def run(request, ctx):
            return {"method": request.method, "path": request.path, "q": request.query.getall("q", []),
                    "body": request.data}
    """,
    "misc/named.py": """
        def run(request, ctx):
            ctx.send("more", {"n": request.data["n"]}, run_id=request.data["run_id"])
            return "added"
    """,
    "misc/sink.py": "def run(task, ctx):\n    pass\n",
    # -- a hook handing work to a person, and posting to Slack (the transactional path) -----------
    "people/workflow.py": """
        from engine import Workflow
        workflow = Workflow("people")
        ask = workflow.hook("ask", auth=None)
        review = workflow.form("review", assignee="{email}")
        workflow.transition(ask, review, on="review")
    """,
    "people/ask.py": """
        def run(request, ctx):
            ctx.send("review", request.data)
            ctx.slack.post("#ops", f"review asked of {request.data.get('email')}")
    """,
    "people/review.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Review", {"What": "{what}"})
        def run(task, answers, ctx):
            pass
    """,
}


@dataclass
class Served:
    """A running hook server and what the tests need to reach it."""

    url: str
    http: aiohttp.ClientSession
    store: Store
    db: Database

    async def post(self, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                   method: str = "POST") -> tuple[int, CIMultiDict[str], bytes]:
        async with self.http.request(method, f"{self.url}/hooks/{path}", data=body,
                                     headers=headers or {}) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()

    async def counts(self) -> dict[str, int]:
        out = {}
        for table in ("runs", "tasks", "hook_deliveries"):
            out[table] = int(await scalar(self.store, f"SELECT count(*) FROM {table}"))
        return out


Serve = Callable[..., Awaitable[Served]]
NOTHING = {"runs": 0, "tasks": 0, "hook_deliveries": 0}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    return SECRET


@pytest.fixture
async def serve(db: Database, database_url: str, make_stages: Any, tmp_path: Path,
                secret: str) -> AsyncIterator[Serve]:
    """``await serve(clock=..., **settings)``: flowbot's HTTP app on a free loopback port."""
    runners: list[web.AppRunner] = []
    sessions: list[aiohttp.ClientSession] = []
    registry: Registry = make_stages(STAGES)

    async def start(*, clock: Any = None, **settings: Any) -> Served:
        store = Store(db, registry, **({"clock": clock} if clock else {}))
        s = Settings(database_url=database_url, home=tmp_path / "home", api_token="api-token", **settings)
        app = App(settings=s, db=db, registry=registry, store=store, database_url=database_url)
        runner = web.AppRunner(build_http_app(app), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        session = aiohttp.ClientSession()
        sessions.append(session)
        return Served(f"http://127.0.0.1:{port}", session, store, db)

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


def github_delivery(secret: str, delivery: str) -> tuple[bytes, dict[str, str]]:
    """A push delivery as GitHub sends it: compact JSON, its headers, both signatures."""
    push = {
        "ref": "refs/heads/main",
        "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
        "after": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
        "repository": {"id": 1296269, "name": "Hello-World", "full_name": "octocat/Hello-World",
                       "private": False, "owner": {"login": "octocat", "id": 1}},
        "pusher": {"name": "octocat", "email": "octocat@github.com"},
        "sender": {"login": "octocat", "id": 1, "type": "User"},
        "head_commit": {"id": "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", "message": "Fix all the bugs \u2713"},
    }
    body = json.dumps(push, separators=(",", ":"), ensure_ascii=False).encode()
    headers = {
        "Accept": "*/*",
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/7f6a9d2",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": "sha1=" + sign_hmac(secret, body, prefix="", algorithm="sha1")["X-Signature"],
        **sign_github(secret, body),
    }
    return body, headers


# --- a real GitHub delivery, end to end ----------------------------------------------------------


async def test_a_github_push_delivery_starts_a_run_whose_next_stage_a_worker_executes(
        serve: Serve, secret: str) -> None:
    served = await serve()
    # A poll interval longer than the test: the worker runs the next stages because each delivery
    # woke it (NOTIFY), not because it polled.
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(served.store, WorkerOptions(poll_interval=600)).run(stop))
    try:
        for n in range(2):
            delivery = str(uuid.uuid4())
            body, headers = github_delivery(secret, delivery)

            status, resp_headers, resp_body = await served.post("github/events", body, headers)

            assert status == 202, resp_body
            assert json.loads(resp_body) == {"accepted": "push"}
            assert resp_headers["X-Seen"] == "1"
            run_id = str(await scalar(served.store, "SELECT id FROM runs WHERE trigger->>'delivery_id' = :d",
                                      d=delivery))
            trigger = await scalar(served.store, "SELECT trigger FROM runs WHERE id = CAST(:id AS uuid)", id=run_id)
            assert trigger == {"kind": "hook", "hook": "gh/github", "path": "github/events", "method": "POST",
                               "delivery_id": delivery}

            async def completed() -> dict[str, Any] | None:
                report = await served.store.report(run_id)  # noqa: B023 (awaited in this iteration)
                return report if report and report["status"] == "completed" else None

            report = await eventually(completed, what=f"run {n + 1} to complete")
            assert [(s["stage"], s["type"], s["status"]) for s in report["steps"]] == [
                ("record", "push", "completed")]
            assert report["context"] == {"recorded": "octocat/Hello-World", "delivery": delivery}
    finally:
        stop.set()
        await worker
    assert await served.counts() == {"runs": 2, "tasks": 2, "hook_deliveries": 2}


async def test_a_delivery_is_committed_before_it_is_acknowledged(serve: Serve, secret: str) -> None:
    served = await serve()
    delivery = str(uuid.uuid4())
    body, headers = github_delivery(secret, delivery)

    status, _, _ = await served.post("github/events", body, headers)

    # Read right after the 202, on another connection: the run, its first task (with who created
    # it) and the delivery record are all there.
    assert status == 202
    assert await served.counts() == {"runs": 1, "tasks": 1, "hook_deliveries": 1}
    assert await scalar(served.store, "SELECT created_by FROM tasks") == "hook:gh/github"
    assert await scalar(served.store, "SELECT status FROM tasks") == "pending"
    stored = await scalar(served.store, "SELECT run_ids FROM hook_deliveries WHERE delivery_id = :d", d=delivery)
    assert stored == [str(await scalar(served.store, "SELECT id FROM runs"))]


async def test_a_github_redelivery_returns_the_first_response_and_starts_nothing_new(
        serve: Serve, secret: str) -> None:
    served = await serve()
    body, headers = github_delivery(secret, str(uuid.uuid4()))
    first = await served.post("github/events", body, headers)

    again = await served.post("github/events", body, headers)

    assert (again[0], again[2]) == (first[0], first[2]) == (202, b'{"accepted":"push"}')
    assert again[1]["X-Seen"] == "1" and again[1]["Flowbot-Replayed"] == "true"
    assert "Flowbot-Replayed" not in first[1]
    assert await served.counts() == {"runs": 1, "tasks": 1, "hook_deliveries": 1}


async def test_a_github_ping_that_sends_nothing_is_answered_and_recorded_without_a_run(
        serve: Serve, secret: str) -> None:
    served = await serve()
    body = b'{"zen":"Keep it logically awesome.","hook_id":292430182}'
    headers = {**JSON, "X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4()),
               **sign_github(secret, body)}

    status, _, resp_body = await served.post("github/events", body, headers)

    assert (status, json.loads(resp_body)) == (200, {"pong": True})
    assert await served.counts() == {"runs": 0, "tasks": 0, "hook_deliveries": 1}


# --- every auth preset over HTTP -------------------------------------------------------------------

NOW = 1_767_225_600  # 2026-01-01 00:00:00 UTC
BODY = b'{"id":"evt_1","event_id":"Ev1","amount":4200}'


def signed(preset: str, secret: str, body: bytes, ts: int) -> dict[str, str]:
    return {
        "bearer": lambda: {"Authorization": f"Bearer {secret}"},
        "hmac": lambda: sign_hmac(secret, body),
        "github": lambda: sign_github(secret, body),
        "stripe": lambda: sign_stripe(secret, body, ts),
        "slack": lambda: sign_slack(secret, body, ts),
    }[preset]()


PRESETS = ["bearer", "hmac", "github", "stripe", "slack"]
SIGNATURE_HEADER = {"bearer": "Authorization", "hmac": "X-Signature", "github": "X-Hub-Signature-256",
                    "stripe": "Stripe-Signature", "slack": "X-Slack-Signature"}


@pytest.fixture
async def at_now(serve: Serve) -> Served:
    import datetime as dt

    return await serve(clock=FakeClock(dt.datetime.fromtimestamp(NOW, dt.UTC)))


@pytest.mark.parametrize("preset", PRESETS)
async def test_a_correctly_signed_request_to_each_preset_starts_one_run(
        at_now: Served, secret: str, preset: str) -> None:
    status, _, body = await at_now.post(f"signed/{preset}", BODY, {**JSON, **signed(preset, secret, BODY, NOW)})

    assert (status, json.loads(body)) == (200, {"ok": True})
    assert await at_now.counts() == {"runs": 1, "tasks": 1, "hook_deliveries": 1}


#: (preset, case): a bearer token signs no body, only Stripe and Slack sign a timestamp.
BAD_SIGNATURES = [
    (preset, case)
    for preset in PRESETS
    for case in ("wrong secret", "tampered body", "missing header", "stale timestamp")
    if not (case == "tampered body" and preset == "bearer")
    and not (case == "stale timestamp" and preset not in ("stripe", "slack"))
]


@pytest.mark.parametrize(("preset", "case"), BAD_SIGNATURES, ids=[f"{p}-{c}" for p, c in BAD_SIGNATURES])
async def test_a_badly_signed_request_to_each_preset_is_a_401_that_creates_nothing(
        at_now: Served, secret: str, preset: str, case: str) -> None:
    body, ts = BODY, NOW
    if case == "wrong secret":
        headers = signed(preset, "not-" + secret, body, ts)
    elif case == "tampered body":
        headers = signed(preset, secret, body, ts)
        body = body.replace(b"4200", b"9999")
    elif case == "missing header":
        headers = {k: v for k, v in signed(preset, secret, body, ts).items() if k != SIGNATURE_HEADER[preset]}
    else:
        headers = signed(preset, secret, body, NOW - 301)

    status, _, resp = await at_now.post(f"signed/{preset}", body, {**JSON, **headers})

    assert status == 401
    reason = json.loads(resp)["error"]
    expected = {"missing header": "missing", "stale timestamp": "timestamp outside tolerance"}.get(case, "mismatch")
    assert reason.startswith("authentication failed:") and expected in reason, reason
    assert SECRET not in reason
    assert await at_now.counts() == NOTHING


async def test_a_hook_whose_secret_is_not_set_refuses_every_request_with_503(
        serve: Serve, secret: str, monkeypatch: pytest.MonkeyPatch) -> None:
    served = await serve()
    monkeypatch.delenv("HOOK_SECRET")

    status, _, resp = await served.post("signed/hmac", BODY, {**JSON, **sign_hmac(secret, BODY)})

    assert status == 503 and "HOOK_SECRET" not in json.loads(resp)["error"]
    assert await served.counts() == NOTHING


# --- bad input: each status, nothing created ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "method", "body", "headers", "status", "message"),
    [
        ("nowhere", "POST", b"{}", JSON, 404, "no hook at /hooks/nowhere"),
        ("open", "GET", b"", {}, 405, "method GET is not allowed on /hooks/open (allowed: POST)"),
        ("lookup/v1", "POST", b"{}", JSON, 405, "(allowed: GET, DELETE)"),
        ("open", "POST", b'{"a": 1,', JSON, 400, "malformed JSON body: Expecting"),
        ("open", "POST", b"\xff\xfe{", JSON, 400, "malformed JSON body"),
        ("forms", "POST", b"a=1&&=&b", {"Content-Type": "application/x-www-form-urlencoded"}, 400,
         "malformed form body: bad query field"),
        ("forms", "POST", b"--x\r\nbroken", {"Content-Type": "multipart/form-data; boundary=x"}, 400,
         "malformed multipart body"),
        ("forms", "POST", b"a=1", {"Content-Type": "multipart/form-data"}, 400, "has no boundary"),
        ("open", "POST", b"<a/>", {"Content-Type": "application/xml"}, 415,
         "content type application/xml is not accepted by /hooks/open"),
        ("forms", "POST", b"{}", JSON, 415, "content type application/json is not accepted"),
        ("open", "POST", b"{}", {}, 415, "content type application/octet-stream is not accepted"),
        ("open", "POST", b"{}", {**JSON, "Idempotency-Key": "k" * 201}, 400, "delivery id over 200 characters"),
        ("small", "POST", b'{"pad": "' + b"x" * 200 + b'"}', JSON, 413, "over the 100-byte limit"),
        ("open", "POST", b'{"pad": "' + b"x" * 5000 + b'"}', JSON, 413, "over the 4096-byte limit"),
    ],
    ids=["404", "405", "405-get-only", "400-json", "400-encoding", "400-form", "400-multipart",
         "400-boundary", "415", "415-forms-only", "415-no-type", "400-delivery-id", "413-hook", "413-global"],
)
async def test_bad_input_gets_its_status_and_reason_and_creates_nothing(
        serve: Serve, path: str, method: str, body: bytes, headers: dict[str, str], status: int,
        message: str) -> None:
    served = await serve(hook_max_bytes=4096)

    got, resp_headers, resp = await served.post(path, body, headers, method=method)

    assert got == status, resp
    assert resp_headers["Content-Type"].startswith("application/json")
    assert message in json.loads(resp)["error"]
    if status == 405:
        assert resp_headers["Allow"] in ("POST", "GET, DELETE")
    assert await served.counts() == NOTHING


async def test_a_body_over_the_limit_without_a_content_length_is_refused_while_reading(serve: Serve) -> None:
    served = await serve(hook_max_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 100

    async with served.http.post(f"{served.url}/hooks/open", data=chunks(), headers=JSON) as resp:
        assert resp.status == 413
        assert "over the 1000-byte limit" in (await resp.json())["error"]
    assert await served.counts() == NOTHING


async def test_a_stage_that_raises_gets_a_500_with_a_correlation_id_and_its_traceback_is_logged(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    served = await serve()
    with caplog.at_level(logging.ERROR, logger="engine.triggers.hooks.http"):
        status, headers, resp = await served.post("crash", b"{}", JSON)

    assert status == 500
    error = json.loads(resp)
    correlation = error["correlation_id"]
    assert headers["X-Correlation-Id"] == correlation
    assert "hunter2" not in resp.decode() and "Traceback" not in resp.decode()
    [record] = [r for r in caplog.records if correlation in r.getMessage()]
    assert record.exc_info is not None and "hunter2" in str(record.exc_info[1])
    assert await served.counts() == NOTHING


async def test_a_send_the_request_cannot_make_is_the_senders_fault_413_or_422_not_500(serve: Serve) -> None:
    served = await serve(max_payload_bytes=200)
    status, _, resp = await served.post("open", json.dumps({"blob": "x" * 300}).encode(), JSON)
    assert status == 413
    assert json.loads(resp)["error"].startswith("the request does not make a valid task: misc/open: payload is ")
    status, _, resp = await served.post("open", b"[1, 2]", JSON)
    assert status == 422
    assert json.loads(resp)["error"] == ("the request does not make a valid task: misc/open: payload must be a "
                                         "JSON object (a dict), got list")
    assert await served.counts() == NOTHING


async def test_a_stage_refusing_with_a_4xx_response_sends_nothing_and_records_nothing(serve: Serve) -> None:
    served = await serve()
    key = {"Idempotency-Key": "refused-1"}

    first = await served.post("refuse", b"{}", {**JSON, **key})
    again = await served.post("refuse", b"{}", {**JSON, **key})

    assert first[0] == again[0] == 422 and json.loads(first[2]) == {"error": "amount is missing"}
    assert "Flowbot-Replayed" not in again[1]  # not recorded: the stage ran again
    assert await served.counts() == NOTHING


async def test_a_send_naming_a_run_that_does_not_exist_is_a_422_that_creates_nothing(serve: Serve) -> None:
    served = await serve()
    body = json.dumps({"n": 1, "run_id": str(uuid.uuid4())}).encode()

    status, _, resp = await served.post("named", body, JSON)

    assert status == 422 and "does not exist" in json.loads(resp)["error"]
    assert await served.counts() == NOTHING


# --- idempotency ------------------------------------------------------------------------------------


async def test_a_redelivery_with_the_same_idempotency_key_creates_one_run_and_replays_the_response(
        serve: Serve) -> None:
    served = await serve()
    key = {"Idempotency-Key": "order-42"}

    first = await served.post("open", b'{"order": 42}', {**JSON, **key})
    second = await served.post("open", b'{"order": 42, "changed": true}', {**JSON, **key})
    other = await served.post("open", b'{"order": 43}', {**JSON, "Idempotency-Key": "order-43"})

    assert first[0] == second[0] == 200
    assert json.loads(first[2]) == json.loads(second[2]) == {"got": {"order": 42}}
    assert json.loads(other[2]) == {"got": {"order": 43}}
    assert await served.counts() == {"runs": 2, "tasks": 2, "hook_deliveries": 2}
    assert await scalar(served.store, "SELECT context FROM runs ORDER BY created_at LIMIT 1") == {"via": "open"}


async def test_concurrent_deliveries_with_one_id_start_one_run_and_all_get_the_first_response(
        serve: Serve) -> None:
    served = await serve()
    headers = {**JSON, "Idempotency-Key": "twin"}

    results = await asyncio.gather(*(served.post("open", b'{"twin": true}', headers) for _ in range(6)))

    assert {(status, body) for status, _, body in results} == {(200, b'{"got":{"twin":true}}')}
    assert await served.counts() == {"runs": 1, "tasks": 1, "hook_deliveries": 1}


async def test_requests_without_a_delivery_id_are_never_deduplicated(serve: Serve) -> None:
    served = await serve()
    for _ in range(2):
        assert (await served.post("open", b'{"same": 1}', JSON))[0] == 200
    assert await served.counts() == {"runs": 2, "tasks": 2, "hook_deliveries": 2}


# --- request and response shapes -------------------------------------------------------------------


async def test_a_hook_that_sends_nothing_answers_ok_with_no_runs(serve: Serve) -> None:
    served = await serve()

    status, _, body = await served.post("quiet")

    assert (status, json.loads(body)) == (200, {"ok": True, "run_ids": []})
    assert await served.counts() == {"runs": 0, "tasks": 0, "hook_deliveries": 1}


async def test_a_get_hook_sees_its_method_path_and_query(serve: Serve) -> None:
    served = await serve()

    async with served.http.get(f"{served.url}/hooks/lookup/v1?q=a&q=b%20c") as resp:
        assert resp.status == 200
        assert await resp.json() == {"method": "GET", "path": "lookup/v1", "q": ["a", "b c"], "body": None}
    status, _, body = await served.post("lookup/v1", method="DELETE")
    assert status == 200 and json.loads(body)["method"] == "DELETE"


async def test_a_form_urlencoded_body_is_parsed_into_fields(serve: Serve) -> None:
    served = await serve()
    body = b"name=Ann+Lee&tag=a&tag=b&empty=&note=caf%C3%A9"

    status, _, resp = await served.post(
        "forms", body, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})

    assert status == 200
    assert json.loads(resp) == {
        "content_type": "application/x-www-form-urlencoded",
        "data": {"name": "Ann Lee", "tag": "a", "empty": "", "note": "café"},
        "form": {"name": ["Ann Lee"], "tag": ["a", "b"], "empty": [""], "note": ["café"]},
        "files": {},
    }
    assert await scalar(served.store, "SELECT payload FROM tasks") == {
        "data": {"name": "Ann Lee", "tag": "a", "empty": "", "note": "café"}}


async def test_a_multipart_body_is_parsed_into_fields_and_files(serve: Serve) -> None:
    served = await serve()
    form = aiohttp.FormData()
    form.add_field("name", "Ann")
    form.add_field("tag", "a")
    form.add_field("tag", "b")
    form.add_field("receipt", b"total: 42 EUR", filename="receipt.txt", content_type="text/plain")

    async with served.http.post(f"{served.url}/hooks/forms", data=form) as resp:
        assert resp.status == 200, await resp.text()
        got = await resp.json()

    assert got == {
        "content_type": "multipart/form-data",
        "data": {"name": "Ann", "tag": "a"},
        "form": {"name": ["Ann"], "tag": ["a", "b"]},
        "files": {"receipt": ["receipt.txt", "text/plain", 13, "total: 42 EUR"]},
    }


async def test_a_response_object_sets_status_type_and_body_and_any_type_can_be_accepted(serve: Serve) -> None:
    served = await serve()

    status, headers, body = await served.post("raw", b"\x00\x01\x02", {"Content-Type": "application/pdf"})

    assert (status, headers["Content-Type"], body) == (200, "application/octet-stream", b"\x02\x01\x00")
    assert await scalar(served.store, "SELECT payload FROM tasks") == {"size": 3}


async def test_a_hook_may_add_a_task_to_a_run_it_names(serve: Serve) -> None:
    served = await serve()
    first = await served.post("open", b'{"n": 0}', JSON)
    assert first[0] == 200
    run_id = str(await scalar(served.store, "SELECT id FROM runs"))

    status, _, body = await served.post("named", json.dumps({"n": 1, "run_id": run_id}).encode(), JSON)

    assert (status, body) == (200, b"added")
    assert await served.counts() == {"runs": 1, "tasks": 2, "hook_deliveries": 2}


async def test_a_hook_sending_to_a_form_starts_a_waiting_run_with_its_assignment_and_slack_post(
        serve: Serve) -> None:
    served = await serve()

    status, _, body = await served.post("ask", b'{"email": "ann@example.com", "what": "laptop"}', JSON)

    assert status == 200
    run_id = json.loads(body)["run_ids"][0]
    assert await scalar(served.store, "SELECT status FROM runs WHERE id = CAST(:id AS uuid)", id=run_id) == "waiting"
    assert await scalar(served.store, "SELECT stage || ':' || status FROM tasks") == "review:pending"
    kinds = await scalar(served.store, "SELECT array_agg(kind ORDER BY kind) FROM outbox")
    assert kinds == ["form.assigned", "slack.post"]
    assert await served.counts() == {"runs": 1, "tasks": 1, "hook_deliveries": 1}


async def test_a_form_assignee_rule_the_payload_cannot_fill_is_a_422_that_creates_nothing(serve: Serve) -> None:
    served = await serve()

    status, _, body = await served.post("ask", b'{"what": "laptop"}', JSON)

    assert status == 422, body
    assert "email" in json.loads(body)["error"]
    assert await served.counts() == NOTHING
    assert await scalar(served.store, "SELECT count(*) FROM outbox") == 0


async def test_startup_warns_about_hooks_without_auth_and_unset_secrets(
        serve: Serve, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOOK_SECRET")
    with caplog.at_level(logging.WARNING, logger="engine.triggers.hooks.http"):
        await serve()
    messages = [r.getMessage() for r in caplog.records]
    assert "hook misc/open (/hooks/open) accepts unauthenticated requests (auth=None)" in messages
    assert any(m.startswith("hook gh/github (/hooks/github/events): secret env HOOK_SECRET is not set")
               for m in messages)


# --- load-time checks ---------------------------------------------------------------------------------


def test_hook_declaration_mistakes_fail_loading_with_file_and_line(make_stages: Any) -> None:
    files = {
        "bad/workflow.py": """
            from engine import GitHubAuth, Workflow
            workflow = Workflow("bad")
            a = workflow.hook("a", auth="GITHUB_SECRET")
            b = workflow.hook("b", auth=GitHubAuth("gh-0123456789abcdef!"))
            c = workflow.hook("c", auth=None, methods=["FETCH"])
            d = workflow.hook("d", path="x/../y", auth=None)
            e = workflow.hook("e", auth=None, accept=["json"], max_bytes=0, method="GET")
            g = workflow.hook("g")
        """,
        **{f"bad/{n}.py": "def run(request, ctx):\n    return None\n" for n in "abcdeg"},
    }
    with pytest.raises(WorkflowLoadError) as raised:
        make_stages(files)
    errors = {(Path(e.file or "").name, e.line, e.message) for e in raised.value.errors}

    def at(line: int, text: str) -> bool:
        return any(f == "workflow.py" and n == line and text in m for f, n, m in errors)

    assert at(3, 'hook "a": auth= must be BearerAuth')
    assert at(4, "takes the NAME of the environment variable")
    assert not any("0123456789abcdef" in m for _, _, m in errors)  # a pasted secret is never echoed
    assert at(5, 'method "FETCH" is not one of GET, POST, PUT, PATCH, DELETE')
    assert at(6, 'path "x/../y" must be')
    assert at(7, "accept= entry 'json' is not a media type")
    assert at(7, "max_bytes must be a positive number of bytes, got 0")
    assert at(7, "unknown option(s) method")
    assert at(8, 'hook "g" must declare auth=')


def test_two_hooks_on_one_path_fail_loading_with_file_and_line(make_stages: Any) -> None:
    files = {
        f"{name}/workflow.py": f"""
            from engine import Workflow
            workflow = Workflow("{name}")
            hook = workflow.hook("in", path="shared/path", auth=None)
        """
        for name in ("one", "two")
    } | {f"{name}/in.py": "def run(request, ctx):\n    return None\n" for name in ("one", "two")}
    with pytest.raises(WorkflowLoadError) as raised:
        make_stages(files)
    [error] = raised.value.errors
    assert error.line == 3 and Path(error.file or "").parent.name == "two"
    assert 'hook path "/hooks/shared/path" is already used by one/in' in error.message
