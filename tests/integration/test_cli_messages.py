"""What the `flowbot` command says when a newcomer gets something wrong, in subprocesses.

Expected failures are one or two lines without a traceback (unless FLOWBOT_LOG_LEVEL=DEBUG):
a database that cannot be used says which one (password masked) and what to check; a start form
cannot be triggered and the refusal says how that workflow starts; a stages directory that does
not exist, an unknown workflow (naming the directory searched), an unknown status. And what it
shows: run id prefixes, a waiting form's assignee and payload, aligned columns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import ROOT, cli_env, flowbot, free_port, write_stages

STAGES = ROOT / "stages"


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, STAGES, FLOWBOT_HOME=str(tmp_path / "home"))


def _one_line(out: object) -> str:
    stderr = out.stderr  # type: ignore[attr-defined]
    assert out.returncode == 1, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("command", [["migrate"], ["runs"], ["run", "--port", "0"], ["trigger", "inventory-reorder"]])
def test_a_refused_database_port_is_one_line_naming_the_database_with_its_password_masked(command, tmp_path) -> None:
    if command[0] == "run":
        command = ["run", "--port", str(free_port())]
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/flowbot"
    line = _one_line(flowbot(*command, env=cli_env(url, STAGES, FLOWBOT_HOME=str(tmp_path)), timeout=90))
    assert line.startswith(f"flowbot: cannot reach the database at postgresql://app:***@127.0.0.1:{url.split(':')[-1]}")
    assert "connection refused; check that Postgres is running there" in line
    assert "s3cret" not in line


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "flowbot: DATABASE_URL is not a valid database URL"),
    ("postgresql://app:s3cret@localhost:port/db", "flowbot: DATABASE_URL is not a valid database URL"),
    ("mysql://app:s3cret@localhost/db", "flowbot: DATABASE_URL mysql://app:***@localhost/db is not a Postgres URL"),
])
def test_a_malformed_database_url_is_one_line(url, message, tmp_path) -> None:
    for command in (["migrate"], ["runs"]):
        line = _one_line(flowbot(*command, env=cli_env(url, STAGES, FLOWBOT_HOME=str(tmp_path))))
        assert line.startswith(message) and "s3cret" not in line, line


def test_a_wrong_password_or_database_name_says_what_to_check(database_url, tmp_path) -> None:
    from sqlalchemy.engine import make_url

    u = make_url(database_url)
    missing = u.set(database="no_such_db").render_as_string(hide_password=False)
    line = _one_line(flowbot("runs", env=cli_env(missing, STAGES, FLOWBOT_HOME=str(tmp_path))))
    assert 'answered but database "no_such_db" does not exist' in line


def test_the_traceback_is_printed_only_at_debug_level(tmp_path) -> None:
    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/flowbot"
    out = flowbot("runs", env=cli_env(url, STAGES, FLOWBOT_HOME=str(tmp_path), FLOWBOT_LOG_LEVEL="DEBUG"))
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ConnectionRefusedError" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("flowbot: cannot reach the database")


@pytest.mark.parametrize(("workflow", "form", "how"), [
    ("expense", "submit", "Start expense with POST /hooks/expense or /flowbot start expense in Slack."),
    ("access-request", "request", "Start access-request with /flowbot start access-request in Slack."),
])
def test_trigger_refuses_a_start_form_and_says_how_the_workflow_starts(env, workflow, form, how) -> None:
    out = flowbot("trigger", workflow, env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[0].startswith(f'flowbot: "{form}" is the start form of workflow "{workflow}"')
    assert lines[1] == how
    assert lines[2].startswith("Stages a manual run can start at (--stage): ")
    assert flowbot("runs", env=env).stdout.strip() == "(none)", "nothing was started"


def test_an_unknown_status_is_refused_listing_the_valid_ones(env) -> None:
    line = _one_line(flowbot("runs", "--status", "bogus", env=env))
    assert line == "flowbot: unknown run status 'bogus': use one of running, waiting, completed, failed, cancelled"
    line = _one_line(flowbot("tasks", "--status", "done", env=env))
    assert line == ("flowbot: unknown task status 'done': use one of pending, locked, completed, failed, cancelled, "
                    "scheduled")


def test_a_stages_directory_that_does_not_exist_is_an_error_naming_it(database_url, tmp_path) -> None:
    env = cli_env(database_url, None, FLOWBOT_HOME=str(tmp_path / "home"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in (["workflows"], ["trigger", "inventory-reorder"], ["run", "--port", str(free_port())]):
        line = _one_line(flowbot(*command, env=env, cwd=elsewhere, timeout=90))
        assert line == (f"flowbot: the stages directory {elsewhere / 'stages'} does not exist (set FLOWBOT_STAGES "
                        "or --stages to where your workflows are)"), command


def test_an_unknown_workflow_names_the_directory_searched(env) -> None:
    line = _one_line(flowbot("trigger", "inventory", env=env))
    assert line == (f'flowbot: no workflow named "inventory" in {STAGES} (set FLOWBOT_STAGES or --stages to where '
                    "your workflows are)")


def test_stages_is_accepted_after_the_subcommand_too(database_url, tmp_path) -> None:
    stages = write_stages(tmp_path / "mine", {
        "solo/workflow.py": 'from engine import Workflow\nworkflow = Workflow("solo")\nworkflow.script("only")\n',
        "solo/only.py": "def run(task, ctx):\n    pass\n",
    })
    env = cli_env(database_url, None, FLOWBOT_HOME=str(tmp_path / "home"))
    after = flowbot("workflows", "--stages", str(stages), env=env)
    before = flowbot("--stages", str(stages), "workflows", env=env)
    assert after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
    assert after.stdout.splitlines()[0] == "solo  Solo  (1 stage)"
    triggered = flowbot("trigger", "solo", "--stages", str(stages), env=env)
    assert triggered.returncode == 0, triggered.stderr


def test_a_unique_run_id_prefix_is_accepted_by_runs_show_and_tasks(env) -> None:
    run_id = flowbot("trigger", "inventory-reorder", env=env).stdout.strip()
    shown = flowbot("runs", "show", run_id[:8], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == run_id
    listed = json.loads(flowbot("tasks", "--run", run_id[:8], "--json", env=env).stdout)
    assert [t["run_id"] for t in listed] == [run_id]


def test_a_waiting_form_shows_its_assignee_and_payload_and_columns_stay_aligned(env) -> None:
    payload = {"employee": "Ann", "amount": 42.5, "currency": "EUR", "description": "Taxi",
               "manager_email": "bob@example.com"}
    out = flowbot("trigger", "expense", "--stage", "review", "--payload", json.dumps(payload), "--wait", env=env)
    assert out.returncode == 0, out.stderr
    assert "status    waiting" in out.stdout
    assert "        waiting on: bob@example.com" in out.stdout
    [line] = [line for line in out.stdout.splitlines() if line.startswith("        payload: ")]
    assert json.loads(line.removeprefix("        payload: ")) == payload

    tasks = flowbot("tasks", env=env).stdout.splitlines()
    header, rows = tasks[0], tasks[1:]
    assert header.split() == ["id", "workflow", "stage", "type", "status", "attempts", "assignee", "run_id"]
    [review] = [r for r in rows if " review " in r]
    assert review[header.index("assignee"):].startswith("bob@example.com")
    assert review[header.index("status"):].startswith("pending")
