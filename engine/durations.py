"""Durations as workflow authors write them: ``"30m"``, ``"48h"``, ``"5d"``, ``"2 business days"``.

A ``Duration`` is resolved against a start instant when it is used (a timer's due time is "now"
at the commit that schedules it, in the engine's clock), so the same declaration serves every
run. Business days skip Saturdays and Sundays in the workflow's timezone and keep the local time
of day (Friday 17:00 + 1 business day = Monday 17:00).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_SIMPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")
_BUSINESS = re.compile(r"^\s*(\d+)\s+business\s+days?\s*$")


@dataclass(frozen=True)
class Duration:
    """A span of time: ``seconds`` of clock time, or a whole number of ``business_days``."""

    seconds: float = 0.0
    business_days: int = 0
    text: str = ""

    def after(self, start: dt.datetime, timezone: str = "UTC") -> dt.datetime:
        """The instant this long after ``start`` (aware; business days counted in ``timezone``)."""
        if not self.business_days:
            return start + dt.timedelta(seconds=self.seconds)
        local = start.astimezone(ZoneInfo(timezone))
        day, left = local.date(), self.business_days
        while left:
            day += dt.timedelta(days=1)
            if day.weekday() < 5:
                left -= 1
        # Same wall-clock time on the target day, resolved in the zone (DST shifts the offset).
        wall = dt.datetime.combine(day, local.time().replace(tzinfo=None), tzinfo=ZoneInfo(timezone))
        return wall.astimezone(start.tzinfo or dt.UTC)

    def __str__(self) -> str:
        return self.text or (f"{self.business_days} business days" if self.business_days else f"{self.seconds:g}s")


def parse_duration(value: Any) -> Duration:
    """A Duration from ``"30m"``, ``"48h"``, ``"5d"``, ``"1w"``, ``"2 business days"``, a number of
    seconds or a ``timedelta``; raises ValueError saying what is accepted."""
    if isinstance(value, Duration):
        return value
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
        text = f"{seconds:g}s"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds, text = float(value), f"{value:g}s"
    elif isinstance(value, str):
        lowered = value.strip().lower()
        business = _BUSINESS.match(lowered)
        if business:
            days = int(business.group(1))
            if days < 1:
                raise ValueError(f"duration {value!r} must be at least 1 business day")
            return Duration(business_days=days, text=value.strip())
        simple = _SIMPLE.match(lowered)
        if not simple or simple.group(2) not in _UNITS:
            raise ValueError(f'duration {value!r} is not like "30m", "48h", "5d", "1w" or "2 business days"')
        seconds, text = float(simple.group(1)) * _UNITS[simple.group(2)], value.strip()
    else:
        raise ValueError(f"duration must be a string like \"48h\", a number of seconds or a timedelta, got {value!r}")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return Duration(seconds=seconds, text=text)


def check_timezone(name: Any) -> str | None:
    """A problem with an IANA timezone name, or None."""
    if not isinstance(name, str) or not name:
        return f"timezone must be an IANA name like \"Europe/Paris\", got {name!r}"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f'unknown timezone "{name}" (an IANA name like "Europe/Paris")'
    return None
