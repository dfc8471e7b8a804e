"""The working calendar SLA deadlines are counted on: office hours, weekends, public holidays and
make-up working days (调休), a city's own exceptions, and years the national data does not cover yet."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citybrain.disposal.calendar import CHINA, WorkingCalendar
from citybrain.disposal.catalogue.spec import Duration

CALENDAR = WorkingCalendar()


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=CHINA)


@pytest.mark.parametrize(
    ("start", "duration", "due"),
    [
        (at(2026, 11, 25, 16, 0), "2h", at(2026, 11, 25, 18, 0)),  # clock time ignores office hours
        (at(2026, 11, 25, 16, 0), "4wh", at(2026, 11, 26, 11, 0)),  # 1.5 h today, 2.5 h tomorrow from 8:30
        (at(2026, 11, 27, 16, 0), "4wh", at(2026, 11, 30, 11, 0)),  # Friday → Monday
        (at(2026, 11, 25, 16, 0), "3wd", at(2026, 11, 30, 17, 30)),  # Thu, Fri, Mon; arrival day not counted
        (at(2026, 9, 30, 16, 0), "1wd", at(2026, 10, 8, 17, 30)),  # National Day (1-7 Oct) in between
        (at(2026, 11, 28, 10, 0), "8wh", at(2026, 11, 30, 17, 30)),  # Saturday: the clock starts Monday
        (at(2026, 11, 25, 12, 30), "1wh", at(2026, 11, 25, 14, 0)),  # lunch break skipped
    ],
)
def test_deadlines(start: datetime, duration: str, due: datetime) -> None:
    assert CALENDAR.deadline(start, Duration.parse(duration)) == due


def test_make_up_working_days_and_the_citys_own_exceptions() -> None:
    assert CALENDAR.is_workday(date(2026, 10, 1)) is False  # 国庆节
    assert CALENDAR.is_workday(date(2026, 11, 28)) is False  # an ordinary Saturday
    # 2026's make-up working days fall on weekend days the package knows about.
    import chinese_calendar

    make_up = [d for d in (date(2026, 1, 1) + timedelta(days=i) for i in range(365))
               if d.weekday() >= 5 and chinese_calendar.is_workday(d)]
    assert make_up and all(CALENDAR.is_workday(d) for d in make_up)
    city = WorkingCalendar(holidays=[date(2026, 11, 26)], workdays=[date(2026, 11, 28)])
    assert city.deadline(at(2026, 11, 25, 16, 0), Duration.parse("1wd")) == at(2026, 11, 27, 17, 30)
    assert city.deadline(at(2026, 11, 27, 9, 0), Duration.parse("1wd")) == at(2026, 11, 28, 17, 30)


def test_a_year_without_national_data_counts_weekends_only(caplog: pytest.LogCaptureFixture) -> None:
    calendar = WorkingCalendar()
    assert calendar.is_workday(date(2031, 1, 1)) is True  # a Wednesday; its holiday is not published yet
    assert calendar.is_workday(date(2031, 1, 4)) is False
    assert "no national holiday data for 2031" in caplog.text


def test_a_pause_shifts_the_deadline_by_the_office_time_it_took() -> None:
    duration = Duration.parse("8wh")
    due = CALENDAR.deadline(at(2026, 11, 25, 8, 30), duration)
    assert due == at(2026, 11, 25, 17, 30)
    shifted = CALENDAR.shift(due, at(2026, 11, 25, 10, 0), at(2026, 11, 26, 10, 0), duration)
    assert CALENDAR.working_seconds(due, shifted) == 8 * 3600  # a whole office day paused
    clock = Duration.parse("2h")
    assert CALENDAR.shift(at(2026, 11, 25, 12, 0), at(2026, 11, 25, 10, 0), at(2026, 11, 25, 11, 0), clock) == \
        at(2026, 11, 25, 13, 0)


def test_bad_office_hours_are_refused() -> None:
    with pytest.raises(ValueError, match="opening before closing"):
        WorkingCalendar(hours=[(time(18, 0), time(9, 0))])


@given(st.datetimes(min_value=datetime(2024, 1, 1), max_value=datetime(2026, 12, 20)),
       st.integers(min_value=1, max_value=60 * 40))
def test_working_time_added_is_working_time_between(start: datetime, minutes: int) -> None:
    begin = start.replace(tzinfo=CHINA)
    end = CALENDAR.add_working_seconds(begin, minutes * 60)
    assert end >= begin
    assert CALENDAR.working_seconds(begin, end) == pytest.approx(minutes * 60)
