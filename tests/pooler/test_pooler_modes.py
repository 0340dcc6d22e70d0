"""What running behind PgBouncer in transaction mode takes: TLS through the URL, migrations, and
poll-only mode when no direct connection is given for LISTEN."""
# ruff: noqa: F401, F811 (the imported ``pooled`` fixture is taken as an argument)

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from support import eventually, write_stages
from through_pgbouncer import Pooled, pooled

from engine.runtime.lifecycle import open_app
from engine.runtime.worker import Worker, WorkerOptions
from engine.settings import Settings
from engine.store import migrate, queries
from engine.store.db import Database
from tests.pgbouncer import PgBouncer

STAGES = {
    "pair/workflow.py": """
        from engine import Workflow
        workflow = Workflow("pair")
        first = workflow.script("first")
        second = workflow.script("second")
        workflow.transition(first, second)
    """,
    "pair/first.py": "def run(task, ctx):\n    ctx.send('next', {})\n",
    "pair/second.py": "def run(task, ctx):\n    pass\n",
}


async def _tls(database: Database) -> bool:
    async with database.transaction() as tx:
        await tx.fetch_value(queries.PING)
        return tx.driver._transport.get_extra_info("ssl_object") is not None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("sslmode", "encrypted"), [("require", True), ("disable", False)])
async def test_sslmode_in_the_url_decides_tls(pooled: Pooled, pgbouncer: PgBouncer, sslmode: str,
                                              encrypted: bool) -> None:
    database = Database(pgbouncer.url(pooled.name, sslmode=sslmode))
    try:
        assert await _tls(database) is encrypted
        assert f"db={pooled.name} user=postgres tls={'TLS' if encrypted else 'no'}" in pgbouncer.log()
    finally:
        await database.close()


async def test_migrations_run_through_the_pooler(pg_server: str, pgbouncer: PgBouncer) -> None:
    admin = await asyncpg.connect(_admin(pg_server))
    try:
        await admin.execute("CREATE DATABASE pooled_migrate")
        await migrate.upgrade(pgbouncer.url("pooled_migrate"))
        database = Database(pgbouncer.url("pooled_migrate"))
        try:
            await database.check_schema(migrate.heads())  # raises unless at head
        finally:
            await database.close()
    finally:
        await admin.execute("DROP DATABASE IF EXISTS pooled_migrate WITH (FORCE)")
        await admin.close()


def _admin(pg_server: str) -> str:
    from sqlalchemy.engine import make_url

    from engine.store.embedded import sqlalchemy_url

    u = make_url(sqlalchemy_url(pg_server)).set(database="postgres")
    return u.render_as_string(hide_password=False).replace("postgresql+asyncpg://", "postgresql://")


async def test_without_a_listen_url_a_pooled_flowbot_says_it_polls_and_still_runs_everything(
        pooled: Pooled, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(database_url=pooled.pooled, home=tmp_path / "home", poll_interval=0.2,
                        stages_dir=write_stages(tmp_path / "stages", STAGES))
    with caplog.at_level(logging.WARNING, logger="engine.runtime.app"):
        async with open_app(settings, load_plugins_=False) as app:
            assert app.db.poll_only
            assert any("poll-only mode" in r.getMessage() for r in caplog.records)
            run_id, _ = await app.store.start_run(app.registry.get("pair").stage("first"), {})
            stop = asyncio.Event()
            worker = asyncio.create_task(Worker(app.store, WorkerOptions(poll_interval=0.2)).run(stop))
            try:
                await eventually(lambda: _status(app, run_id, "completed"), what="the run completed by polling")
            finally:
                stop.set()
                await worker


async def test_with_a_listen_url_a_pooled_flowbot_is_woken_by_notify(pooled: Pooled, tmp_path: Path) -> None:
    settings = Settings(database_url=pooled.pooled, listen_url=pooled.direct, home=tmp_path / "home",
                        stages_dir=write_stages(tmp_path / "stages", STAGES))
    async with open_app(settings, load_plugins_=False) as app:
        assert not app.db.poll_only
        stop = asyncio.Event()
        worker = asyncio.create_task(Worker(app.store, WorkerOptions(poll_interval=600)).run(stop))
        try:
            await asyncio.sleep(0.2)  # idle, waiting for a NOTIFY
            run_id, _ = await app.store.start_run(app.registry.get("pair").stage("first"), {})
            await eventually(lambda: _status(app, run_id, "completed"), within=5, what="the run woken by NOTIFY")
        finally:
            stop.set()
            await worker


async def _status(app: Any, run_id: str, status: str) -> bool:
    report = await app.store.report(run_id)
    return bool(report and report["status"] == status)
