"""The test kit itself (``engine.testing``): time moves only when the test moves it, and then
everything due on the way happens in order; Slack errors and people outside Slack; clear errors
when a test asks for what is not there; and the plugin works in a project of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import write_stages

from engine.testing import Flow, FlowTestError

STAGES = {
    "timers/workflow.py": """
        from engine import Workflow
        workflow = Workflow("timers")
        begin = workflow.script("begin")
        later = workflow.script("later")
        payment = workflow.wait("payment", event="paid", key="{order}", timeout="2h", on_timeout="unpaid")
        shipped = workflow.script("shipped")
        chased = workflow.script("chased")
        workflow.transition(begin, later, on="later")
        workflow.transition(begin, payment, on="order")
        workflow.transition(payment, shipped, on="paid")
        workflow.transition(payment, chased, on="unpaid")
    """,
    "timers/begin.py": """
        def run(task, ctx):
            ctx.send("later", {}, delay="30m")
            ctx.send("order", {"order": task["order"]})
    """,
    "timers/later.py": "def run(task, ctx):\n    ctx.run['later'] = True\n",
    "timers/shipped.py": "def run(task, ctx):\n    ctx.run['shipped'] = task['amount']\n",
    "timers/chased.py": "def run(task, ctx):\n    ctx.slack.post('#sales', text='unpaid ' + task['order'])\n",
    "ticks/workflow.py": """
        from engine import Workflow
        workflow = Workflow("ticks")
        tick = workflow.job("tick", schedule="hourly")
        count = workflow.script("count")
        workflow.transition(tick, count)
    """,
    "ticks/tick.py": "def run(ctx):\n    ctx.send('tick', {'at': ctx.fire_time.isoformat()})\n",
    "ticks/count.py": "def run(task, ctx):\n    ctx.slack.post('#ticks', text=task['at'])\n",
    "asks/workflow.py": """
        from engine import Workflow
        workflow = Workflow("asks")
        ask = workflow.form("ask", assignee="{who}")
        done = workflow.script("done")
        workflow.transition(ask, done)
    """,
    "asks/ask.py": """
        from engine.forms import Approval
        def form(task):
            return Approval("Go?", {"What": "{what}"})
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "asks/done.py": "def run(task, ctx):\n    ctx.slack.dm(task['who'], 'done: ' + task['what'])\n",
}


@pytest.fixture
def flowbot_stages(tmp_path: Path) -> Path:
    return write_stages(tmp_path / "stages", STAGES)


async def test_nothing_timed_happens_until_the_clock_moves_and_then_in_order(flow: Flow) -> None:
    run = await flow.trigger("timers", {"order": "A-1"})
    report = await run.wait()  # waiting: on the clock (the timed task) and on an event
    assert report.status == "waiting"
    assert report.step("later")["status"] == "scheduled"
    assert report.step("payment")["waiting_for"]["key"] == "A-1"
    before = flow.clock.now
    await flow.clock.advance("29m")
    assert "later" not in (await run.report()).context
    await flow.clock.advance("1m")
    assert (await run.report()).context["later"] is True
    await flow.clock.advance("2h")
    report = await run.wait()
    assert report.stages[-1] == "chased" and report.status == "completed"
    assert (flow.clock.now - before).total_seconds() == 2.5 * 3600
    assert [m.text for m in flow.slack.messages_in("#sales")] == ["unpaid A-1"]


async def test_an_event_completes_the_wait_and_says_how_many_it_completed(flow: Flow) -> None:
    run = await flow.trigger("timers", {"order": "A-2"})
    assert await flow.emit("paid", "A-9", {"amount": 1}) == 0
    assert await flow.emit("paid", "A-2", {"amount": 5}) == 1
    assert (await run.report()).context["shipped"] == 5


async def test_a_job_fires_once_per_fire_time_the_clock_passes(flow: Flow) -> None:
    await flow.clock.advance("3h")
    assert len(flow.slack.messages_in("#ticks")) == 3
    assert len(await flow.runs("ticks")) == 3


async def test_a_rate_limited_message_is_delivered_once_its_retry_is_due(flow: Flow) -> None:
    flow.slack.rate_limit("chat.postMessage", retry_after=30)
    run = await flow.trigger("asks", {"who": "bob@example.com", "what": "lunch"})
    assert flow.slack.messages_to("bob@example.com") == []
    await flow.clock.advance("1m")
    assert "lunch" in flow.slack.messages_to("bob@example.com")[0]
    await run.task("ask").approve()
    assert flow.slack.messages_to("bob@example.com")[-1].text == "done: lunch"


async def test_someone_outside_slack_is_mailed_a_link_to_the_task(flow: Flow) -> None:
    flow.slack.outside_slack("carol@example.com")
    await flow.trigger("asks", {"who": "carol@example.com", "what": "a new laptop"})
    [mail] = flow.mail.to("carol@example.com")
    assert "Go?" in mail["Subject"] and "/console/link/" in flow.mail.body(mail)
    assert flow.slack.messages_to("carol@example.com") == []


async def test_the_kit_says_what_is_wrong_with_what_a_test_asks(flow: Flow) -> None:
    with pytest.raises(FlowTestError, match='no workflow named "nope"'):
        await flow.trigger("nope")
    with pytest.raises(FlowTestError, match="is a job"):
        await flow.trigger("ticks", stage="tick")
    with pytest.raises(FlowTestError, match=r"no hook at /hooks/missing \(hooks: none\)"):
        await flow.hook("missing", json={})
    with pytest.raises(FlowTestError, match='no job named "tock"'):
        await flow.run_job("tock")
    with pytest.raises(FlowTestError, match='is not like "30m"'):
        await flow.clock.advance("soon")
    run = await flow.trigger("asks", {"who": "bob@example.com", "what": "x"})
    with pytest.raises(FlowTestError, match='"done" of "asks" is a script'):
        await run.task("done")
    task = await run.task("ask")
    await task.approve()
    with pytest.raises(FlowTestError, match=r'no task waits on a person at "ask" .*ask completed, done completed'):
        await run.task("ask").approve()


def test_a_project_of_its_own_gets_the_flow_fixture_by_installing_flowbot(tmp_path: Path) -> None:
    write_stages(tmp_path / "stages", {k: v for k, v in STAGES.items() if k.startswith("asks/")})
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nasyncio_mode = "auto"\n'
                                             'asyncio_default_fixture_loop_scope = "function"\n')
    (tmp_path / "test_asks.py").write_text(textwrap.dedent("""
        async def test_bob_says_go(flow):
            run = await flow.trigger("asks", {"who": "bob@example.com", "what": "ship it"})
            await run.task("ask").approve(as_="bob@example.com")
            assert (await run.wait()).status == "completed"
            assert flow.slack.messages_to("bob@example.com")[-1].text == "done: ship it"
    """))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWBOT_", "PYTEST_"))}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_asks.py"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
