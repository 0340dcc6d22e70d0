"""/metrics over real HTTP: the bearer token, and what the counters, histograms and gauges say
after real work (tasks run, retried and failed, effects waiting, hook requests, job fires, Slack
calls). Metrics are per process, so counters are compared before and after."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from fakeslack import FakeSlack
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError
from support import drain, free_port, write_stages

from bot.context import make_client, slack_call_metrics
from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.triggers.jobs.firing import fire, jobs_of
from engine.web.metrics import metrics_part
from engine.web.server import serve

TOKEN = "metrics-token-0123456789"

STAGES = {
    "meter/workflow.py": """
        from engine import Workflow
        workflow = Workflow("meter")
        one = workflow.script("one")
        two = workflow.script("two")
        flaky = workflow.script("flaky", max_attempts=2)
        inbound = workflow.hook("inbound", path="meter", auth=None)
        tick = workflow.job("tick", schedule="0 9 * * MON", timezone="UTC")
        workflow.transition(one, two)
        workflow.transition(inbound, one)
        workflow.transition(tick, one)
    """,
    "meter/one.py": "def run(task, ctx):\n    ctx.send('next', {})\n",
    "meter/two.py": "def run(task, ctx):\n    ctx.slack.post('#ops', 'done')\n",
    "meter/flaky.py": "def run(task, ctx):\n    raise RuntimeError('always')\n",
    "meter/inbound.py": "def run(request, ctx):\n    ctx.send('go', {})\n    return {'ok': True}\n",
    "meter/tick.py": "def run(ctx):\n    ctx.send('go', {})\n",
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Server:
    def __init__(self, app: App, base: str, session: aiohttp.ClientSession) -> None:
        self.app = app
        self.base = base
        self.session = session

    async def scrape(self, *, token: str | None = TOKEN, base: str | None = None) -> tuple[int, str, str]:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        async with self.session.get((base or self.base) + "/metrics", headers=headers) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), await resp.text()

    async def samples(self, base: str | None = None) -> Samples:
        status, _, body = await self.scrape(base=base)
        assert status == 200, body
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(body) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def server(database_url: str, tmp_path: Path) -> AsyncIterator[Server]:
    settings = Settings(database_url=database_url, home=tmp_path / "home", api_token=TOKEN,
                        stages_dir=write_stages(tmp_path / "stages", STAGES), metrics_port=free_port())
    async with open_app(settings, load_plugins_=False, pool_size=4) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        web = asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))
        port = await asyncio.wait_for(bound, 10)
        try:
            async with aiohttp.ClientSession() as session:
                yield Server(app, f"http://127.0.0.1:{port}", session)
        finally:
            stop.set()
            await web


@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x"])
async def test_metrics_need_the_api_bearer_token(server: Server, token: str | None) -> None:
    status, _, body = await server.scrape(token=token)
    assert status == 401
    assert "bearer token" in body and "flowbot_" not in body


async def test_metrics_are_prometheus_text_with_tasks_stages_and_database_gauges(server: Server) -> None:
    store = server.app.store
    wf = server.app.registry.get("meter")
    before = await server.samples()
    status, content_type, _ = await server.scrape()
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")

    for _ in range(3):
        await store.start_run(wf.stage("one"), {})
    await store.start_run(wf.stage("flaky"), {})
    await drain(store)  # flaky: first attempt retried, its backoff keeps the second one waiting
    store.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    await drain(store)  # now its second attempt fails for good
    waiting = [await store.start_run(wf.stage("one"), {}) for _ in range(2)]  # left pending

    after = await server.samples()
    assert value(after, "flowbot_tasks_claimed_total", workflow="meter", stage="one") \
        - value(before, "flowbot_tasks_claimed_total", workflow="meter", stage="one") == 3
    assert value(after, "flowbot_tasks_completed_total", workflow="meter", stage="two") \
        - value(before, "flowbot_tasks_completed_total", workflow="meter", stage="two") == 3
    assert value(after, "flowbot_tasks_retried_total", workflow="meter", stage="flaky") \
        - value(before, "flowbot_tasks_retried_total", workflow="meter", stage="flaky") == 1
    assert value(after, "flowbot_tasks_failed_total", workflow="meter", stage="flaky") \
        - value(before, "flowbot_tasks_failed_total", workflow="meter", stage="flaky") == 1
    assert value(after, "flowbot_stage_duration_seconds_count", workflow="meter", stage="two") \
        - value(before, "flowbot_stage_duration_seconds_count", workflow="meter", stage="two") == 3
    assert value(after, "flowbot_stage_duration_seconds_bucket", workflow="meter", stage="two", le="+Inf") >= 3

    # Gauges read from the database at scrape time.
    assert len(waiting) == 2
    assert value(after, "flowbot_tasks", state="pending", kind="script") == 2
    assert value(after, "flowbot_tasks", state="locked", kind="script") == 0
    assert value(after, "flowbot_runs", status="running") == 2
    assert value(after, "flowbot_outbox_pending", kind="slack.post") == 3, "three posts, no dispatcher here"
    assert value(after, "flowbot_oldest_pending_task_age_seconds", kind="script") >= 0
    assert value(after, "flowbot_db_up") == 1
    assert ("flowbot_db_pool_connections", (("state", "in_use"),)) in after
    assert ("process_resident_memory_bytes", ()) in after


async def test_hook_requests_and_job_fires_are_counted(server: Server) -> None:
    before = await server.samples()
    for _ in range(2):
        async with server.session.post(server.base + "/hooks/meter", json={}) as resp:
            assert resp.status == 200
    async with server.session.post(server.base + "/hooks/nothing-here", json={}) as resp:
        assert resp.status == 404
    [job] = jobs_of(server.app.registry)
    result = await fire(server.app.store, job, dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC))
    assert result.status == "fired"
    after = await server.samples()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("flowbot_hook_requests_total", hook="meter/inbound", status="200") == 2
    assert grew("flowbot_hook_requests_total", hook="(none)", status="404") == 1
    assert grew("flowbot_job_fires_total", job="meter/tick", outcome="fired") == 1


async def test_metrics_are_served_on_their_own_port_with_the_same_token(server: Server) -> None:
    stop = asyncio.Event()
    part = asyncio.create_task(metrics_part(server.app)(stop))
    base = f"http://127.0.0.1:{server.app.settings.metrics_port}"
    try:
        for _ in range(100):
            try:
                status, _, body = await server.scrape(base=base)
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        assert status == 200 and "flowbot_db_up 1.0" in body
        status, _, _ = await server.scrape(base=base, token=None)
        assert status == 401
    finally:
        stop.set()
        await part


async def test_slack_calls_and_rate_limits_are_counted(server: Server, fake_slack: FakeSlack) -> None:
    before = await server.samples()
    settings = server.app.settings.with_(slack_bot_token="xoxb-test", slack_api_url=fake_slack.url)
    async with aiohttp.ClientSession(trace_configs=[slack_call_metrics()]) as session:
        client = make_client(settings, session)
        fake_slack.rate_limit("chat.postMessage", times=1)
        with pytest.raises(SlackApiError):
            await client.chat_postMessage(channel="C1", text="hi")
        await client.chat_postMessage(channel="C1", text="hi")
    after = await server.samples()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("flowbot_slack_api_calls_total", method="chat.postMessage", status="429") == 1
    assert grew("flowbot_slack_api_calls_total", method="chat.postMessage", status="200") == 1
    assert grew("flowbot_slack_rate_limited_total", method="chat.postMessage") == 1
