"""Timeouts and approvals needing several people through the real ``flowbot`` command: task
listings and run reports show the deadline; a decision that leaves the task open says how many
approvals are still needed, and a second one by the same person is refused without a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import cli_env, flowbot, write_stages

STAGES = {
    "buy/workflow.py": """
        from engine import Workflow
        workflow = Workflow("buy")
        two = workflow.form("two", assignee=["max@example.com", "sam@example.com"], timeout="5d",
                            on_timeout="declined")
        done = workflow.script("done")
        workflow.transition(two, done)
    """,
    "buy/two.py": """
        from engine.forms import Approval
        form = Approval("Laptop", approvers=2)
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/done.py": "def run(task, ctx):\n    pass\n",
}


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, write_stages(tmp_path / "stages", STAGES), FLOWBOT_HOME=str(tmp_path / "home"))


def run_cli(*args: str, env: dict[str, str], code: int = 0) -> tuple[str, str]:
    out = flowbot(*args, env=env)
    assert out.returncode == code, (args, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    return out.stdout, out.stderr


def test_deadlines_and_decisions_from_the_cli(env) -> None:
    run_id = run_cli("trigger", "buy", "--stage", "two", env=env)[0].strip()
    [task] = json.loads(run_cli("tasks", "--run", run_id, "--json", env=env)[0])
    assert task["deadline"]
    header = run_cli("tasks", "--run", run_id, env=env)[0].splitlines()[0]
    assert "deadline" in header.split()
    assert "(times out " in run_cli("runs", "show", run_id, env=env)[0]
    out, _ = run_cli("tasks", "approve", str(task["id"]), "--as", "max@example.com", env=env)
    assert "1 of 2 approvals so far, the task stays open" in out
    _, err = run_cli("tasks", "approve", str(task["id"]), "--as", "max@example.com", env=env, code=1)
    assert "already decided" in err
    out, _ = run_cli("tasks", "approve", str(task["id"]), "--as", "sam@example.com", env=env)
    assert "approved by sam@example.com" in out and "so far" not in out
