"""Every shipped example in stages/ runs to its end without Slack: the real ``flowbot`` command
in subprocesses (a background ``flowbot worker``; people act with ``flowbot start`` and
``flowbot tasks ... --as EMAIL``; the helpdesk team comes from stages/teams.toml)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, cli_env, flowbot, spawn, stop

ANN, BOB, SAM = "ann@example.com", "bob@example.com", "sam@example.com"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, ROOT / "stages", FLOWBOT_HOME=str(tmp_path / "home"))


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path):
    log = tmp_path / "worker.log"
    proc = spawn("worker", env=env, log=log)
    yield proc
    stop(proc)


def ok(*args: str, env: dict[str, str]) -> str:
    out = flowbot(*args, env=env, timeout=120)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def report(run_id: str, env: dict[str, str], *statuses: str, within: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        data: dict[str, Any] = json.loads(ok("runs", "show", run_id, "--json", env=env))
        if data["status"] in statuses:
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.5)


def open_task(run_id: str, stage: str, env: dict[str, str]) -> str:
    deadline = time.monotonic() + 60
    while True:
        tasks = json.loads(ok("tasks", "--run", run_id, "--stage", stage, "--json", env=env))
        if tasks and tasks[0]["status"] == "pending":
            return str(tasks[0]["id"])
        assert time.monotonic() < deadline, tasks
        time.sleep(0.5)


def test_every_shipped_example_runs_to_its_end_without_slack(env, worker) -> None:
    # expense: the start form, then the manager approves.
    answers = {"description": "Taxi to the airport", "amount": 42.5, "currency": "EUR", "manager_email": BOB}
    run_id = ok("start", "expense", "--answers", json.dumps(answers), "--as", ANN, env=env).strip()
    ok("tasks", "approve", open_task(run_id, "review", env), "--as", BOB, env=env)
    data = report(run_id, env, "completed", "failed")
    assert [s["stage"] for s in data["steps"]] == ["submit", "review", "pay"] and data["status"] == "completed"
    assert data["context"]["payment"].startswith("PAY-")

    # access-request: the approver named by email (no Slack user picker), who declines with a comment.
    answers = {"system": "aws", "level": "read", "reason": "deploys", "approver": BOB}
    run_id = ok("start", "access-request", "--answers", json.dumps(answers), "--as", ANN, env=env).strip()
    ok("tasks", "decline", open_task(run_id, "approve", env), "--comment", "use read only", "--as", BOB, env=env)
    data = report(run_id, env, "completed", "failed")
    assert [s["stage"] for s in data["steps"]] == ["request", "approve", "notify-refused"]
    assert data["context"]["refused"] == "use read only"

    # helpdesk: a team task claimed by a member of the teams file, then resolved.
    payload = {"summary": "VPN is down", "priority": "high", "started_by": ANN}
    run_id = json.loads(ok("trigger", "helpdesk", "--payload", json.dumps(payload), "--json", env=env))["run_id"]
    task = open_task(run_id, "resolve", env)
    ok("tasks", "claim", task, "--as", SAM, env=env)
    ok("tasks", "submit", task, "--answers", json.dumps({"outcome": "fixed", "resolution": "restarted"}),
       "--as", SAM, env=env)
    data = report(run_id, env, "completed", "failed")
    assert [s["stage"] for s in data["steps"]] == ["open", "resolve", "close"] and data["status"] == "completed"
    assert data["steps"][1]["completed_by"] == SAM

    # inventory-reorder: scripts only.
    out = ok("trigger", "inventory-reorder", "--wait", "--json", env=env)
    assert json.loads(out)["status"] == "completed"

    # weekly-report: a job; its Slack post waits in the outbox while Slack is off.
    fired = json.loads(ok("jobs", "run", "weekly-report", "--json", env=env))
    assert fired["status"] == "fired" and fired["error"] is None
    effects = json.loads(ok("outbox", "--json", env=env))
    assert any(e["kind"] == "slack.post" and e["target"] == "#ops" for e in effects)
