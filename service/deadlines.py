"""Deadlines of a letter, in the bank's local time.

Response (处理决定): 《银行业保险业消费投诉处理管理办法》 asks for a decision within 15 days of
accepting a complaint; a complex case may extend to 30 days, and with the approval of the superior
institution to 60 at most. Days are calendar days counted from the day after acceptance (the day
of acceptance itself does not count); the deadline is the end of the last day. The service takes
the request's `received_at` as its acceptance.

Acknowledgement (签收): a number of working days after the letter is issued (Monday to Friday,
less the routing file's holidays, plus its 调休 working days), again to the end of the last day.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

RESPONSE_PERIODS = (15, 30, 60)
DUE_SOON_DAYS = 3  # "due soon" in the digest and the console: a response deadline within three days


class WorkCalendar:
    def __init__(self, holidays: Iterable[date] = (), workdays: Iterable[date] = ()) -> None:
        self.holidays, self.workdays = frozenset(holidays), frozenset(workdays)

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: date, n: int) -> date:
        """The n-th working day after `start`; n = 0 is `start` itself."""
        day = start
        while n > 0:
            day += timedelta(days=1)
            if self.is_working_day(day):
                n -= 1
        return day


def end_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after `day` in `zone`, as UTC: "by the end of day" is "before this"."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def last_day(deadline: datetime, zone: ZoneInfo) -> date:
    """The day a deadline from `end_of_day` falls on, for printing."""
    return (deadline.astimezone(zone) - timedelta(microseconds=1)).date()


def response_due(received_at: datetime, days: int, zone: ZoneInfo) -> datetime:
    return end_of_day(received_at.astimezone(zone).date() + timedelta(days=days), zone)


def ack_due(issued_at: datetime, working_days: int, calendar: WorkCalendar, zone: ZoneInfo) -> datetime:
    return end_of_day(calendar.add_working_days(issued_at.astimezone(zone).date(), working_days), zone)
