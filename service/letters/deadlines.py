"""Deadlines of a letter, in the bank's local time.

Response (处理决定): 《银行业保险业消费投诉处理管理办法》 asks for a decision within 15 days of
accepting a complaint; a complex case may extend to 30 days, and with the approval of the superior
institution to 60 at most. Days are calendar days counted from the day after acceptance (the day
of acceptance itself does not count); the deadline is the end of the last day. The service takes
the request's `received_at` as its acceptance.

Acknowledgement (签收): a number of working days after the letter is issued, again to the end of the
last day, counted in the working-day calendar of service.workdays (chinesecalendar with the routing
file's overrides; what happens when a count runs into a year it does not cover is explained there).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from service.workdays import WorkCalendar

RESPONSE_PERIODS = (15, 30, 60)
DUE_SOON_DAYS = 3  # "due soon" in the digest and the console: a response deadline within three days


def end_of_day(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after `day` in `zone`, as UTC: "by the end of day" is "before this"."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)


def last_day(deadline: datetime, zone: ZoneInfo) -> date:
    """The day a deadline from `end_of_day` falls on, for printing."""
    return (deadline.astimezone(zone) - timedelta(microseconds=1)).date()


def response_due(received_at: datetime, days: int, zone: ZoneInfo) -> datetime:
    return end_of_day(received_at.astimezone(zone).date() + timedelta(days=days), zone)


def ack_due(issued_at: datetime, working_days: int, calendar: WorkCalendar, zone: ZoneInfo, *,
            uncovered_as_working: bool = False) -> datetime:
    """End of the `working_days`-th working day after the local day of issue. Raises
    CalendarNotCovered when the count runs into an uncovered year, unless `uncovered_as_working`."""
    day = calendar.add_working_days(issued_at.astimezone(zone).date(), working_days,
                                    uncovered_as_working=uncovered_as_working)
    return end_of_day(day, zone)
