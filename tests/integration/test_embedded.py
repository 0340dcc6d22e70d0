"""The embedded default: no DATABASE_URL, a real Postgres under ``$FLOWBOT_HOME/pg``.

The README's first command: `flowbot run` starts the embedded server and migrates it, `flowbot
trigger inventory-reorder --wait` (another process, attaching to the same server) prints a
completed execution report; the server stops with flowbot; the data survives a restart.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, cli_env, flowbot, free_port, spawn, stop, wait_listening


@pytest.fixture
def home() -> Iterator[Path]:
    # A short path: the server's unix socket lives under it (paths are limited to ~100 bytes).
    path = Path(f"/tmp/fbh-{uuid.uuid4().hex[:8]}")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_run_on_the_embedded_postgres_and_the_data_survives_a_restart(home, tmp_path) -> None:
    env = cli_env(None, ROOT / "stages", FLOWBOT_HOME=str(home))
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=120)
        out = flowbot("trigger", "inventory-reorder", "--wait", "--timeout", "120", "--json", env=env, timeout=180)
        assert out.returncode == 0, out.stderr
        first = json.loads(out.stdout)
        assert first["status"] == "completed"
        assert [s["status"] for s in first["steps"]] == ["completed"] * len(first["steps"])
    finally:
        code = stop(server)
    assert code == 0, log.read_text()
    text = log.read_text()
    assert "database: embedded Postgres" in text
    token = (home / "api_token").read_text().strip()
    assert f"API token (saved in {home / 'api_token'}): {token}" in text
    assert (home / "pg" / "PG_VERSION").is_file(), "the data directory lives under $FLOWBOT_HOME/pg"
    assert not (home / "pg" / "postmaster.pid").exists(), "the embedded server stopped with flowbot"

    # Restarted: the run is still there, and new runs work on the same data.
    again = flowbot("runs", "show", first["id"], "--json", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["status"] == "completed"
    assert json.loads(again.stdout)["context"] == first["context"]
    assert not (home / "pg" / "postmaster.pid").exists()


def test_a_new_embedded_database_is_announced_with_its_place_and_commands_print_no_startup_noise(home) -> None:
    env = cli_env(None, ROOT / "stages", FLOWBOT_HOME=str(home), FLOWBOT_LOG_LEVEL="INFO")
    first = flowbot("runs", env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    assert f"creating a new embedded database in {home / 'pg'}" in first.stderr
    again = flowbot("runs", env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stderr == "", "an existing database is used quietly (no INFO lines on stderr)"
    assert again.stdout.strip() == "(none)"


def test_the_next_start_adopts_an_embedded_postgres_left_by_a_killed_flowbot_and_stops_it(home, tmp_path) -> None:
    import signal
    import time

    env = cli_env(None, ROOT / "stages", FLOWBOT_HOME=str(home))
    port = free_port()
    log = tmp_path / "run.log"
    server = spawn("run", "--port", str(port), env=env, log=log)
    try:
        wait_listening(port, server, log, timeout=120)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    pid_file = home / "pg" / "postmaster.pid"
    postmaster = int(pid_file.read_text().split()[0])
    assert _alive(postmaster), "the server outlives the flowbot that was killed"

    out = flowbot("runs", env=env, timeout=120)
    assert out.returncode == 0, out.stderr

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and pid_file.exists():
        time.sleep(0.1)
    assert not pid_file.exists(), "the command that adopted the server stopped it when it exited"
    assert not _alive(postmaster), "the server process has exited"


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (an exited process that nobody reaped yet, a zombie, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
