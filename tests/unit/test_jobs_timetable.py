"""The scheduler's timetable under freezegun: which fire times come due, when it sleeps, misfires.

The timetable is the scheduler minus its database: each test moves the frozen clock the way a
running process lives through it and checks the UTC instants handed out and the sleeps asked for.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from freezegun import freeze_time

from engine.triggers.jobs.firing import Job
from engine.triggers.jobs.scheduler import Timetable, missed_action, skip_reason
from engine.triggers.schedules import parse_schedule
from engine.workflow import Workflow

UTC = dt.UTC


def job(schedule: str, timezone: str = "UTC") -> Job:
    wf = Workflow("w")
    return Job(wf.job("j", schedule=schedule, timezone=timezone), parse_schedule(schedule, timezone))


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


def live_through(frozen: Any, table: Timetable, until: dt.datetime, max_sleep: float = 10 * 86400) -> list[dt.datetime]:
    """Sleep as the timetable says, collecting what comes due, until ``until``."""
    fired: list[dt.datetime] = []
    while now() < until:
        seconds = min(table.delay(now(), max_sleep), (until - now()).total_seconds())
        frozen.tick(dt.timedelta(seconds=max(seconds, 0.001)))
        fired.extend(t for _, t in table.due(now()))
    return fired


def test_weekly_monday_0900_sao_paulo_comes_due_at_1200_utc_each_week() -> None:
    with freeze_time("2026-11-01 00:00:00", tz_offset=0) as frozen:
        table = Timetable([job("weekly on monday at 09:00", "America/Sao_Paulo")], now())
        # From Sunday midnight UTC, the only sleep is the 36 hours to Monday 12:00 UTC.
        assert table.delay(now(), max_sleep=7 * 86400) == 36 * 3600
        fired = live_through(frozen, table, dt.datetime(2026, 11, 24, tzinfo=UTC))
    assert fired == [dt.datetime(2026, 11, d, 12, 0, tzinfo=UTC) for d in (2, 9, 16, 23)]


@pytest.mark.parametrize("spec", ["0 9 * * MON", "0 9 * * 1", "weekly on monday at 09:00"])
def test_the_sao_paulo_job_is_the_same_in_cron_and_friendly_form(spec: str) -> None:
    with freeze_time("2026-03-01 00:00:00") as frozen:
        table = Timetable([job(spec, "America/Sao_Paulo")], now())
        fired = live_through(frozen, table, dt.datetime(2026, 3, 17, tzinfo=UTC))
    assert fired == [dt.datetime(2026, 3, 2, 12, tzinfo=UTC), dt.datetime(2026, 3, 9, 12, tzinfo=UTC),
                     dt.datetime(2026, 3, 16, 12, tzinfo=UTC)]


def test_a_berlin_daily_job_moves_in_utc_across_both_dst_changes() -> None:
    with freeze_time("2026-03-27 12:00:00") as frozen:
        table = Timetable([job("daily at 09:00", "Europe/Berlin")], now())
        spring = live_through(frozen, table, dt.datetime(2026, 3, 31, tzinfo=UTC))
        frozen.move_to("2026-10-23 12:00:00")
        table = Timetable([job("daily at 09:00", "Europe/Berlin")], now())
        autumn = live_through(frozen, table, dt.datetime(2026, 10, 27, tzinfo=UTC))
    # CET (UTC+1) until Sunday 29 March, CEST (UTC+2) after; back on Sunday 25 October.
    assert [t.strftime("%d %H:%M") for t in spring] == ["28 08:00", "29 07:00", "30 07:00"]
    assert [t.strftime("%d %H:%M") for t in autumn] == ["24 07:00", "25 08:00", "26 08:00"]


def test_a_berlin_job_in_the_spring_gap_and_the_autumn_repeat_fires_once_each_night() -> None:
    # Plain datetimes here, not freezegun: its FakeDatetime.astimezone drops ``fold``, which the
    # DST rules of engine.schedules rely on (under freezegun the repeated hour never ends).
    def night_by_night(start: dt.datetime, end: dt.datetime) -> list[str]:
        table, at, fired = Timetable([job("30 2 * * *", "Europe/Berlin")], start), start, []
        while at < end:
            at += dt.timedelta(seconds=max(min(table.delay(at, 7 * 86400), (end - at).total_seconds()), 0.001))
            fired += [t.strftime("%d %H:%M") for _, t in table.due(at)]
        return fired

    # 02:30 does not exist on 29 March: it fires at 03:30 CEST (01:30 UTC); on 25 October 02:30
    # happens twice: it fires at the first (CEST, 00:30 UTC) only.
    assert night_by_night(dt.datetime(2026, 3, 28, 12, tzinfo=UTC), dt.datetime(2026, 3, 30, 12, tzinfo=UTC)) == [
        "29 01:30", "30 00:30"]
    assert night_by_night(dt.datetime(2026, 10, 24, 12, tzinfo=UTC), dt.datetime(2026, 10, 26, 12, tzinfo=UTC)) == [
        "25 00:30", "26 01:30"]


def test_monthly_on_the_31st_comes_due_on_the_last_day_of_every_month() -> None:
    with freeze_time("2026-01-01 00:00:00") as frozen:
        table = Timetable([job("monthly on 31 at 12:00")], now())
        fired = live_through(frozen, table, dt.datetime(2026, 7, 1, tzinfo=UTC))
    assert [t.date().isoformat() for t in fired] == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30"]


def test_several_jobs_share_one_sleep_to_whichever_is_next() -> None:
    with freeze_time("2026-11-16 08:00:00"):
        table = Timetable([job("daily at 10:00"), job("hourly at :30"), job("weekly on monday at 09:00",
                                                                             "America/Sao_Paulo")], now())
        assert table.delay(now(), max_sleep=86400) == 30 * 60
        assert table.next_fire_time() == dt.datetime(2026, 11, 16, 8, 30, tzinfo=UTC)
        assert table.delay(now(), max_sleep=60) == 60  # capped: a jumping wall clock is noticed


def test_nothing_is_handed_out_twice_and_nothing_before_the_start() -> None:
    with freeze_time("2026-11-16 12:00:00") as frozen:  # exactly a fire time: before our start
        table = Timetable([job("weekly on monday at 09:00", "America/Sao_Paulo")], now())
        assert table.due(now()) == []
        frozen.tick(dt.timedelta(days=7))
        [(_, t)] = table.due(now())
        assert t == now()
        assert table.due(now()) == []


@pytest.mark.parametrize(
    ("late", "grace", "action"),
    [(0, 60, "fire"), (59, 60, "fire"), (60, 60, "fire"), (61, 60, "skip"), (7200, 3600, "skip")],
)
def test_a_missed_fire_runs_within_the_grace_period_and_is_skipped_beyond_it(
    late: int, grace: int, action: str
) -> None:
    fire_time = dt.datetime(2026, 11, 16, 12, tzinfo=UTC)
    with freeze_time(fire_time + dt.timedelta(seconds=late)):
        assert missed_action(fire_time, now(), grace) == action


def test_the_skip_reason_says_how_late_and_which_setting() -> None:
    fire_time = dt.datetime(2026, 11, 16, 12, tzinfo=UTC)
    reason = skip_reason(fire_time, fire_time + dt.timedelta(hours=2), 3600)
    assert reason == ("missed: no scheduler was running at 2026-11-16T12:00:00+00:00; noticed 7200 s late, "
                      "beyond the 3600 s grace period (FLOWBOT_JOB_MISFIRE_GRACE)")
