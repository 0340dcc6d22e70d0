"""The test kit's clock stands still, moves only forward, and reads durations as workflows do."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.testing.clock import TestClock

MONDAY = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def test_the_clock_stands_still_until_moved() -> None:
    clock = TestClock(MONDAY)
    assert clock() == clock() == MONDAY
    clock.move_to(MONDAY + dt.timedelta(hours=1))
    assert clock() == MONDAY + dt.timedelta(hours=1)


def test_durations_are_read_as_workflows_write_them_business_days_included() -> None:
    friday = TestClock(MONDAY + dt.timedelta(days=4))
    assert friday.target("49h") == MONDAY + dt.timedelta(days=4, hours=49)
    assert friday.target("2 business days") == MONDAY + dt.timedelta(days=8)  # Tuesday
    assert friday.target(dt.timedelta(minutes=5)) == MONDAY + dt.timedelta(days=4, minutes=5)


def test_the_clock_refuses_to_go_back_or_to_a_time_without_a_zone() -> None:
    clock = TestClock(MONDAY)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.move_to(MONDAY - dt.timedelta(seconds=1))
    with pytest.raises(ValueError, match="aware datetime"):
        clock.move_to(dt.datetime(2026, 1, 6))
    with pytest.raises(ValueError, match="aware datetime"):
        TestClock(dt.datetime(2026, 1, 6))
    assert clock() == MONDAY
