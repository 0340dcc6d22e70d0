"""Job schedules: cron strings and friendly forms, fire times in UTC, DST and short months."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger
from freezegun import freeze_time

from engine.triggers.schedules import Schedule, ScheduleError, parse_schedule


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def fires(schedule: Schedule, start: datetime, end: datetime) -> list[str]:
    return [t.strftime("%Y-%m-%d %H:%M") for t in schedule.fire_times_between(start, end)]


# --- the weekly job of the contract ------------------------------------------------------------


@pytest.mark.parametrize("spec", ["0 9 * * MON", "weekly on monday at 09:00", "0 9 * * 1"])
def test_weekly_monday_0900_sao_paulo_fires_at_1200_utc_all_year(spec: str) -> None:
    schedule = parse_schedule(spec, "America/Sao_Paulo")
    # Brazil abolished DST in 2019: UTC-3 in January (southern summer) and July alike.
    assert fires(schedule, utc(2026, 1, 1), utc(2026, 1, 20)) == [
        "2026-01-05 12:00",
        "2026-01-12 12:00",
        "2026-01-19 12:00",
    ]
    assert fires(schedule, utc(2026, 7, 1), utc(2026, 7, 14)) == [
        "2026-07-06 12:00",
        "2026-07-13 12:00",
    ]


def test_sao_paulo_history_is_honoured_before_dst_was_abolished() -> None:
    schedule = parse_schedule("0 9 * * MON", "America/Sao_Paulo")
    # December 2018 was Brazilian summer time (UTC-2).
    assert schedule.next_fire_time(utc(2018, 12, 1)) == utc(2018, 12, 3, 11)


def test_next_fire_time_from_a_frozen_now_as_the_scheduler_asks() -> None:
    schedule = parse_schedule("0 9 * * MON", "America/Sao_Paulo")
    with freeze_time("2026-03-04 15:00:00"):  # a Wednesday
        now = datetime.now(UTC)
        assert schedule.next_fire_time(now) == utc(2026, 3, 9, 12)
        assert schedule.latest_fire_time(now) == utc(2026, 3, 2, 12)


def test_describe_names_the_day_time_and_timezone() -> None:
    assert (
        parse_schedule("0 9 * * MON", "America/Sao_Paulo").describe()
        == "weekly on Monday at 09:00 America/Sao_Paulo"
    )
    assert parse_schedule("daily at 09:30").describe() == "daily at 09:30 UTC"
    assert parse_schedule("*/5 9-17 * * 1-5").describe() == 'cron "*/5 9-17 * * 1-5" UTC'


# --- daylight saving time ------------------------------------------------------------------------


def test_berlin_daily_0900_follows_both_2026_dst_changes() -> None:
    schedule = parse_schedule("daily at 09:00", "Europe/Berlin")
    # Summer time starts on 29 March 2026 and ends on 25 October 2026.
    assert fires(schedule, utc(2026, 3, 27), utc(2026, 3, 31)) == [
        "2026-03-27 08:00",
        "2026-03-28 08:00",
        "2026-03-29 07:00",
        "2026-03-30 07:00",
    ]
    assert fires(schedule, utc(2026, 10, 23), utc(2026, 10, 27)) == [
        "2026-10-23 07:00",
        "2026-10-24 07:00",
        "2026-10-25 08:00",
        "2026-10-26 08:00",
    ]


def test_a_time_in_the_spring_forward_gap_fires_once_at_the_shifted_time() -> None:
    schedule = parse_schedule("30 2 * * *", "Europe/Berlin")
    # 02:30 does not exist on 29 March 2026: it fires at 03:30 CEST (01:30 UTC), once.
    assert fires(schedule, utc(2026, 3, 28), utc(2026, 3, 30, 12)) == [
        "2026-03-28 01:30",
        "2026-03-29 01:30",
        "2026-03-30 00:30",
    ]


@pytest.mark.parametrize(
    "asked_at", [utc(2026, 3, 29, 0, 59), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15)]
)
def test_the_shifted_gap_time_does_not_depend_on_when_it_is_asked(asked_at: datetime) -> None:
    # Raw CronTrigger skips it when asked after 03:00 CEST; flowbot's trigger does not.
    schedule = parse_schedule("30 2 * * *", "Europe/Berlin")
    assert schedule.next_fire_time(asked_at) == utc(2026, 3, 29, 1, 30)


def test_an_ambiguous_fall_back_time_fires_once_at_its_first_occurrence() -> None:
    schedule = parse_schedule("daily at 02:30", "Europe/Berlin")
    # 02:30 happens twice on 25 October 2026 (00:30 and 01:30 UTC): only the first fires.
    assert fires(schedule, utc(2026, 10, 24), utc(2026, 10, 26, 12)) == [
        "2026-10-24 00:30",
        "2026-10-25 00:30",
        "2026-10-26 01:30",
    ]
    assert schedule.next_fire_time(utc(2026, 10, 25, 1)) == utc(2026, 10, 26, 1, 30)


def test_hourly_fires_every_real_hour_across_both_dst_changes() -> None:
    schedule = parse_schedule("hourly at :15", "Europe/Berlin")
    # Fall back: the repeated 02:xx hour is a real hour too, so it fires in both.
    assert fires(schedule, utc(2026, 10, 24, 23), utc(2026, 10, 25, 3, 30)) == [
        "2026-10-24 23:15",
        "2026-10-25 00:15",
        "2026-10-25 01:15",
        "2026-10-25 02:15",
        "2026-10-25 03:15",
    ]
    # Spring forward: 02:15 does not exist, and no real hour is skipped.
    assert fires(schedule, utc(2026, 3, 28, 23), utc(2026, 3, 29, 2, 30)) == [
        "2026-03-28 23:15",
        "2026-03-29 00:15",
        "2026-03-29 01:15",
        "2026-03-29 02:15",
    ]


# --- monthly and short months --------------------------------------------------------------------


def test_monthly_on_the_31st_fires_every_month_on_the_last_day_of_short_ones() -> None:
    schedule = parse_schedule("monthly on 31 at 08:00")
    assert fires(schedule, utc(2026, 1, 1), utc(2026, 12, 31, 23)) == [
        "2026-01-31 08:00",
        "2026-02-28 08:00",
        "2026-03-31 08:00",
        "2026-04-30 08:00",
        "2026-05-31 08:00",
        "2026-06-30 08:00",
        "2026-07-31 08:00",
        "2026-08-31 08:00",
        "2026-09-30 08:00",
        "2026-10-31 08:00",
        "2026-11-30 08:00",
        "2026-12-31 08:00",
    ]
    assert fires(schedule, utc(2028, 2, 1), utc(2028, 3, 1)) == ["2028-02-29 08:00"]


def test_monthly_on_the_31st_in_a_timezone_uses_the_local_last_day() -> None:
    schedule = parse_schedule("monthly on 31", "America/Sao_Paulo")
    assert fires(schedule, utc(2026, 2, 1), utc(2026, 5, 1, 12)) == [
        "2026-02-28 03:00",
        "2026-03-31 03:00",
        "2026-04-30 03:00",
    ]


def test_monthly_on_29_and_30_clamp_only_where_the_month_is_shorter() -> None:
    on_30 = parse_schedule("monthly on 30")
    assert fires(on_30, utc(2026, 1, 1), utc(2026, 4, 1)) == [
        "2026-01-30 00:00",
        "2026-02-28 00:00",
        "2026-03-30 00:00",
    ]
    on_29 = parse_schedule("monthly on the 29th")
    assert fires(on_29, utc(2026, 1, 1), utc(2026, 4, 1)) == [
        "2026-01-29 00:00",
        "2026-02-28 00:00",
        "2026-03-29 00:00",
    ]
    # A leap year's 29 February is matched once, not twice.
    assert fires(on_29, utc(2028, 2, 1), utc(2028, 3, 2)) == ["2028-02-29 00:00"]


def test_plain_cron_day_31_keeps_cron_meaning_and_skips_short_months() -> None:
    schedule = parse_schedule("0 0 31 * *")
    assert fires(schedule, utc(2026, 1, 1), utc(2026, 6, 1)) == [
        "2026-01-31 00:00",
        "2026-03-31 00:00",
        "2026-05-31 00:00",
    ]


# --- every friendly form --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "description", "first_two"),
    [
        ("hourly", "hourly at :00", ["2026-01-01 00:00", "2026-01-01 01:00"]),
        ("hourly at :15", "hourly at :15", ["2026-01-01 00:15", "2026-01-01 01:15"]),
        ("daily", "daily at 00:00", ["2026-01-01 00:00", "2026-01-02 00:00"]),
        ("daily at 09:30", "daily at 09:30", ["2026-01-01 09:30", "2026-01-02 09:30"]),
        ("daily at 9:05", "daily at 09:05", ["2026-01-01 09:05", "2026-01-02 09:05"]),
        ("weekly", "weekly on Monday at 00:00", ["2026-01-05 00:00", "2026-01-12 00:00"]),
        (
            "weekly on friday at 17:00",
            "weekly on Friday at 17:00",
            ["2026-01-02 17:00", "2026-01-09 17:00"],
        ),
        ("weekly on fri", "weekly on Friday at 00:00", ["2026-01-02 00:00", "2026-01-09 00:00"]),
        ("weekly on sunday", "weekly on Sunday at 00:00", ["2026-01-04 00:00", "2026-01-11 00:00"]),
        ("monthly", "monthly on day 1 at 00:00", ["2026-01-01 00:00", "2026-02-01 00:00"]),
        (
            "monthly on 15 at 08:00",
            "monthly on day 15 at 08:00",
            ["2026-01-15 08:00", "2026-02-15 08:00"],
        ),
        (
            "monthly on 31",
            "monthly on day 31 (the last day in shorter months) at 00:00",
            ["2026-01-31 00:00", "2026-02-28 00:00"],
        ),
        (
            "monthly on last",
            "monthly on the last day at 00:00",
            ["2026-01-31 00:00", "2026-02-28 00:00"],
        ),
        (
            "  MONTHLY  ON THE LAST DAY AT 23:59 ",
            "monthly on the last day at 23:59",
            ["2026-01-31 23:59", "2026-02-28 23:59"],
        ),
        (
            "Weekly On FRI At 17:00",
            "weekly on Friday at 17:00",
            ["2026-01-02 17:00", "2026-01-09 17:00"],
        ),
    ],
)
def test_friendly_forms(spec: str, description: str, first_two: list[str]) -> None:
    schedule = parse_schedule(spec)
    assert schedule.describe() == f"{description} UTC"
    # 2026-01-01 is a Thursday; the window starts just before midnight to include it.
    start = utc(2025, 12, 31, 23, 59, 59)
    first = schedule.next_fire_time(start)
    second = schedule.next_fire_time(first)
    assert [t.strftime("%Y-%m-%d %H:%M") for t in (first, second)] == first_two


# --- cron semantics -------------------------------------------------------------------------------


@pytest.mark.parametrize("weekday", ["0", "7", "sun", "SUN"])
def test_cron_weekday_0_and_7_are_sunday_not_apschedulers_monday(weekday: str) -> None:
    schedule = parse_schedule(f"0 9 * * {weekday}")
    assert schedule.next_fire_time(utc(2026, 1, 1)) == utc(2026, 1, 4, 9)  # a Sunday


def weekdays_fired(spec: str) -> list[str]:
    """Weekday names fired in the week Monday 5 to Sunday 11 January 2026."""
    times = parse_schedule(spec).fire_times_between(utc(2026, 1, 5), utc(2026, 1, 12))
    return [t.strftime("%a") for t in times]


def test_cron_weekday_ranges_lists_and_steps_use_cron_numbering() -> None:
    assert weekdays_fired("0 9 * * 1-5") == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert weekdays_fired("0 9 * * sat,sun") == ["Sat", "Sun"]
    assert weekdays_fired("0 9 * * 5-7") == ["Fri", "Sat", "Sun"]
    assert weekdays_fired("0 9 * * */2") == ["Tue", "Thu", "Sat", "Sun"]  # 0,2,4,6
    assert weekdays_fired("0 9 * * mon-wed,fri") == ["Mon", "Tue", "Wed", "Fri"]


def test_cron_with_both_day_fields_restricted_fires_when_either_matches() -> None:
    # Standard cron: "on the 13th, and on every Friday".
    schedule = parse_schedule("0 9 13 * 5")
    assert fires(schedule, utc(2026, 1, 1), utc(2026, 1, 20)) == [
        "2026-01-02 09:00",
        "2026-01-09 09:00",
        "2026-01-13 09:00",
        "2026-01-16 09:00",
    ]


def test_cron_steps_ranges_and_month_names() -> None:
    schedule = parse_schedule("*/20 8-9 1 jan,JUL *")
    assert fires(schedule, utc(2026, 1, 1), utc(2026, 12, 31)) == [
        "2026-01-01 08:00",
        "2026-01-01 08:20",
        "2026-01-01 08:40",
        "2026-01-01 09:00",
        "2026-01-01 09:20",
        "2026-01-01 09:40",
        "2026-07-01 08:00",
        "2026-07-01 08:20",
        "2026-07-01 08:40",
        "2026-07-01 09:00",
        "2026-07-01 09:20",
        "2026-07-01 09:40",
    ]


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0 25 * * *", 'invalid schedule "0 25 * * *": hour 25 out of range (0-23)'),
        ("60 * * * *", 'invalid schedule "60 * * * *": minute 60 out of range (0-59)'),
        ("0 0 0 * *", 'invalid schedule "0 0 0 * *": day of month 0 out of range (1-31)'),
        ("0 0 * 13 *", 'invalid schedule "0 0 * 13 *": month 13 out of range (1-12)'),
        ("0 0 * * 8", 'invalid schedule "0 0 * * 8": day of week 8 out of range (0-7)'),
        ("0 9 * * funday", 'invalid schedule "0 9 * * funday": unknown day of week "funday"'),
        ("*/0 * * * *", 'invalid schedule "*/0 * * * *": minute step "*/0" is zero'),
        ("0 0 5-1 * *", 'invalid schedule "0 0 5-1 * *": day of month range "5-1" runs backwards'),
        ("0 0 ? * *", 'invalid schedule "0 0 ? * *": day of month "?" is not understood'),
        (
            "0 0 31 2 *",
            'invalid schedule "0 0 31 2 *": the day of month never occurs in the given months',
        ),
        (
            "* * * *",
            'invalid schedule "* * * *": expected a 5-field cron string '
            "(minute hour day-of-month month day-of-week) or hourly/daily/weekly/monthly",
        ),
        (
            "",
            'invalid schedule "": expected a 5-field cron string '
            "(minute hour day-of-month month day-of-week) or hourly/daily/weekly/monthly",
        ),
        ("daily at 25:00", 'invalid schedule "daily at 25:00": hour 25 out of range (0-23)'),
        ("daily at 9am", 'invalid schedule "daily at 9am": time "9am" is not HH:MM'),
        ("hourly at :75", 'invalid schedule "hourly at :75": minute 75 out of range (0-59)'),
        ("weekly on funday", 'invalid schedule "weekly on funday": unknown day "funday"'),
        ("monthly on 32", 'invalid schedule "monthly on 32": day 32 out of range (1-31)'),
        (
            "weekly at noon on fri",
            'invalid schedule "weekly at noon on fri": expected e.g. "weekly on friday at 17:00"',
        ),
    ],
)
def test_invalid_schedules_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule(spec)
    assert str(raised.value) == message


@pytest.mark.parametrize("name", ["Mars/Base", "", "../etc/passwd", "America", "utc"])
def test_an_unknown_timezone_is_refused(name: str) -> None:
    with pytest.raises(ScheduleError) as raised:
        parse_schedule("daily", name)
    assert str(raised.value) == f'unknown timezone "{name}"'


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("daily").next_fire_time(datetime(2026, 1, 1))


# --- latest fire time, windows, the trigger object ------------------------------------------------


def test_latest_fire_time_is_the_most_recent_due_fire_time() -> None:
    schedule = parse_schedule("0 9 * * MON", "America/Sao_Paulo")
    assert schedule.latest_fire_time(utc(2026, 3, 9, 12)) == utc(2026, 3, 9, 12)  # at: inclusive
    assert schedule.latest_fire_time(utc(2026, 3, 9, 11, 59)) == utc(2026, 3, 2, 12)
    monthly = parse_schedule("monthly on 31")
    assert monthly.latest_fire_time(utc(2026, 3, 15)) == utc(2026, 2, 28)
    # A rare schedule is found years back (29 February).
    assert parse_schedule("0 0 29 2 *").latest_fire_time(utc(2026, 3, 1)) == utc(2024, 2, 29)


def test_latest_fire_time_sees_the_shifted_gap_time() -> None:
    schedule = parse_schedule("30 2 * * *", "Europe/Berlin")
    assert schedule.latest_fire_time(utc(2026, 3, 29, 1, 45)) == utc(2026, 3, 29, 1, 30)
    assert schedule.latest_fire_time(utc(2026, 3, 29, 1, 29)) == utc(2026, 3, 28, 1, 30)


def test_fire_times_between_is_open_at_start_and_closed_at_end() -> None:
    schedule = parse_schedule("daily at 09:00")
    assert fires(schedule, utc(2026, 1, 1, 9), utc(2026, 1, 3, 9)) == [
        "2026-01-02 09:00",
        "2026-01-03 09:00",
    ]
    assert schedule.next_fire_time(utc(2026, 1, 1, 9)) == utc(2026, 1, 2, 9)
    assert schedule.fire_times_between(utc(2026, 1, 2), utc(2026, 1, 1)) == []


def test_fire_times_are_utc_and_accept_any_aware_input() -> None:
    schedule = parse_schedule("daily at 09:00", "Europe/Berlin")
    after = datetime(2026, 1, 1, 19, tzinfo=ZoneInfo("Asia/Tokyo"))  # 10:00 UTC
    fire = schedule.next_fire_time(after)
    assert fire.tzinfo is UTC
    assert fire == utc(2026, 1, 2, 8)


def test_the_trigger_is_an_apscheduler_trigger_agreeing_with_the_schedule() -> None:
    schedule = parse_schedule("daily at 02:30", "Europe/Berlin")
    assert isinstance(schedule.trigger, BaseTrigger)
    now = utc(2026, 10, 24, 12)
    first = schedule.trigger.get_next_fire_time(None, now)
    # Asked between the two occurrences of 02:30 (as APScheduler does after a fire).
    second = schedule.trigger.get_next_fire_time(first, first + timedelta(minutes=45))
    assert [first, second] == schedule.fire_times_between(now, utc(2026, 10, 26, 12))
    assert [first, second] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]


def test_schedules_are_frozen_values_compared_by_spec_and_timezone() -> None:
    schedule = parse_schedule("daily at 09:00", "Europe/Berlin")
    assert schedule == parse_schedule("daily at 09:00", "Europe/Berlin")
    assert schedule != parse_schedule("daily at 09:00", "UTC")
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.timezone = "UTC"  # type: ignore[misc]
