"""Job schedules: a cron string or a friendly form, in an IANA timezone.

APScheduler 3.x cron triggers compute the fire times; `ScheduleTrigger` wraps them to
pin down what APScheduler leaves loose (daylight saving changes, a wall-clock time that
falls in the gap), so every scheduler process agrees on the exact same UTC instants.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from engine.errors import FlowbotError

__all__ = ["Schedule", "ScheduleError", "ScheduleTrigger", "parse_schedule"]

# A fire time whose wall-clock time falls in a spring-forward gap happens up to one gap
# length after the transition; looking back this far catches it (real gaps are <= 2 h).
_GAP_LOOKBACK = timedelta(hours=3)
# latest_fire_time widens its window up to this far back before giving up (covers a
# "29 February" schedule across a skipped leap year).
_MAX_LOOKBACK = timedelta(days=366 * 9)
_MICROSECOND = timedelta(microseconds=1)

_WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_APS_WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]  # APScheduler: 0 = Monday
_CRON_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {
    name: i for i, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)
}
_DAY_NAMES = {name: i for i, day in enumerate(_WEEKDAYS) for name in (day.lower(), day[:3].lower())}
_DAY_NAMES.update(tues=1, weds=2, thur=3, thurs=3)


class ScheduleError(FlowbotError):
    """Raised when a schedule string or its timezone is invalid; the message says what is wrong."""


class ScheduleTrigger(BaseTrigger):
    """An APScheduler 3.x trigger: the schedule's cron trigger(s) with flowbot's DST rules.

    - A wall-clock time that does not exist (spring forward) fires once, at the same
      distance past the transition (02:30 in Berlin's gap fires at 03:30 CEST), whether
      the trigger is asked before or after the transition.
    - A wall-clock time that happens twice (fall back) fires once, at its first
      occurrence. Schedules whose hour is a wildcard (hourly, "15 * * * *") fire in both
      repeated hours instead: they run every real hour, as Vixie cron does.
    - Returned fire times are strictly increasing UTC instants (no duplicates when two
      wall-clock times map to one instant).
    """

    def __init__(self, inner: BaseTrigger, tz: tzinfo, *, every_hour: bool) -> None:
        self.inner = inner
        self.timezone = tz
        self.every_hour = every_hour

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The first fire time at or after `now` (strictly after `previous_fire_time`), in UTC."""
        start = now.astimezone(UTC)
        if previous_fire_time is not None:
            # Same contract as CronTrigger: never hand back the previous fire time again.
            start = min(start, previous_fire_time.astimezone(UTC) + _MICROSECOND)
        return self.first_at_or_after(start)

    def first_at_or_after(self, start: datetime) -> datetime | None:
        """The earliest fire time >= `start` (aware), in UTC; None if there is none."""
        start = start.astimezone(UTC)
        probe = start
        before = (start - _GAP_LOOKBACK).astimezone(self.timezone)
        if before.utcoffset() != start.astimezone(self.timezone).utcoffset():
            # Just past a transition CronTrigger skips a gap time it would have returned
            # if asked earlier; ask earlier so the answer does not depend on when we ask.
            probe = start - _GAP_LOOKBACK
        fire = self.inner.get_next_fire_time(None, probe.astimezone(self.timezone))
        last: datetime | None = None
        while fire is not None:
            instant = fire.astimezone(UTC)
            if instant >= start and not self._is_repeat(instant):
                return instant
            if last is not None and instant <= last:
                # The trigger did not move forward (datetimes that lost their fold, as under
                # freezegun): ask from one second later so the search always advances.
                fire = self.inner.get_next_fire_time(None, (instant + timedelta(seconds=1)).astimezone(self.timezone))
            else:
                fire = self.inner.get_next_fire_time(fire, fire)
            last = instant
        return None

    def _is_repeat(self, instant: datetime) -> bool:
        if self.every_hour:
            return False
        local = instant.astimezone(self.timezone)
        # zoneinfo sets fold=1 on the second occurrence of an ambiguous wall-clock time.
        return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()

    def __str__(self) -> str:
        return f"flowbot[{self.inner}]"

    def __repr__(self) -> str:
        return f"<ScheduleTrigger {self.inner!r} every_hour={self.every_hour}>"


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: when a job fires, computed in `timezone`, answered in UTC."""

    spec: str
    timezone: str
    trigger: ScheduleTrigger = field(compare=False, repr=False)
    description: str = field(compare=False, repr=False)

    def next_fire_time(self, after: datetime) -> datetime:
        """The first fire time strictly after `after` (an aware datetime), in UTC."""
        fire = self.trigger.first_at_or_after(_aware(after, "after") + _MICROSECOND)
        if fire is None:  # parse_schedule refuses schedules that never fire
            raise ScheduleError(f'schedule "{self.spec}" has no fire time after {after}')
        return fire

    def fire_times_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Every fire time t with start < t <= end, in UTC, oldest first.

        Half-open on the left so consecutive windows (a, b], (b, c] never fire twice.
        """
        end = _aware(end, "end")
        times: list[datetime] = []
        fire = self.trigger.first_at_or_after(_aware(start, "start") + _MICROSECOND)
        while fire is not None and fire <= end:
            times.append(fire)
            fire = self.trigger.first_at_or_after(fire + _MICROSECOND)
        return times

    def latest_fire_time(self, at_or_before: datetime) -> datetime | None:
        """The most recent fire time <= `at_or_before`, in UTC (for misfire handling).

        None when the schedule has not fired in the last nine years.
        """
        end = _aware(at_or_before, "at_or_before")
        window = timedelta(hours=2)
        while not (times := self.fire_times_between(end - window, end)):
            if window >= _MAX_LOOKBACK:
                return None
            window = min(window * 4, _MAX_LOOKBACK)
        return times[-1]

    def describe(self) -> str:
        """Human text, e.g. "weekly on Monday at 09:00 America/Sao_Paulo"."""
        return f"{self.description} {self.timezone}"


def parse_schedule(spec: str, timezone: str = "UTC") -> Schedule:
    """Parse a job schedule, raising ScheduleError that says what is wrong.

    `spec` (case-insensitive) is a 5-field cron string with standard semantics
    ("0 9 * * MON": minute hour day-of-month month day-of-week; day-of-week 0 and 7 are
    Sunday, names allowed; when both day fields are restricted either one matching
    fires, as in Vixie cron), or one of the friendly forms:

    - "hourly" (minute 0), "hourly at :15"
    - "daily" (00:00), "daily at 09:30"
    - "weekly" (Monday 00:00), "weekly on friday at 17:00", "weekly on fri"
    - "monthly" (day 1 at 00:00), "monthly on 15 at 08:00", "monthly on last"

    "monthly on 29", "on 30" and "on 31" fire every month: in a month without that day,
    on its last day (so "monthly on 31" is the last day of every month, and February
    gets its 28th or 29th). Plain cron keeps cron's meaning: "0 0 31 * *" skips short
    months.

    `timezone` is an IANA name ("Europe/Berlin"); fire times are wall-clock times there.
    """
    tz = _zone(timezone)
    text = " ".join(spec.strip().lower().split())
    keyword = text.split(" ", 1)[0] if text else ""
    if keyword in _FRIENDLY:
        inner, every_hour, description = _parse_friendly(spec, text, keyword, tz)
    else:
        inner, every_hour, description = _parse_cron(spec, text, tz)
    trigger = ScheduleTrigger(inner, tz, every_hour=every_hour)
    return Schedule(spec=spec.strip(), timezone=timezone, trigger=trigger, description=description)


# --- friendly forms ---------------------------------------------------------------------------

_AT = r"(?: at (?P<time>\S+))?"
_FRIENDLY = {
    "hourly": (re.compile(r"hourly(?: at :?(?P<minute>\d{1,2}))?"), '"hourly at :15"'),
    "daily": (re.compile(r"daily" + _AT), '"daily at 09:30"'),
    "weekly": (re.compile(r"weekly(?: on (?P<day>[a-z]+))?" + _AT), '"weekly on friday at 17:00"'),
    "monthly": (
        re.compile(
            r"monthly(?: on (?:the )?(?P<day>last|\d{1,2}(?:st|nd|rd|th)?)(?: day)?)?" + _AT
        ),
        '"monthly on 15 at 08:00" or "monthly on last"',
    ),
}
_TIME = re.compile(r"(\d{1,2}):(\d{2})")


def _parse_friendly(
    spec: str, text: str, keyword: str, tz: tzinfo
) -> tuple[BaseTrigger, bool, str]:
    pattern, example = _FRIENDLY[keyword]
    match = pattern.fullmatch(text)
    if match is None:
        raise _invalid(spec, f"expected e.g. {example}")
    groups = match.groupdict()
    if keyword == "hourly":
        minute = _in_range(spec, "minute", int(groups["minute"] or 0), 0, 59)
        return CronTrigger(minute=minute, timezone=tz), True, f"hourly at :{minute:02d}"
    hour, minute = _time(spec, groups["time"])
    at = f"at {hour:02d}:{minute:02d}"
    if keyword == "daily":
        return CronTrigger(hour=hour, minute=minute, timezone=tz), False, f"daily {at}"
    if keyword == "weekly":
        day = _DAY_NAMES.get(groups["day"] or "mon")
        if day is None:
            raise _invalid(spec, f'unknown day "{groups["day"]}"')
        trigger = CronTrigger(day_of_week=_APS_WEEKDAYS[day], hour=hour, minute=minute, timezone=tz)
        return trigger, False, f"weekly on {_WEEKDAYS[day]} {at}"
    return _monthly(spec, groups["day"] or "1", hour, minute, tz, at)


def _monthly(
    spec: str, day_text: str, hour: int, minute: int, tz: tzinfo, at: str
) -> tuple[BaseTrigger, bool, str]:
    def cron(**fields: object) -> CronTrigger:
        return CronTrigger(**fields, hour=hour, minute=minute, timezone=tz)

    if day_text == "last":
        return cron(day="last"), False, f"monthly on the last day {at}"
    day = _in_range(spec, "day", int(day_text.rstrip("stndrh")), 1, 31)
    if day <= 28:
        return cron(day=day), False, f"monthly on day {day} {at}"
    description = f"monthly on day {day} (the last day in shorter months) {at}"
    if day == 31:
        return cron(day="last"), False, description
    # Day 29 or 30: that day where the month has it, else February's last day (an
    # OrTrigger collapses Feb 29 in leap years, matched by both, into one fire time).
    return OrTrigger([cron(day=day), cron(month=2, day="last")]), False, description


def _time(spec: str, text: str | None) -> tuple[int, int]:
    if text is None:
        return 0, 0
    match = _TIME.fullmatch(text)
    if match is None:
        raise _invalid(spec, f'time "{text}" is not HH:MM')
    hour = _in_range(spec, "hour", int(match[1]), 0, 23)
    return hour, _in_range(spec, "minute", int(match[2]), 0, 59)


# --- cron strings -------------------------------------------------------------------------------

_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _CRON_WEEKDAYS),
)
_ITEM = re.compile(r"(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?")


def _parse_cron(spec: str, text: str, tz: tzinfo) -> tuple[BaseTrigger, bool, str]:
    parts = text.split(" ") if text else []
    if len(parts) != 5:
        raise _invalid(
            spec,
            "expected a 5-field cron string (minute hour day-of-month month day-of-week) "
            "or hourly/daily/weekly/monthly",
        )
    values = [_cron_field(spec, part, *f) for part, f in zip(parts, _CRON_FIELDS, strict=True)]
    minutes, hours, days, months, cron_weekdays = values
    # Vixie cron: a day field counts as restricted unless it starts with "*".
    days_restricted = not parts[2].startswith("*")
    weekdays_restricted = not parts[4].startswith("*")
    if days_restricted and not weekdays_restricted:
        longest = max(29 if m == 2 else calendar.monthrange(2001, m)[1] for m in months)
        if min(days) > longest:
            raise _invalid(spec, "the day of month never occurs in the given months")

    # APScheduler 3.x numbers weekdays from Monday = 0 (from_crontab does not convert),
    # so cron weekdays go over as names.
    aps_weekdays = sorted({(d - 1) % 7 for d in cron_weekdays})
    fields = {
        "minute": _compact(minutes, parts[0]),
        "hour": _compact(hours, parts[1]),
        "month": _compact(months, parts[3]),
    }
    dom = _compact(days, parts[2])
    dow = "*" if len(aps_weekdays) == 7 else _compact(aps_weekdays, "", _APS_WEEKDAYS)
    if days_restricted and weekdays_restricted:
        inner: BaseTrigger = OrTrigger(
            [
                CronTrigger(**fields, day=dom, day_of_week="*", timezone=tz),
                CronTrigger(**fields, day="*", day_of_week=dow, timezone=tz),
            ]
        )
    else:
        inner = CronTrigger(**fields, day=dom, day_of_week=dow, timezone=tz)
    every_hour = parts[1].startswith("*")
    return inner, every_hour, _describe_cron(spec, parts, aps_weekdays)


def _cron_field(
    spec: str, text: str, name: str, low: int, high: int, names: dict[str, int]
) -> list[int]:
    values: set[int] = set()
    for item in text.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise _invalid(spec, f'{name} "{text}" is not understood')
        star, first, last, step = match.groups()
        if star:
            start, stop = low, high
        else:
            start = _cron_value(spec, name, first, low, high, names)
            stop = (
                _cron_value(spec, name, last, low, high, names)
                if last
                else (high if step else start)
            )
            if start > stop:
                raise _invalid(spec, f'{name} range "{item}" runs backwards')
        increment = int(step) if step else 1
        if increment == 0:
            raise _invalid(spec, f'{name} step "{item}" is zero')
        values.update(range(start, stop + 1, increment))
    if name == "day of week" and 7 in values:  # 7 is Sunday again
        values = (values - {7}) | {0}
    return sorted(values)


def _cron_value(spec: str, name: str, text: str, low: int, high: int, names: dict[str, int]) -> int:
    if text.isdigit():
        return _in_range(spec, name, int(text), low, high)
    if text in names:
        return names[text]
    raise _invalid(spec, f'unknown {name} "{text}"')


def _compact(values: list[int], text: str, labels: list[str] | None = None) -> str:
    """`values` as an APScheduler field expression: "*", or ranges like "1-5,10"."""
    if text == "*":
        return "*"
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])

    def label(value: int) -> str:
        return labels[value] if labels else str(value)

    return ",".join(label(a) if a == b else f"{label(a)}-{label(b)}" for a, b in runs)


def _describe_cron(spec: str, parts: list[str], aps_weekdays: list[int]) -> str:
    minute, hour, dom, month, dow = parts
    if minute.isdigit() and hour.isdigit() and month == "*":
        at = f"at {int(hour):02d}:{int(minute):02d}"
        if dom == "*" and dow == "*":
            return f"daily {at}"
        if dom == "*" and len(aps_weekdays) == 1 and "," not in dow and "/" not in dow:
            return f"weekly on {_WEEKDAYS[aps_weekdays[0]]} {at}"
        if dow == "*" and dom.isdigit() and int(dom) <= 28:
            return f"monthly on day {int(dom)} {at}"
    return f'cron "{spec.strip()}"'


# --- shared helpers ----------------------------------------------------------------------------


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ScheduleError(f'unknown timezone "{name}"') from None


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _in_range(spec: str, name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise _invalid(spec, f"{name} {value} out of range ({low}-{high})")
    return value


def _invalid(spec: str, reason: str) -> ScheduleError:
    return ScheduleError(f'invalid schedule "{spec.strip()}": {reason}')
