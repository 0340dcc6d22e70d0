"""FLOWBOT_LOG_FORMAT=json: a real `flowbot worker` writes one JSON object a line, and every line
about a task (the stage's own logging, a failure) names its run, task, stage and workflow."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from support import FLOWBOT, ROOT, cli_env, flowbot, stop, write_stages

STAGES = {
    "logged/workflow.py": """
        from engine import Workflow
        workflow = Workflow("logged")
        talk = workflow.script("talk")
        sulk = workflow.script("sulk", max_attempts=1)
        workflow.transition(talk, sulk)
    """,
    "logged/talk.py": """
        import logging

        def run(task, ctx):
            logging.getLogger("stages.talk").warning("talking about %s", task["topic"])
            ctx.send("next", {})
    """,
    "logged/sulk.py": """
        import logging

        async def run(task, ctx):
            logging.getLogger("stages.sulk").info("about to sulk")
            raise RuntimeError("not today")
    """,
}


def test_json_log_lines_carry_the_task_fields(raw_url: str, tmp_path: Path) -> None:
    stages = write_stages(tmp_path / "stages", STAGES)
    env = cli_env(raw_url, stages, FLOWBOT_LOG_FORMAT="json", FLOWBOT_LOG_LEVEL="INFO",
                  FLOWBOT_HOME=str(tmp_path / "home"))
    # stderr alone: the log, where even what flowbot says to the person is a JSON object (stdout
    # is the command's output)
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        worker = subprocess.Popen([*FLOWBOT, "worker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    try:
        started = flowbot("trigger", "logged", "--payload", '{"topic": "metrics"}', "--wait", "--json", env=env)
        assert started.returncode == 1, started.stderr  # the run fails: sulk raises
        run_id = json.loads(started.stdout)["id"]
        deadline = time.monotonic() + 10
        while "its run have failed" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(worker)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r.get("action") == "worker_start" for r in records)

    talk = next(r for r in records if r["message"] == "talking about metrics")
    assert (talk["run_id"], talk["workflow"], talk["stage"], talk["level"]) == (run_id, "logged", "talk", "WARNING")
    assert isinstance(talk["task_id"], int)
    sulk = next(r for r in records if r["message"] == "about to sulk")
    assert (sulk["run_id"], sulk["stage"]) == (run_id, "sulk") and sulk["task_id"] != talk["task_id"]
    failed = next(r for r in records if r.get("action") == "stage_gave_up")
    assert (failed["run_id"], failed["task_id"], failed["workflow"], failed["stage"]) == (
        run_id, sulk["task_id"], "logged", "sulk")
    assert "RuntimeError: not today" in failed["message"]


def test_an_unknown_log_format_is_a_clear_error(raw_url: str, tmp_path: Path) -> None:
    result = flowbot("workflows", env=cli_env(raw_url, tmp_path, FLOWBOT_LOG_FORMAT="yaml"))
    assert result.returncode == 1
    assert "FLOWBOT_LOG_FORMAT must be text or json" in result.stderr and "Traceback" not in result.stderr
