"""Helpers shared by the integration and acceptance tests (no fixtures here: see conftest.py).

- ``FakeClock``: the injectable clock of ``Store(..., clock=...)``; leases and backoff move with it.
- ``drain``: run every due script task to the end in-process (claim, run, commit), without a Worker.
- ``events``/``task``: read a task's row and its event log.
- ``flowbot``/``spawn``: the real CLI in a subprocess.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text

from engine.runtime.runner import run_script
from engine.store import queries
from engine.store.tasks import CommitResult, Failed, Finished, Store

ROOT = Path(__file__).resolve().parent.parent


def _console_script() -> list[str]:
    """The installed ``flowbot`` command next to this interpreter (else ``python -m engine.cli``)."""
    script = Path(sys.executable).parent / "flowbot"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "engine.cli"]


FLOWBOT = _console_script()



def write_stages(root: Path, files: dict[str, str]) -> Path:
    """Write a stages directory from ``{"pkg/workflow.py": source, ...}`` (dedented); its path."""
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root

class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = start or dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> dt.datetime:
        """Move forward ``seconds``; returns the new time."""
        self.now += dt.timedelta(seconds=seconds)
        return self.now


async def run_once(store: Store, worker: str = "w1", *, limit: int = 100,
                   max_payload_bytes: int = 256 * 1024) -> CommitResult | None:
    """Claim what is due, run it, commit it (one batch); None when nothing was due."""
    rows = await store.claim(worker, limit)
    if not rows:
        return None
    results = [await run_script(store.stage_of(r), r, max_payload_bytes=max_payload_bytes) for r in rows]
    finished = [r for r in results if isinstance(r, Finished)]
    failed = [r for r in results if isinstance(r, Failed)]
    return await store.commit(worker, finished, failed)


async def drain(store: Store, worker: str = "w1", *, rounds: int = 50, **kw: Any) -> list[CommitResult]:
    """``run_once`` until nothing is due (with a fake clock, backoff stops it)."""
    done = []
    for _ in range(rounds):
        result = await run_once(store, worker, **kw)
        if result is None:
            return done
        done.append(result)
    raise AssertionError(f"still claiming after {rounds} rounds")


async def task_row(store: Store, task_id: int) -> dict[str, Any]:
    """One task's row."""
    row = await store.db.fetch_one(queries.GET_TASK, {"id": task_id})
    assert row is not None, task_id
    return dict(row)


async def events(store: Store, task_id: int) -> list[tuple[str | None, str, str]]:
    """A task's event log as (from, to, actor)."""
    rows = await store.db.fetch_all(queries.TASK_EVENTS, {"id": task_id})
    return [(r["from_status"], r["to_status"], r["actor"]) for r in rows]


async def scalar(store: Store, sql: str, **params: Any) -> Any:
    """One value from an ad-hoc query (test assertions only)."""
    async with store.db.transaction() as tx:
        return await tx.fetch_value(text(sql), params)


async def eventually(check: Callable[[], Awaitable[Any]], *, within: float | None = None,
                     interval: float = 0.05, what: str = "condition",
                     timeout: float | None = None) -> Any:  # noqa: ASYNC109
    """Poll ``check`` until it returns something truthy, for at most ``within`` seconds (10 by
    default; ``timeout`` is the older name of the same bound). Real time."""
    limit = within if within is not None else (timeout if timeout is not None else 10.0)
    deadline = time.monotonic() + limit
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        await asyncio.sleep(interval)


# -- the real CLI ---------------------------------------------------------------------------------


def cli_env(database_url: str | None, stages: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``flowbot`` subprocess: this test's database and stages dir."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "FLOWBOT_STAGES", "FLOWBOT_HOME", "FLOWBOT_API_TOKEN", "PORT")
           and not k.startswith("SLACK_")}
    if database_url:
        env["DATABASE_URL"] = database_url
    if stages is not None:
        env["FLOWBOT_STAGES"] = str(stages)
    env.setdefault("FLOWBOT_LOG_LEVEL", "WARNING")
    env.update(extra)
    return env


def flowbot(*args: str, env: dict[str, str], timeout: float = 60.0,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``flowbot ARGS`` to the end."""
    return subprocess.run(
        [*FLOWBOT, *args], env=env, cwd=cwd or ROOT,
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def spawn(*args: str, env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``flowbot ARGS`` in the background, its output in ``log``."""
    out = log.open("ab")
    try:
        return subprocess.Popen(
            [*FLOWBOT, *args], env=env, cwd=cwd or ROOT,
            stdout=out, stderr=subprocess.STDOUT,
        )
    finally:
        out.close()


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM a background process (SIGKILL if it does not exit in time); its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def free_port() -> int:
    """A TCP port nothing listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    """Wait until a background ``flowbot run`` accepts connections on ``port`` (or fail with its log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"flowbot exited:\n{log.read_text()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"flowbot did not listen on {port} within {timeout:g} s:\n{log.read_text()}")
