"""When the weekly digest goes out: `MON 08:00` (weekday and local time in the bank's zone), or `off`.

The scheduled digest of a week is due at the first such moment after the week ends, so `MON 08:00`
sends the week just ended on Monday morning. No imports from the service: settings validate with it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_PATTERN = re.compile(r"^\s*([A-Za-z]{3}|[1-7])\s+(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Schedule:
    weekday: int  # ISO: 1 = Monday
    at: time

    def __str__(self) -> str:
        return f"{WEEKDAYS[self.weekday - 1]} {self.at:%H:%M}"


def parse_schedule(text: str) -> Schedule | None:
    """`MON 08:00` (or `1 08:00`) → Schedule; `off` → None; ValueError otherwise."""
    if text.strip().lower() in ("off", "none", "disabled", ""):
        return None
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"{text!r}: write a weekday and a time, e.g. 'MON 08:00', or 'off'")
    day, hour, minute = match.group(1).upper(), int(match.group(2)), int(match.group(3))
    if day.isdigit():
        weekday = int(day)
    elif day in WEEKDAYS:
        weekday = WEEKDAYS.index(day) + 1
    else:
        raise ValueError(f"{text!r}: the weekday is one of {', '.join(WEEKDAYS)}")
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r}: the time is HH:MM, 00:00 to 23:59")
    return Schedule(weekday, time(hour, minute))


def due_at(schedule: Schedule, week_end: datetime, zone) -> datetime:
    """The first scheduled moment at or after `week_end` (the Monday 00:00 that ends the week), in UTC."""
    monday = week_end.astimezone(zone).date()
    day = monday + timedelta(days=schedule.weekday - 1)
    return datetime.combine(day, schedule.at, zone).astimezone(UTC)
