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
