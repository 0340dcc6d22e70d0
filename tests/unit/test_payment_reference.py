"""The expense example's payment references are unique, also for runs started in the same minute
(whose UUIDv7 ids share their first characters), and stable when the stage is retried."""

from __future__ import annotations

import shutil
from pathlib import Path

from support import ROOT

from engine.context import Context, Task
from engine.loader import load_workflows

CLAIM = {"employee": "Ann", "amount": 1.0, "currency": "EUR", "description": "Taxi", "requester": None}


def _reference(pay: object, task_id: int, run_id: str) -> str:
    ctx = Context(stage_key="expense/pay", run_context={}, max_payload_bytes=10_000)
    pay.run(Task(task_id, "approved", CLAIM, run_id, "pay"), ctx)  # type: ignore[attr-defined]
    return str(ctx.finish().context_set["payment"])


def test_runs_started_in_the_same_minute_get_different_payment_references(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "stages" / "expense", tmp_path / "expense", ignore=shutil.ignore_patterns("__pycache__"))
    pay = load_workflows(tmp_path).get("expense").stage("pay").module
    first = _reference(pay, 41, "0192f3a1-0000-7000-8000-000000000001")
    second = _reference(pay, 42, "0192f3a1-0000-7000-8000-000000000002")
    assert first != second
    assert _reference(pay, 41, "0192f3a1-0000-7000-8000-000000000001") == first, "a retry keeps its reference"
