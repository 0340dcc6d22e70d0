"""Durations as authors write them, and the wait declarations checked when workflows load."""

from __future__ import annotations

import datetime as dt

import pytest

from engine.durations import parse_duration
from engine.errors import PayloadError
from engine.waiting import due, fill_key


@pytest.mark.parametrize(("text", "seconds"), [
    ("30m", 1800), ("48h", 172800), ("5d", 432000), ("1w", 604800), ("90s", 90), ("1.5h", 5400),
    ("2 hours", 7200), (" 10 MIN ", 600), (45, 45), (dt.timedelta(minutes=2), 120),
])
def test_plain_durations_are_seconds(text, seconds) -> None:
    assert parse_duration(text).seconds == seconds


@pytest.mark.parametrize("bad", ["", "soon", "5", "-5m", "0h", "5 fortnights", "2 business", True, None, [1]])
def test_anything_else_is_refused_with_what_is_accepted(bad) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(("start", "days", "end"), [
    # Friday 17:00 + 1 business day = Monday 17:00; + 2 = Tuesday.
    ("2026-12-04T17:00", 1, "2026-12-07T17:00"),
    ("2026-12-04T17:00", 2, "2026-12-08T17:00"),
    # Saturday counts from the next business day.
    ("2026-12-05T10:00", 1, "2026-12-07T10:00"),
    ("2026-12-01T09:00", 5, "2026-12-08T09:00"),
])
def test_business_days_skip_weekends_and_keep_the_time_of_day(start, days, end) -> None:
    tz = "America/Sao_Paulo"
    local = dt.datetime.fromisoformat(start).replace(tzinfo=__import__("zoneinfo").ZoneInfo(tz))
    got = parse_duration(f"{days} business days" if days > 1 else "1 business day").after(local, tz)
    assert got.astimezone(local.tzinfo).replace(tzinfo=None) == dt.datetime.fromisoformat(end)


def test_business_days_keep_the_wall_clock_across_a_dst_change() -> None:
    tz = "Europe/Paris"  # clocks go back on Sunday 2026-10-25
    start = dt.datetime(2026, 10, 23, 9, 0, tzinfo=__import__("zoneinfo").ZoneInfo(tz))
    got = parse_duration("1 business day").after(start.astimezone(dt.UTC), tz)
    assert got == dt.datetime(2026, 10, 26, 8, 0, tzinfo=dt.UTC)  # 09:00 CET


def test_a_send_takes_delay_or_at_not_both_and_at_must_be_aware() -> None:
    assert due(None, None, where="s") is None
    with pytest.raises(PayloadError, match="not both"):
        due("1h", dt.datetime.now(dt.UTC), where="s")
    with pytest.raises(PayloadError, match="timezone-aware"):
        due(None, dt.datetime(2026, 1, 1), where="s")


def test_a_wait_key_is_filled_from_the_payload_or_names_what_is_missing() -> None:
    assert fill_key("order-{order.id}", {"order": {"id": 7}}, where="w") == "order-7"
    with pytest.raises(PayloadError, match="no 'order_id'"):
        fill_key("{order_id}", {}, where="wait shop/payment")
