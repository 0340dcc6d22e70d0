"""The test kit's clock: the engine's notion of now, moved only by the test.

Every part of flowbot reads the time through the store's clock (timers, timeouts, leases,
reminders, job schedules, effects put off for a retry), so a test that moves this clock moves
them all, and nothing happens because a test ran slowly.
"""

from __future__ import annotations

import datetime as dt

from engine.durations import parse_duration


class TestClock:
    """A clock (``Store(clock=...)``) that stands still until ``move_to`` or ``move_by``."""

    __test__ = False  # not a test class

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime.now(dt.UTC).replace(microsecond=0)
        if start.tzinfo is None:
            raise ValueError(f"the test clock needs an aware datetime (with a timezone), got {start!r}")
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def move_to(self, when: dt.datetime) -> None:
        """Set the time to ``when`` (never backwards: the engine's deadlines assume time goes on)."""
        if when.tzinfo is None:
            raise ValueError(f"give an aware datetime (with a timezone), got {when!r}")
        if when < self.now:
            raise ValueError(f"the clock only moves forward: it is {self.now.isoformat()}, "
                             f"{when.isoformat()} is in the past")
        self.now = when

    def target(self, duration: str | float | dt.timedelta) -> dt.datetime:
        """The instant ``duration`` (``"49h"``, ``"2 business days"``, seconds, timedelta) from now."""
        return parse_duration(duration).after(self.now)
