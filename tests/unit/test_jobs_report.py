"""The weekly report's message (stages/weekly_report/message.py): content and Block Kit limits."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from blockkit import assert_valid_blocks

SINCE = dt.datetime(2026, 11, 9, 9, tzinfo=dt.UTC)
UNTIL = dt.datetime(2026, 11, 16, 9, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def message() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "stages" / "weekly_report" / "message.py"
    spec = importlib.util.spec_from_file_location("weekly_report_message", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_workflows_are_listed_busiest_first_with_statuses_in_lifecycle_order(message: ModuleType) -> None:
    counts = [
        {"workflow": "a-small", "status": "completed", "n": 1},
        {"workflow": "expense", "status": "waiting", "n": 2},
        {"workflow": "expense", "status": "failed", "n": 1},
        {"workflow": "expense", "status": "completed", "n": 9},
    ]
    assert message.workflow_lines(counts) == [
        "*expense*  12 runs: :white_check_mark: 9 completed · :x: 1 failed · :hourglass_flowing_sand: 2 waiting",
        "*a-small*  1 run: :white_check_mark: 1 completed",
    ]


def test_a_busy_week_stays_within_block_kit_limits(message: ModuleType) -> None:
    counts = [{"workflow": f"workflow-{i:03d}-" + "x" * 60, "status": s, "n": i + 1}
              for i in range(120) for s in ("completed", "failed", "running")]
    slowest = [{"workflow": "w" * 80, "stage": "s" * 80, "n": 3, "avg_seconds": 90061.0, "max_seconds": 200000.0}] * 5
    text, blocks = message.build_message(counts, slowest, SINCE, UNTIL)
    assert_valid_blocks(blocks)
    assert len(blocks) <= 50
    assert text == "Weekly flowbot report: 21780 runs in 120 workflows, 7260 failed (09 Nov to 16 Nov 2026)"
    body = "\n".join(b["text"]["text"] for b in blocks if b["type"] == "section" and "text" in b)
    assert "_… and 80 more workflows_" in body
    assert body.count("*workflow-") == 40
    assert "max 2 d 7 h, avg 25 h 1 min over 3 tasks" in body


def test_names_are_escaped_for_mrkdwn(message: ModuleType) -> None:
    [line] = message.workflow_lines([{"workflow": "a<b>&c", "status": "completed", "n": 1}])
    assert line.startswith("*a&lt;b&gt;&amp;c*")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250 ms"), (12.54, "12.5 s"), (250, "4 min 10 s"), (11100, "3 h 5 min"), (187200, "2 d 4 h")],
)
def test_durations_read_like_a_person_would_say_them(message: ModuleType, seconds: float, text: str) -> None:
    assert message.duration(seconds) == text
