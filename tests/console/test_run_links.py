"""A run page links a run to the runs it started (``ctx.start``) and back, and says which version
of the workflow's code it ran on."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from browsing import Console, console_settings, start_console
from sqlalchemy import text
from support import drain
from test_pages import sign_in

FILES = {
    "batch/workflow.py": """
        from engine import Workflow
        workflow = Workflow("batch", title="Batch")
        split = workflow.script("split")
    """,
    "batch/split.py": """
        def run(task, ctx):
            for n in task.payload["items"]:
                ctx.start("item", {"n": n})
    """,
    "item/workflow.py": """
        from engine import Workflow
        workflow = Workflow("item", title="Item")
        work = workflow.script("work")
    """,
    "item/work.py": "def run(task, ctx):\n    ctx.run['n'] = task.payload['n']\n",
}


@pytest.fixture
async def linked(database_url: str, tmp_path: Path) -> AsyncIterator[Console]:
    async for console in start_console(console_settings(database_url, tmp_path, FILES)):
        yield console


async def test_a_run_page_links_to_the_runs_it_started_and_each_child_back_to_it(linked, http) -> None:
    app = linked.app
    parent = await linked.trigger("batch", {"items": [1, 2, 3]})
    await drain(app.store)
    rows = await app.db.fetch_all(text("SELECT id FROM runs WHERE parent_run_id = :p ORDER BY created_at, id"),
                                  {"p": uuid.UUID(parent)})
    children = [str(r["id"]) for r in rows]
    assert len(children) == 3
    await sign_in(http, linked, "root@example.com", role="admin")

    async with http.get(f"{linked.base}/console/runs/{parent}") as resp:
        page = await resp.text()
    assert "Runs it started (3 completed)" in page
    for child in children:
        assert f'href="/console/runs/{child}"' in page
    async with http.get(f"{linked.base}/console/runs/{children[0]}") as resp:
        page = await resp.text()
    assert f'Started by run <a href="/console/runs/{parent}">{parent[:8]}</a> (stage batch/split)' in page


async def test_a_run_page_shows_the_workflow_version_it_ran_on_and_the_one_deployed_now(linked, http) -> None:
    app = linked.app
    version = app.registry.get("batch").version
    assert version
    run_id = await linked.trigger("batch", {"items": []})
    await sign_in(http, linked, "root@example.com", role="admin")
    async with http.get(f"{linked.base}/console/runs/{run_id}") as resp:
        page = await resp.text()
    assert f"Workflow version <code>{version}</code>" in page
    assert "deployed now" not in page
    # A run started by an earlier deployment of the code says so.
    async with app.db.transaction() as tx:
        await tx.execute(text("UPDATE runs SET workflow_version = 'v0ld' WHERE id = :r"), {"r": uuid.UUID(run_id)})
    async with http.get(f"{linked.base}/console/runs/{run_id}") as resp:
        page = await resp.text()
    assert "Workflow version <code>v0ld</code>" in page and "the code changed while it ran" in page
    assert f"deployed now: <code>{version}</code>" in page
