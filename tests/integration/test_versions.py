"""Which code ran: each run records the version of its workflow when it started, each task the
version that ran it, and a run whose steps ran on different versions is flagged (report, CLI, API).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
from support import cli_env, drain, flowbot, run_once, write_stages

from engine.loader import load_workflows, package_version
from engine.runtime import report
from engine.runtime.lifecycle import open_app
from engine.settings import Settings
from engine.store.db import Database
from engine.store.tasks import Store
from engine.web.server import serve

STAGES = {
    "two_step/workflow.py": """
        from engine import Workflow
        workflow = Workflow("two_step")
        first = workflow.script("first")
        second = workflow.script("second")
        workflow.transition(first, second)
    """,
    "two_step/first.py": "def run(task, ctx):\n    ctx.send('next', {})\n",
    "two_step/second.py": "def run(task, ctx):\n    ctx.run['by'] = 'v1'\n",
}


def test_the_version_is_a_hash_of_the_package_files_that_changes_with_any_of_them(tmp_path: Path) -> None:
    root = write_stages(tmp_path / "stages", STAGES)
    pkg = root / "two_step"
    before = package_version(pkg)
    assert before == package_version(pkg) and len(before) == 12
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "first.cpython-311.pyc").write_bytes(b"compiled")
    assert package_version(pkg) == before, "bytecode caches are not part of the version"
    (pkg / "second.py").write_text("def run(task, ctx):\n    ctx.run['by'] = 'v2'\n")
    assert package_version(pkg) != before


async def test_a_run_whose_steps_ran_on_different_versions_is_flagged(db: Database, tmp_path: Path,
                                                                      raw_url: str) -> None:
    root = write_stages(tmp_path / "stages", STAGES)
    old = Store(db, load_workflows(root))
    v1 = old.registry.get("two_step").version
    run_id, _ = await old.start_run(old.registry.get("two_step").stage("first"), {})
    assert await run_once(old, "w-old") is not None  # the first stage runs on the old code

    # The second stage is edited and deployed while the run waits for it.
    (root / "two_step" / "second.py").write_text("def run(task, ctx):\n    ctx.run['by'] = 'v2'\n")
    new = Store(db, load_workflows(root))
    v2 = new.registry.get("two_step").version
    assert v2 != v1
    await drain(new)

    data = await new.report(run_id)
    assert data is not None
    assert data["status"] == "completed" and data["context"] == {"by": "v2"}
    assert data["workflow_version"] == v1
    assert [s["workflow_version"] for s in data["steps"]] == [v1, v2]
    assert data["mixed_versions"] is True and data["versions"] == [v1, v2]
    text = report.render(data)
    assert f"version   {v1}" in text
    assert f"steps ran on 2 versions of the workflow: {v1}, {v2}" in text

    # The API and the CLI show the same report from the database.
    settings = Settings(database_url=db.url, home=tmp_path / "home",
                        stages_dir=root, api_token="versions-token")
    async with open_app(settings, load_plugins_=False, pool_size=2) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        web = asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result))
        port = await asyncio.wait_for(bound, 10)
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    f"http://127.0.0.1:{port}/api/runs/{run_id}",
                    headers={"Authorization": "Bearer versions-token"}) as resp:
                body = await resp.json()
        finally:
            stop.set()
            await web
    assert resp.status == 200
    assert (body["workflow_version"], body["versions"], body["mixed_versions"]) == (v1, [v1, v2], True)
    assert [s["workflow_version"] for s in body["steps"]] == [v1, v2]
    env = cli_env(raw_url, root)
    shown = flowbot("runs", "show", run_id, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["mixed_versions"] is True
    shown = flowbot("runs", "show", run_id, env=env)
    assert "steps ran on 2 versions" in shown.stdout


async def test_a_run_on_one_version_is_not_flagged(db: Database, tmp_path: Path) -> None:
    store = Store(db, load_workflows(write_stages(tmp_path / "stages", STAGES)))
    version = store.registry.get("two_step").version
    run_id, _ = await store.start_run(store.registry.get("two_step").stage("first"), {})
    await drain(store)
    data = await store.report(run_id)
    assert data is not None
    assert data["workflow_version"] == version
    assert [s["workflow_version"] for s in data["steps"]] == [version, version]
    assert data["mixed_versions"] is False and data["versions"] == [version]
    assert "warning" not in report.render(data)
