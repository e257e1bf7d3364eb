"""ISO weeks (`2026-W47`) as windows of time in the bank's zone.

A week runs from Monday 00:00 to the next Monday 00:00 local time; the window is half-open and its
ends are converted to UTC for the queries (the database stores UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")


class WeekError(ValueError):
    """A week that cannot be used; str() says why, for a 422 naming the field."""


@dataclass(frozen=True)
class Week:
    year: int
    number: int
    zone: ZoneInfo

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.number:02d}"

    @property
    def monday(self) -> date:
        return date.fromisocalendar(self.year, self.number, 1)

    @property
    def start(self) -> datetime:
        """Monday 00:00 local, as aware UTC."""
        return datetime.combine(self.monday, time(), self.zone).astimezone(UTC)

    @property
    def end(self) -> datetime:
        """The next Monday 00:00 local (exclusive), as aware UTC; not start + 7 days where DST applies."""
        return datetime.combine(self.monday + timedelta(days=7), time(), self.zone).astimezone(UTC)

    def shift(self, weeks: int) -> Week:
        year, number, _ = (self.monday + timedelta(weeks=weeks)).isocalendar()
        return Week(year, number, self.zone)

    def last_year(self) -> Week:
        """The same ISO week number a year earlier; week 53 maps to 52 when that year has no 53rd."""
        number = min(self.number, weeks_in_year(self.year - 1))
        return Week(self.year - 1, number, self.zone)

    def days(self) -> list[date]:
        return [self.monday + timedelta(days=i) for i in range(7)]

    def __str__(self) -> str:
        return self.label


def weeks_in_year(year: int) -> int:
    return date(year, 12, 28).isocalendar()[1]  # 28 December always lies in the year's last ISO week


def week_of(moment: datetime, zone: ZoneInfo) -> Week:
    year, number, _ = moment.astimezone(zone).isocalendar()
    return Week(year, number, zone)


def last_complete_week(now: datetime, zone: ZoneInfo) -> Week:
    return week_of(now, zone).shift(-1)


def parse_week(text: str, zone: ZoneInfo, now: datetime | None = None) -> Week:
    """`YYYY-Www` → Week; WeekError for a malformed week, one the year does not have, or (given
    `now`) one that has not begun."""
    # Exactly as the API schema states it: a week with blanks around it, or blanks alone, is refused
    # rather than read as some week (a form feed alone once sent the default week's digest).
    match = WEEK_PATTERN.fullmatch(text)
    if not match:
        raise WeekError(f"{text!r} is not an ISO week; write YYYY-Www, e.g. 2026-W05")
    year, number = int(match.group(1)), int(match.group(2))
    if year < 1900:
        raise WeekError(f"{text!r}: the year must be 1900 or later")
    if not 1 <= number <= weeks_in_year(year):
        raise WeekError(f"{text!r}: {year} has weeks W01 to W{weeks_in_year(year):02d}")
    week = Week(year, number, zone)
    if now is not None and week.start > now:
        raise WeekError(f"{week.label} lies in the future; the current week is {week_of(now, zone).label}")
    return week
