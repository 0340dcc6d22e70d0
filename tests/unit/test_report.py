"""The text execution report (``flowbot runs show``) and tables (``flowbot runs``/``tasks``)."""

from __future__ import annotations

import datetime as dt

from engine.runtime.report import render, table


def _step(stage: str, kind: str = "script", status: str = "completed", **kw: object) -> dict[str, object]:
    return {"stage": stage, "kind": kind, "type": "start", "status": status, "attempts": 1, "payload": {},
            "started_at": None, "finished_at": None, "error": None, "log": [], "assignee": None, **kw}


def _report(*steps: dict[str, object]) -> dict[str, object]:
    return {"id": "r1", "workflow": "w", "status": "waiting", "trigger": {}, "context": {}, "error": None,
            "created_at": None, "finished_at": None, "steps": list(steps), "unrouted": [], "waiting_joins": []}


def test_step_columns_stay_aligned_when_a_stage_name_is_long() -> None:
    text = render(_report(_step("a-stage-with-a-rather-long-descriptive-name"), _step("b")))
    rows = [line for line in text.splitlines() if line.startswith("     ") and ". " in line]
    assert len(rows) == 2
    assert rows[0].index(" script ") == rows[1].index(" script ")
    assert rows[0].index("completed") == rows[1].index("completed")


def test_a_waiting_form_shows_who_it_waits_on_and_its_payload() -> None:
    text = render(_report(_step("review", kind="form", status="pending", payload={"amount": 3},
                                assignee={"users": ["bob@example.com", "U123"]}),
                          _step("triage", kind="form", status="pending", assignee={"team": "@finance"})))
    assert "        waiting on: bob@example.com, U123\n        payload: {\"amount\": 3}" in text
    assert "        waiting on: team @finance" in text


def test_tables_show_timestamps_as_iso_8601_and_assignees_as_people() -> None:
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)
    text = table([{"id": 1, "created_at": at, "assignee": {"users": ["bob@example.com"]}}],
                 ["id", "created_at", "assignee"])
    assert text.splitlines()[1].split() == ["1", "2026-01-02T03:04:05+00:00", "bob@example.com"]
