"""The working calendar SLA deadlines are counted on: office hours on working days, with China's public
holidays and make-up working days (调休) from the `chinese-calendar` package, and a city's own
exceptions on top.

A deadline in working days follows the administrative rule that the day a case arrives does not count:
`3wd` ends when the office closes on the third working day after it. Working hours (`8wh`) are counted
through office hours only. Clock units (`30m`, `4h`, `2d`) ignore the calendar: emergencies do not wait
for Monday.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from citybrain.disposal.catalogue.spec import Duration

log = logging.getLogger(__name__)
DEFAULT_HOURS = ((time(8, 30), time(12, 0)), (time(13, 0), time(17, 30)))
CHINA = ZoneInfo("Asia/Shanghai")
MAX_DAYS = 3660  # no deadline is ten years of working days away; a calendar with no working days is refused


class WorkingCalendar:
    """Working days and office hours in one time zone. `holidays` and `workdays` are the city's own
    exceptions (they win over the national calendar); `hours` the office's opening periods of a day."""

    def __init__(
        self,
        *,
        zone: ZoneInfo = CHINA,
        hours: Iterable[tuple[time, time]] = DEFAULT_HOURS,
        holidays: Iterable[date] = (),
        workdays: Iterable[date] = (),
    ) -> None:
        self.zone = zone
        self.hours = tuple(sorted(hours))
        if not self.hours or any(start >= end for start, end in self.hours):
            raise ValueError("office hours are (opening, closing) pairs with opening before closing")
        self.holidays = frozenset(holidays)
        self.workdays = frozenset(workdays)
        self._day_seconds = sum(_seconds(end) - _seconds(start) for start, end in self.hours)
        self._uncovered: set[int] = set()
        # Every SLA stage asks about the same few days; chinese_calendar validates and looks each one up anew.
        self._verdicts: dict[date, bool] = {}

    # ------------------------------------------------------------------ days

    def is_workday(self, day: date) -> bool:
        verdict = self._verdicts.get(day)
        if verdict is None:
            verdict = self._verdicts[day] = self._is_workday(day)
        return verdict

    def _is_workday(self, day: date) -> bool:
        if day in self.holidays:
            return False
        if day in self.workdays:
            return True
        try:
            import chinese_calendar

            return bool(chinese_calendar.is_workday(day))
        except NotImplementedError:
            # The State Council publishes each year's holidays late in the year before; until the package
            # knows the year, weekends are the only days off (a city adds its holidays as exceptions).
            if day.year not in self._uncovered:
                self._uncovered.add(day.year)
                log.warning("no national holiday data for %d: counting weekends only", day.year)
            return day.weekday() < 5

    def _next_workday(self, day: date) -> date:
        for _ in range(MAX_DAYS):
            day += timedelta(days=1)
            if self.is_workday(day):
                return day
        raise ValueError("the calendar has no working day in ten years")

    # ------------------------------------------------------------------ working time

    def _periods(self, day: date) -> list[tuple[datetime, datetime]]:
        if not self.is_workday(day):
            return []
        return [(datetime.combine(day, start, self.zone), datetime.combine(day, end, self.zone))
                for start, end in self.hours]

    def add_working_seconds(self, start: datetime, seconds: float) -> datetime:
        """The moment `seconds` of office time after `start` (which may fall outside office hours)."""
        moment = start.astimezone(self.zone)
        left = max(0.0, seconds)
        day = moment.date()
        for _ in range(MAX_DAYS):
            for opening, closing in self._periods(day):
                begin = max(opening, moment)
                if begin >= closing:
                    continue
                available = (closing - begin).total_seconds()
                if left <= available:
                    return (begin + timedelta(seconds=left)).astimezone(start.tzinfo)
                left -= available
            day += timedelta(days=1)
            moment = datetime.combine(day, time(0), self.zone)
        raise ValueError("the calendar has no working time in ten years")

    def working_seconds(self, start: datetime, end: datetime) -> float:
        """Office time between two moments (0 when end is not after start)."""
        if end <= start:
            return 0.0
        first, last = start.astimezone(self.zone), end.astimezone(self.zone)
        total = 0.0
        day = first.date()
        while day <= last.date():
            for opening, closing in self._periods(day):
                begin, finish = max(opening, first), min(closing, last)
                if finish > begin:
                    total += (finish - begin).total_seconds()
            day += timedelta(days=1)
        return total

    # ------------------------------------------------------------------ deadlines

    def deadline(self, start: datetime, duration: Duration, *, share: float = 1.0) -> datetime:
        """When a stage that began at `start` and may last `duration` is due (or, with `share` < 1, when
        its warning goes out)."""
        if not duration.working:
            return start + duration.clock * share
        amount = duration.amount * share
        if duration.unit == "wd" and amount == int(amount):
            day = start.astimezone(self.zone).date()
            for _ in range(int(amount)):
                day = self._next_workday(day)
            return datetime.combine(day, self.hours[-1][1], self.zone).astimezone(start.tzinfo)
        hours = amount if duration.unit == "wh" else amount * self._day_seconds / 3600
        return self.add_working_seconds(start, hours * 3600)

    def shift(self, due: datetime, paused_from: datetime, paused_to: datetime, duration: Duration) -> datetime:
        """A deadline pushed back by a pause (a suspended case): by the clock time paused for clock units,
        by the office time paused for working units."""
        if not duration.working:
            return due + (paused_to - paused_from)
        return self.add_working_seconds(due, self.working_seconds(paused_from, paused_to))


def _seconds(moment: time) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second
