"""The ``flowbot`` command in subprocesses, on the test database (DATABASE_URL set).

`flowbot run` serving and working while `flowbot trigger --wait` prints a completed execution
report of the shipped inventory-reorder workflow; `runs`, `runs show`, `tasks`, `workflows`;
invalid workflows make `flowbot workflows` exit non-zero with file:line errors; an un-migrated
database makes `flowbot run` refuse and say to run `flowbot migrate`. (The embedded default, no
DATABASE_URL, is in test_embedded.py.)
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from support import ROOT, cli_env, flowbot, free_port, spawn, stop, wait_listening, write_stages

STAGES = ROOT / "stages"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, STAGES, FLOWBOT_HOME=str(tmp_path / "home"))


def test_trigger_wait_against_a_running_flowbot_prints_a_completed_report(env, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=120)
        out = flowbot("trigger", "inventory-reorder", "--wait", "--timeout", "120", env=env, timeout=180)
        assert out.returncode == 0, out.stderr + out.stdout
        report = out.stdout
        run_id = report.split()[1]
        uuid.UUID(run_id)
        assert "workflow  inventory-reorder" in report
        assert "status    completed" in report
        assert "check-stock" in report and "create-purchase-order" in report
        assert "completed" in report.split("steps:")[1]
        assert "unrouted  0" in report

        as_json = flowbot("runs", "show", run_id, "--json", env=env)
        assert as_json.returncode == 0, as_json.stderr
        data = json.loads(as_json.stdout)
        assert data["id"] == run_id and data["status"] == "completed"
        assert data["trigger"] == {"kind": "cli", "stage": "check-stock"}
        assert data["steps"][0]["stage"] == "check-stock"
        orders = [s for s in data["steps"] if s["stage"] == "create-purchase-order"]
        assert orders and all(s["status"] == "completed" for s in orders)
        assert len(orders) == len(data["context"]["low_items"])
        for sku in data["context"]["low_items"]:
            assert data["context"][f"purchase_order:{sku}"]["po"].startswith("PO-")

        shown = flowbot("runs", "show", run_id, env=env)
        assert shown.returncode == 0 and shown.stdout.strip() == report.strip()

        runs = flowbot("runs", env=env)
        assert runs.returncode == 0, runs.stderr
        assert run_id in runs.stdout and "completed" in runs.stdout
        assert flowbot("runs", "--status", "failed", env=env).stdout.strip() == "(none)"

        tasks = flowbot("tasks", "--stage", "check-stock", env=env)
        assert tasks.returncode == 0, tasks.stderr
        assert tasks.stdout.splitlines()[0].split() == ["id", "workflow", "stage", "type", "status", "attempts",
                                                       "assignee", "run_id"]
        [row] = tasks.stdout.splitlines()[1:]
        assert "check-stock" in row and "completed" in row and run_id in row
        listed = json.loads(flowbot("tasks", "--run", run_id, "--json", env=env).stdout)
        assert {t["stage"] for t in listed} == {"check-stock", "create-purchase-order"}

        # A payload of its own: nothing low, the other branch.
        stock = {"stock": {"X": {"name": "x", "on_hand": 5, "minimum": 1, "reorder_to": 9}}}
        ok = flowbot("trigger", "inventory-reorder", "--payload", json.dumps(stock), "--wait", "--json", env=env)
        assert ok.returncode == 0, ok.stderr
        data = json.loads(ok.stdout)
        assert [s["stage"] for s in data["steps"]] == ["check-stock", "stock-ok"]
        assert data["context"]["result"] == "all 1 items above their minimum"
    finally:
        code = stop(server)
    assert code == 0, log.read_text()


def test_trigger_without_wait_prints_the_run_id(env) -> None:
    out = flowbot("trigger", "inventory-reorder", "--json", env=env)
    assert out.returncode == 0, out.stderr
    run_id = json.loads(out.stdout)["run_id"]
    shown = json.loads(flowbot("runs", "show", run_id, "--json", env=env).stdout)
    assert shown["status"] == "running" and shown["steps"][0]["status"] == "pending"


def test_trigger_refuses_bad_input_and_starts_nothing(env) -> None:
    for args, message in [
        (["trigger", "no-such-workflow"], 'no workflow named "no-such-workflow"'),
        (["trigger", "inventory-reorder", "--payload", "{oops"], "--payload is not valid JSON"),
        (["trigger", "inventory-reorder", "--payload", "[1, 2]"], "payload must be a JSON object"),
        (["trigger", "inventory-reorder", "--stage", "nope"], 'has no stage "nope"'),
    ]:
        out = flowbot(*args, env=env)
        assert out.returncode == 1, args
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    assert flowbot("runs", env=env).stdout.strip() == "(none)"


def test_runs_show_of_an_unknown_run_and_tasks_of_a_malformed_run_id(env) -> None:
    out = flowbot("runs", "show", str(uuid.uuid4()), env=env)
    assert out.returncode == 1 and "no run" in out.stderr
    out = flowbot("tasks", "--run", "not-a-uuid", env=env)
    assert out.returncode == 1
    assert "flowbot: --run: no run not-a-uuid (give a run id or the start of one)" in out.stderr


def test_workflows_lists_the_shipped_workflows(env) -> None:
    out = flowbot("workflows", env=env)
    assert out.returncode == 0, out.stderr
    assert "inventory-reorder" in out.stdout
    assert "check-stock -> create-purchase-order [on low_stock], stock-ok [on stock_ok]" in out.stdout
    graphs = json.loads(flowbot("workflows", "--json", env=env).stdout)
    inventory = next(g for g in graphs if g["name"] == "inventory-reorder")
    assert {"source": "check-stock", "target": "create-purchase-order", "on": ["low_stock"]} in inventory["edges"]


def test_workflows_exits_non_zero_with_every_error_and_its_line(tmp_path) -> None:
    stages = write_stages(tmp_path / "bad", {
        "broken/workflow.py": """
            from engine import Workflow
            workflow = Workflow("broken")
            a = workflow.script("a")
            a2 = workflow.script("a")
            workflow.transition(a, "nowhere")
            j = workflow.job("nightly", schedule="99 * * * *")
            workflow.transition(a, j)
            f = workflow.form("review")
            workflow.transition(a, f)
        """,
        "broken/a.py": "def not_run(task, ctx):\n    pass\n",
        "broken/nightly.py": "def run(ctx):\n    pass\n",
    })
    out = flowbot("workflows", env=cli_env(None, stages))
    assert out.returncode == 1
    file = str((stages / "broken" / "workflow.py").resolve())
    expected = [
        (4, 'duplicate stage name "a"'),
        (5, 'transition target "nowhere" is not a stage'),
        (7, 'job "nightly" cannot have an incoming transition'),
        (3, 'stage "a": a.py must define run(task, ctx)'),
        (6, 'job "nightly": invalid schedule "99 * * * *"'),
        (8, 'form "review" has incoming transitions but no assignee= rule'),
        (8, "review.py not found"),
    ]
    for line, message in expected:
        assert any(f"{file}:{line}: " in err and message in err for err in out.stderr.splitlines()), (
            line, message, out.stderr)
    assert out.stdout == ""


def test_run_refuses_an_unmigrated_database_and_says_to_migrate(empty_database_url, tmp_path) -> None:
    env = cli_env(empty_database_url, STAGES, FLOWBOT_HOME=str(tmp_path / "home"))
    out = flowbot("run", "--port", str(free_port()), env=env, timeout=90)
    assert out.returncode == 1
    assert "run `flowbot migrate`" in out.stderr
    assert "Traceback" not in out.stderr
    for command in (["worker"], ["trigger", "inventory-reorder"]):
        refused = flowbot(*command, env=env, timeout=90)
        assert refused.returncode == 1 and "run `flowbot migrate`" in refused.stderr, command

    migrated = flowbot("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    assert "database migrated to" in migrated.stdout
    assert flowbot("trigger", "inventory-reorder", env=env).returncode == 0
