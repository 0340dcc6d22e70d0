"""`flowbot run` as a person at a terminal meets it, in subprocesses on the test database.

It says "listening" only once it listens (and a port in use in one line); it binds 127.0.0.1
unless told otherwise; a stage that fails shows in its output; stopping says what it waits for,
a second Ctrl-C stops at once, and a stage past the grace period does not hold the exit;
`trigger --wait` names the run before it waits; `--reload` restarts on a changed stage.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import cli_env, flowbot, free_port, spawn, stop, wait_listening, write_stages

STAGES = {
    "demo/workflow.py": """
        from engine import Workflow
        workflow = Workflow("demo")
        hello = workflow.script("hello")
        crash = workflow.script("crash", max_attempts=2)
        slow = workflow.script("slow")
    """,
    "demo/hello.py": """
        def run(task, ctx):
            ctx.run["said"] = "hello"
    """,
    "demo/crash.py": """
        def run(task, ctx):
            raise ValueError("the crash stage always fails")
    """,
    "demo/slow.py": """
        import pathlib, time

        def run(task, ctx):
            pathlib.Path(task["started"]).write_text("started")
            time.sleep(60)
            pathlib.Path(task["finished"]).write_text("finished")
    """,
}


@pytest.fixture
def stages(tmp_path: Path) -> Path:
    return write_stages(tmp_path / "stages", STAGES)


@pytest.fixture
def env(database_url: str, stages: Path, tmp_path: Path) -> dict[str, str]:
    return cli_env(database_url, stages, FLOWBOT_HOME=str(tmp_path / "home"), FLOWBOT_SHUTDOWN_GRACE="1")


def _wait_for(log: Path, text: str, proc: subprocess.Popen[bytes], within: float = 30) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        content = log.read_text()
        if text in content:
            return content
        assert proc.poll() is None or text in log.read_text(), f"flowbot exited:\n{log.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not in the output within {within:g} s:\n{log.read_text()}")


def test_listening_is_said_after_the_bind_on_loopback_and_a_port_in_use_is_one_line(env, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=60)
        assert f"flowbot: listening on http://127.0.0.1:{port}" in _wait_for(log, "listening", server)
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) == 0
        taken = flowbot("run", "--port", str(port), env=env, timeout=60)
        assert taken.returncode == 1
        assert f"flowbot: cannot listen on 127.0.0.1:{port}: the port is already in use" in taken.stderr
        assert "flowbot: listening on" not in taken.stdout
        assert "Traceback" not in taken.stderr and len(taken.stderr.strip().splitlines()) == 1, taken.stderr
    finally:
        assert stop(server) == 0, log.read_text()


def test_a_port_out_of_range_and_an_address_not_on_this_machine_are_refused(env) -> None:
    out = flowbot("run", "--port", "99999", env=env)
    assert out.returncode == 2 and "--port must be a port number between 1 and 65535, got 99999" in out.stderr
    out = flowbot("runs", env={**env, "PORT": "70000"})
    assert out.returncode == 1 and "PORT must be a port number between 1 and 65535, got 70000" in out.stderr
    out = flowbot("run", "--port", str(free_port()), env={**env, "FLOWBOT_HOST": "192.0.2.1"}, timeout=60)
    assert out.returncode == 1
    assert "cannot listen on 192.0.2.1:" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_host_flag_binds_the_address_given(env, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--host", "0.0.0.0", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=60)
        assert f"listening on http://0.0.0.0:{port}" in _wait_for(log, "listening", server)
    finally:
        assert stop(server) == 0, log.read_text()


def test_failed_attempts_show_in_the_output_with_the_traceback_and_the_final_failure(env, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=60)
        out = flowbot("trigger", "demo", "--stage", "crash", "--wait", "--timeout", "30", env=env, timeout=60)
        assert out.returncode == 1, out.stderr
        run_id = out.stdout.split()[1]
        text = _wait_for(log, "ERROR", server)
    finally:
        assert stop(server) == 0, log.read_text()
    assert "WARNING engine.runtime.worker: stage demo/crash failed (attempt 1 of 2; task" in text
    assert f"run {run_id}), retrying in 2 s" in text
    assert "ERROR engine.runtime.worker: stage demo/crash failed after 2 attempt(s)" in text
    assert text.count('ValueError: the crash stage always fails') >= 2
    assert "Traceback (most recent call last)" in text


def test_trigger_wait_names_the_run_before_waiting(env) -> None:
    out = flowbot("trigger", "demo", "--stage", "hello", "--wait", "--timeout", "1", "--json", env=env)
    assert out.returncode == 2, "no worker: still running when the wait ends"
    run_id = json.loads(out.stdout)["id"]
    assert out.stderr.splitlines()[0] == (f"flowbot: started run {run_id}; waiting up to 1 s for it to finish "
                                         "or wait on a person")


def test_stopping_says_what_it_waits_for_and_a_stage_past_the_grace_period_does_not_hold_the_exit(
        env, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    started, finished = tmp_path / "started", tmp_path / "finished"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=60)
        payload = json.dumps({"started": str(started), "finished": str(finished)})
        run_id = flowbot("trigger", "demo", "--stage", "slow", "--payload", payload, env=env).stdout.strip()
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), log.read_text()
        began = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(20)
        took = time.monotonic() - began
    finally:
        stop(server)
    text = log.read_text()
    assert server.returncode == 0, text
    assert took < 10, f"the process waited {took:.1f} s for the stage's thread"
    assert "flowbot: stopping: finishing running stages (up to 1 s)" in text
    assert "stopping: waiting up to 1 s for 1 running stage(s): demo/slow (task" in text
    assert "1 stage(s) still running after 1 s: demo/slow" in text
    time.sleep(0.5)
    assert not finished.exists(), "the abandoned stage died with its process"
    shown = json.loads(flowbot("runs", "show", run_id[:8], "--json", env=env).stdout)
    assert shown["steps"][0]["status"] == "pending"


def test_a_second_ctrl_c_stops_at_once(env, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    started, finished = tmp_path / "started", tmp_path / "finished"
    server = spawn("run", "--port", str(port), env={**env, "FLOWBOT_SHUTDOWN_GRACE": "60"}, log=log)
    try:
        wait_listening(port, server, log, timeout=60)
        payload = json.dumps({"started": str(started), "finished": str(finished)})
        flowbot("trigger", "demo", "--stage", "slow", "--payload", payload, env=env)
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        server.send_signal(signal.SIGINT)
        _wait_for(log, "Ctrl-C again to stop at once", server)
        began = time.monotonic()
        server.send_signal(signal.SIGINT)
        server.wait(10)
        assert time.monotonic() - began < 5
    finally:
        stop(server)
    assert server.returncode == 130
    assert "flowbot: stopping now" in log.read_text()


def test_reload_restarts_the_server_when_a_stage_changes(env, stages, tmp_path) -> None:
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--reload", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=60)
        _wait_for(log, "reloading on changes under", server)
        out = flowbot("trigger", "demo", "--stage", "hello", "--wait", "--json", env=env)
        assert json.loads(out.stdout)["context"] == {"said": "hello"}, out.stderr

        (stages / "demo" / "hello.py").write_text('def run(task, ctx):\n    ctx.run["said"] = "hello again"\n')
        _wait_for(log, "hello.py changed: restarting", server)
        deadline = time.monotonic() + 60
        while log.read_text().count("listening on") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        out = flowbot("trigger", "demo", "--stage", "hello", "--wait", "--json", env=env)
        assert json.loads(out.stdout)["context"] == {"said": "hello again"}, log.read_text()
    finally:
        code = stop(server, timeout=30)
    assert code == 0, log.read_text()
