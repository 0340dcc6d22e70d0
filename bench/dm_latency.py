"""How soon people hear from flowbot: hook request -> assignment DM, Approve click -> requester DM.

    python bench/dm_latency.py [--requests 200] [--gap-ms 20] [--warmup 5] [--trace]

Starts an embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must allow
CREATE DATABASE), a fake Slack Web API on loopback (tests/fakeslack.py) that notes when each
``chat.postMessage`` arrives, and a real flowbot in this process with the parts `flowbot run`
runs for this (its aiohttp server with the Slack plugin, a worker, the outbox dispatcher at its
default 2 s poll). One request at a time (``--gap-ms`` apart, after ``--warmup`` requests that
are not counted: a process's first requests pay for imports and prepared statements), it
measures:

- hook -> assignment DM: ``POST /hooks/expense`` sent until the fake receives the approver's DM
  (the hook's commit creates a form task; its assignment goes through the outbox);
- Approve -> next stage started: the signed ``block_actions`` click sent until the ``pay`` stage's
  task started (its ``started_at``, same machine clock);
- Approve -> requester DM: the click sent until the fake receives the DM the ``pay`` stage sends
  (``ctx.slack.dm``, through the outbox).

Beside them, a same-run baseline: a minimal aiohttp app whose handlers call ``chat.postMessage``
on the same fake with the same client (slack_sdk's ``AsyncWebClient``) before answering: the
floor of "an HTTP request in, a Slack message out" on this machine, with no database. The goal
for flowbot: p99 under 50 ms on both paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import statistics
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import common  # bench/common.py (puts the repository root on sys.path)
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text

from engine.cli.main import outbox_part, run_async, tune_for_serving, worker_part
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.store import migrate
from engine.web.server import serve
from tests.fakeslack import FakeSlack
from tests.slack import sign, trigger_id

SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench"
APPROVER, REQUESTER = "U0BOB", "U0ANN"
GOAL_MS = 50.0

STAGES = {
    "dm_bench/workflow.py": """
        from engine import Workflow
        workflow = Workflow("dm-bench")
        request = workflow.hook("request", path="expense", auth=None)
        review = workflow.form("review", assignee="{approver}")
        pay = workflow.script("pay")
        workflow.transition(request, review, on="expense")
        workflow.transition(review, pay, on="approved")
    """,
    "dm_bench/request.py": """
        def run(request, ctx):
            ctx.send("expense", request.data)
    """,
    "dm_bench/review.py": """
        from engine.forms import Approval

        def form(task):
            return Approval("Expense approval", {"Claim": "{n}"})

        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "dm_bench/pay.py": """
        def run(task, ctx):
            ctx.slack.dm(task["requester"], f"Your claim {task['n']} was approved")
    """,
}


class TimedSlack(FakeSlack):
    """The fake Slack, noting when each message arrives (``time.perf_counter``), per channel."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        self._arrived = asyncio.Condition()
        #: (when, method) of every call, for ``--trace``.
        self.log: list[tuple[float, str]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.log.append((time.perf_counter(), request.match_info["method"]))
        return await super()._handle(request)

    def _api_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        at = time.perf_counter()
        answer = super()._api_chat_postMessage(params)
        if answer.get("ok"):
            self.arrivals.setdefault(str(answer["channel"]), []).append((at, answer))
            asyncio.get_running_loop().create_task(self._tell())
        return answer

    async def _tell(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def nth(self, channel: str, n: int, within: float = 30.0) -> tuple[float, dict[str, Any]]:
        """The ``n``-th message (1-based) to ``channel``, waiting for it."""
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.arrivals.get(channel, [])) >= n), within)
        return self.arrivals[channel][n - 1]


def _click_body(user: str, value: str, channel: str, ts: str) -> str:
    payload = {
        "type": "block_actions", "user": {"id": user, "username": user.lower(), "team_id": "T0FAKE"},
        "api_app_id": "A0FLOWBOT", "team": {"id": "T0FAKE", "domain": "fake"}, "trigger_id": trigger_id(),
        "response_url": "http://127.0.0.1:9/_response",
        "actions": [{"type": "button", "action_id": "flowbot_approve", "block_id": "flowbot_task", "value": value,
                     "text": {"type": "plain_text", "text": "Approve"}, "action_ts": f"{time.time():.6f}"}],
        "container": {"type": "message", "channel_id": channel, "message_ts": ts, "is_ephemeral": False},
        "channel": {"id": channel, "name": "directmessage"},
        "message": {"type": "message", "ts": ts, "text": ""},
    }
    return urlencode({"payload": json.dumps(payload)})


def _approve_value(message: dict[str, Any]) -> str:
    for block in message["message"]["blocks"]:
        for element in block.get("elements", []):
            if element.get("action_id") == "flowbot_approve":
                return str(element["value"])
    raise AssertionError(f"no Approve button in {message}")


async def _post(http: aiohttp.ClientSession, url: str, body: str, content_type: str, *,
                signed: bool = False) -> None:
    headers = {"Content-Type": content_type, **(sign(body, secret=SECRET) if signed else {})}
    async with http.post(url, data=body.encode(), headers=headers) as resp:
        await resp.read()
        assert resp.status < 300, (url, resp.status)


async def measure_flowbot(db_url: str, fake: TimedSlack, n: int, gap: float, *, warmup: int = 0,
                          trace: bool = False) -> dict[str, list[float]]:
    """The three latencies through a real flowbot, ``n`` times."""
    tmp = Path(tempfile.mkdtemp(prefix="fbdm-"))
    stages = tmp / "stages"
    for rel, source in STAGES.items():
        (stages / rel).parent.mkdir(parents=True, exist_ok=True)
        (stages / rel).write_text(textwrap.dedent(source).lstrip())
    settings = Settings(database_url=db_url, stages_dir=stages, home=tmp / "home", host="127.0.0.1", port=0,
                        api_token="bench", slack_bot_token=TOKEN, slack_signing_secret=SECRET,
                        slack_api_url=fake.url)
    out: dict[str, list[float]] = {"hook": [], "started": [], "click": []}
    try:
        async with open_app(settings) as app:
            stop = asyncio.Event()
            bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            parts = [serve(app, stop, port=0, ready=bound.set_result), worker_part(app)(stop),
                     outbox_part(app)(stop), *(p(stop) for p in app.background)]
            tasks = [asyncio.create_task(p) for p in parts]
            tune_for_serving()
            base = f"http://127.0.0.1:{await asyncio.wait_for(bound, 30)}"
            pay = app.registry.get("dm-bench").stage("pay")
            try:
                async with aiohttp.ClientSession() as http:
                    for i in range(1, n + warmup + 1):
                        claim = json.dumps({"approver": APPROVER, "requester": REQUESTER, "n": i})
                        sent = first = time.perf_counter()
                        await _post(http, f"{base}/hooks/expense", claim, "application/json")
                        if trace:
                            common.out(f"  {i}: hook answered after {(time.perf_counter() - sent) * 1000:.1f} ms")
                        at, card = await fake.nth("D" + APPROVER, i)
                        out["hook"].append(at - sent)

                        body = _click_body(APPROVER, _approve_value(card), card["channel"], card["ts"])
                        wall, sent = time.time(), time.perf_counter()
                        await _post(http, f"{base}/slack/events", body, "application/x-www-form-urlencoded",
                                    signed=True)
                        at, _ = await fake.nth("D" + REQUESTER, i)
                        out["click"].append(at - sent)
                        started = await app.db.fetch_one(_PAY_STARTED, {"stage": pay.name, "n": str(i)})
                        assert started is not None and started["started_at"] is not None
                        out["started"].append(started["started_at"].timestamp() - wall)
                        if trace:
                            calls = [f"{m} +{(t - first) * 1000:.1f}" for t, m in fake.log if t >= first]
                            common.out(f"  {i}: hook {out['hook'][-1] * 1000:.1f} ms, click "
                                       f"{out['click'][-1] * 1000:.1f} ms; Slack calls since the hook: "
                                       f"{', '.join(calls)}")
                        await asyncio.sleep(gap)
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {k: v[warmup:] for k, v in out.items()}


#: When the ``pay`` task of claim ``n`` started (a benchmark's own question, not the engine's).
_PAY_STARTED = text("SELECT started_at FROM tasks WHERE stage = :stage AND payload ->> 'n' = :n")


async def measure_baseline(fake: TimedSlack, n: int, gap: float, *, warmup: int = 0) -> dict[str, list[float]]:
    """The same two requests to a minimal aiohttp app that only calls chat.postMessage."""
    client = AsyncWebClient(token=TOKEN, base_url=fake.url)

    async def hook(request: web.Request) -> web.Response:
        claim = await request.json()
        await client.chat_postMessage(channel=claim["approver"], text=f"Claim {claim['n']} waits for you")
        return web.json_response({"ok": True})

    async def events(request: web.Request) -> web.Response:
        payload = json.loads((await request.post())["payload"])  # type: ignore[arg-type]
        await client.chat_postMessage(channel=REQUESTER, text=f"approved by {payload['user']['id']}")
        return web.Response()

    http_app = web.Application()
    http_app.router.add_post("/hook", hook)
    http_app.router.add_post("/slack/events", events)
    runner = web.AppRunner(http_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    first_card = len(fake.arrivals.get("D" + APPROVER, []))
    first_dm = len(fake.arrivals.get("D" + REQUESTER, []))
    out: dict[str, list[float]] = {"hook": [], "click": []}
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(1, n + warmup + 1):
                sent = time.perf_counter()
                await _post(http, f"{base}/hook", json.dumps({"approver": APPROVER, "n": i}), "application/json")
                at, card = await fake.nth("D" + APPROVER, first_card + i)
                out["hook"].append(at - sent)
                body = _click_body(APPROVER, "1", card["channel"], card["ts"])
                sent = time.perf_counter()
                await _post(http, f"{base}/slack/events", body, "application/x-www-form-urlencoded", signed=True)
                at, _ = await fake.nth("D" + REQUESTER, first_dm + i)
                out["click"].append(at - sent)
                await asyncio.sleep(gap)
    finally:
        await runner.cleanup()
    return {k: v[warmup:] for k, v in out.items()}


def _row(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"  {label:<44} p50 {statistics.median(ms):7.1f}  p99 {p99(values):7.1f}  max {max(ms):7.1f} ms"


def p99(values: list[float]) -> float:
    """The 99th percentile, in ms (nearest rank)."""
    ms = sorted(v * 1000 for v in values)
    return ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    with common.pg_server() as server:
        url = await common.fresh_database(server.url, "bench_dm_latency")
        await migrate.upgrade(url)
        fake = TimedSlack()
        await fake.start()
        fake.add_user("bob@example.com", APPROVER)
        fake.add_user("ann@example.com", REQUESTER)
        try:
            ours = await measure_flowbot(url, fake, args.requests, args.gap_ms / 1000, warmup=args.warmup,
                                         trace=args.trace)
            floor = await measure_baseline(fake, args.requests, args.gap_ms / 1000, warmup=args.warmup)
        finally:
            await fake.stop()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    common.out(f"DM latency, {args.requests} requests one at a time ({args.gap_ms:g} ms apart, {args.warmup} "
               f"warm-up), {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load average {load}")
    common.out(_row("hook -> assignment DM (flowbot)", ours["hook"]))
    common.out(_row("hook -> DM (baseline: handler calls Slack)", floor["hook"]))
    common.out(_row("Approve -> next stage started (flowbot)", ours["started"]))
    common.out(_row("Approve -> requester DM (flowbot)", ours["click"]))
    common.out(_row("click -> DM (baseline: handler calls Slack)", floor["click"]))
    for name, values in (("hook -> assignment DM", ours["hook"]), ("Approve -> requester DM", ours["click"])):
        verdict = "met" if p99(values) < GOAL_MS else "NOT met"
        common.out(f"  goal p99 < {GOAL_MS:g} ms for {name}: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=20.0)
    parser.add_argument("--warmup", type=int, default=5, help="requests first, not counted")
    parser.add_argument("--trace", action="store_true", help="print each request's Slack calls with their times")
    with contextlib.suppress(KeyboardInterrupt):
        run_async(main(parser.parse_args()))
