"""Migrations: the schema ``alembic upgrade head`` builds equals the models' (autogenerate finds
nothing), and the chain goes down to base and up again.

The model modules are the ones ``migrations/env.py`` imports (read from its source, so a new
model module registered there is compared here too).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from engine.errors import SchemaNotReady
from engine.store import migrate
from engine.store.db import Database
from engine.store.models import Base

ROOT = Path(__file__).resolve().parents[2]


def import_env_models() -> list[str]:
    """Import every module ``migrations/env.py`` imports (the model modules among them)."""
    tree = ast.parse((ROOT / "migrations" / "env.py").read_text())
    names: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{a.name}" if node.module.startswith(("engine", "bot")) else node.module
                      for a in node.names]
    imported = []
    for name in names:
        if not name.startswith(("engine", "bot")):
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:  # `from engine.models import Base`: Base is not a module
            importlib.import_module(name.rsplit(".", 1)[0])
        imported.append(name)
    return imported


async def _inspect(url: str, fn: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _diffs(connection: Any) -> list[Any]:
    ctx = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(ctx, Base.metadata))


def _tables(connection: Any) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_the_migrated_schema_equals_the_models(empty_database_url) -> None:
    modules = import_env_models()
    assert "engine.store.models.Base" in modules or "engine.store.models" in modules
    await migrate.upgrade(empty_database_url)
    diffs = await _inspect(empty_database_url, _diffs)
    assert diffs == [], "models and migrations differ:\n" + "\n".join(map(repr, diffs))
    tables = await _inspect(empty_database_url, _tables)
    assert {"runs", "tasks", "task_events", "join_arrivals", "outbox", "alembic_version"} <= tables
    assert set(Base.metadata.tables) <= tables


async def test_downgrade_to_base_and_upgrade_again(empty_database_url) -> None:
    import_env_models()
    await migrate.upgrade(empty_database_url)
    await migrate.downgrade(empty_database_url, "base")
    assert await _inspect(empty_database_url, _tables) <= {"alembic_version"}

    await migrate.upgrade(empty_database_url)
    assert await _inspect(empty_database_url, _diffs) == []
    db = Database(empty_database_url)
    try:
        await db.check_schema(migrate.heads())
    finally:
        await db.close()


async def test_each_revision_downgrades_and_upgrades_one_step(empty_database_url) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    assert len(script.get_heads()) == 1, "the revision chain has branched"
    assert revisions[0].startswith("0001")
    for revision in revisions:
        await migrate.upgrade(empty_database_url, revision)
    for revision in reversed(revisions[:-1]):
        await migrate.downgrade(empty_database_url, revision)
        await migrate.upgrade(empty_database_url, "+1")
        await migrate.downgrade(empty_database_url, revision)
    await migrate.upgrade(empty_database_url)
    assert await _inspect(empty_database_url, _diffs) == []


async def test_upgrading_an_up_to_date_database_changes_nothing(empty_database_url) -> None:
    await migrate.upgrade(empty_database_url)
    await migrate.upgrade(empty_database_url)
    db = Database(empty_database_url)
    try:
        await db.check_schema(migrate.heads())
    finally:
        await db.close()


async def test_the_engine_refuses_an_unmigrated_or_older_schema(empty_database_url) -> None:
    db = Database(empty_database_url)
    try:
        with pytest.raises(SchemaNotReady, match="no flowbot schema: run `flowbot migrate`"):
            await db.check_schema(migrate.heads())
        await migrate.upgrade(empty_database_url, _first_revision())
        with pytest.raises(SchemaNotReady, match=r"this flowbot needs .*: run `flowbot migrate`"):
            await db.check_schema(migrate.heads())
    finally:
        await db.close()


def _first_revision() -> str:
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return list(script.walk_revisions())[-1].revision


async def test_the_comparison_notices_a_schema_that_drifted(empty_database_url) -> None:
    """Guard against a vacuous comparison: a dropped column and index are found."""
    from sqlalchemy import text

    import_env_models()
    await migrate.upgrade(empty_database_url)
    engine = create_async_engine(empty_database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("ALTER TABLE tasks DROP COLUMN completed_by"))
    finally:
        await engine.dispose()
    diffs = await _inspect(empty_database_url, _diffs)
    assert any(d[0] == "add_column" and d[3].name == "completed_by" for d in diffs if isinstance(d, tuple)), diffs


async def test_0005_moves_created_events_onto_their_tasks_and_back(empty_database_url) -> None:
    from sqlalchemy import text

    async def run(sql: str) -> list[Any]:
        engine = create_async_engine(empty_database_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql))
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()

    await migrate.upgrade(empty_database_url, "0004")
    await run("INSERT INTO runs (id, workflow) VALUES ('00000000-0000-4000-8000-000000000001', 'w')")
    await run("INSERT INTO tasks (id, run_id, workflow, stage, type, payload) "
              "VALUES (7, '00000000-0000-4000-8000-000000000001', 'w', 's', 't', '{}')")
    await run("INSERT INTO task_events (task_id, from_status, to_status, actor, reason) VALUES "
              "(7, NULL, 'pending', 'hook:w/in', 'created'), (7, 'pending', 'locked', 'worker-1', 'claimed')")

    await migrate.upgrade(empty_database_url, "0005")
    assert await run("SELECT created_by FROM tasks WHERE id = 7") == [("hook:w/in",)]
    assert await run("SELECT reason FROM task_events WHERE task_id = 7") == [("claimed",)]

    await migrate.downgrade(empty_database_url, "0004")
    assert sorted(await run("SELECT reason, actor FROM task_events WHERE task_id = 7")) == [
        ("claimed", "worker-1"), ("created", "hook:w/in")]
