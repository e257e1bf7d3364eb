"""The working-day calendar that letters count acknowledgement deadlines in (service.letters.deadlines).

Working days are the State Council's: Monday to Friday less the public holidays, plus the
调休 weekend days worked in exchange, as the `chinesecalendar` package records them
(`WorkCalendar.china`), with the routing file's `calendar.holidays` / `calendar.workdays` on top (a
local closure; a year the State Council has published before the package has).

Coverage: the package knows the years it was released with (1.11.0: 2004-2026); the routing file may
declare more (`calendar.years`, once it lists that year's whole schedule). A day of any other year is
never guessed to follow the weekend-only rule: `WorkCalendar.is_working_day` and `add_working_days`
raise `CalendarNotCovered`, and `calendar_notices` (run at start-up) refuses a calendar that does not
cover today and warns from `YEAR_END_NOTICE_DAYS` before the year's end while the next is missing.
A letter cannot wait for the calendar, so an acknowledgement count that runs into an uncovered year is
computed with `uncovered_as_working=True`: every day of that year, weekends included, counts as a
working day. That is the earliest the deadline could fall under any schedule the State Council might
publish (a holiday only removes working days; a 调休 day adds one, at most every day is one), so the
department is chased early rather than late; the caller flags such a deadline (the letter's history
says so, and the log). This module does no I/O: callers build a calendar and pass it in. It lives
outside service/letters/ because the routing file configures it: service.routing builds the
calendar, and letters count in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import chinese_calendar

# The State Council publishes the next year's schedule between late October and mid November:
# from about 1 November a calendar without the next year warns at start-up.
YEAR_END_NOTICE_DAYS = 61
PACKAGE_VERSION = chinese_calendar.__version__
# The years the package holds data for: it has no gaps, and refuses any other (NotImplementedError).
PACKAGE_YEARS = range(min(chinese_calendar.holidays).year, max(chinese_calendar.holidays).year + 1)


class CalendarNotCovered(Exception):
    """A day of a year the working-day calendar holds no schedule for; str() is one line saying how to add it."""

    def __init__(self, year: int) -> None:
        self.year = year
        super().__init__(
            f"the working-day calendar does not cover {year} (chinesecalendar {PACKAGE_VERSION} has "
            f"{PACKAGE_YEARS[0]}-{PACKAGE_YEARS[-1]}): upgrade chinesecalendar once it has {year}, or list the "
            f"State Council's {year} holidays and 调休 workdays under the routing file's calendar.holidays / "
            f"calendar.workdays and add {year} to calendar.years")


class WorkCalendar:
    """Which days are working days, and for which years that is known.

    `WorkCalendar(holidays, workdays)` is exactly the rule given (Monday to Friday less `holidays`,
    plus `workdays`) for the `years` given, or for every year when `years` is None: a rule stated
    whole, as a test states one. The service's calendar is `WorkCalendar.china(...)`.
    """

    def __init__(self, holidays: Iterable[date] = (), workdays: Iterable[date] = (), *,
                 years: Iterable[int] | None = None) -> None:
        self.holidays, self.workdays = frozenset(holidays), frozenset(workdays)
        self.years = None if years is None else frozenset(years)

    @classmethod
    def china(cls, holidays: Iterable[date] = (), workdays: Iterable[date] = (),
              years: Iterable[int] = ()) -> WorkCalendar:
        """The State Council's holidays and 调休 workdays from chinesecalendar, overridden by
        `holidays` (closed, whatever the package says) and `workdays` (open, whatever it says);
        covering the package's years and `years`."""
        holidays, workdays = frozenset(holidays), frozenset(workdays)
        official_holidays = frozenset(chinese_calendar.holidays) - workdays
        official_workdays = frozenset(chinese_calendar.workdays) - holidays
        return cls(official_holidays | holidays, official_workdays | workdays,
                   years=frozenset(PACKAGE_YEARS) | frozenset(years))

    def covers(self, year: int) -> bool:
        return self.years is None or year in self.years

    def is_working_day(self, day: date) -> bool:
        """Raises CalendarNotCovered for a day of a year the calendar does not cover."""
        if not self.covers(day.year):
            raise CalendarNotCovered(day.year)
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: date, n: int, *, uncovered_as_working: bool = False) -> date:
        """The n-th working day after `start`; n = 0 is `start` itself. A day of an uncovered year
        raises CalendarNotCovered, or with `uncovered_as_working` counts as a working day (the
        earliest the result could be; see the module's docstring)."""
        day = start
        while n > 0:
            day += timedelta(days=1)
            if (uncovered_as_working and not self.covers(day.year)) or self.is_working_day(day):
                n -= 1
        return day


def calendar_notices(calendar: WorkCalendar, today: date, notice_days: int = YEAR_END_NOTICE_DAYS) -> list[str]:
    """What start-up says about `calendar` on `today`: raises CalendarNotCovered when today's year
    is not covered; a warning when the next year is not, from `notice_days` before it begins."""
    if not calendar.covers(today.year):
        raise CalendarNotCovered(today.year)
    following = today.year + 1
    if calendar.covers(following) or (date(following, 1, 1) - today).days > notice_days:
        return []
    return [f"{CalendarNotCovered(following)}; until then an acknowledgement deadline that runs into {following} "
            f"counts every day of {following} as a working day (the earliest it could be) and the letter says so"]

