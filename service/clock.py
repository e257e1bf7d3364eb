"""The time alerting, letters and delivery read: injectable, so deadlines and escalation can be
tested without waiting (`ManualClock`); and `to_utc`, how a time a caller sends is read."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

from service.errors import invalid
from service.settings import Settings


class Clock(Protocol):
    def now(self) -> datetime:
        """An aware UTC datetime."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that moves only when told to (tests, replays)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | None = None, **kwargs: float) -> datetime:
        with self._lock:
            self._now += delta if delta is not None else timedelta(**kwargs)
            return self._now

    def set(self, moment: datetime) -> None:
        with self._lock:
            self._now = moment.astimezone(UTC)


def to_utc(moment: datetime, settings: Settings, field: str | None = None) -> datetime:
    """A time without an offset is local time in the configured zone. With `field`, a time that
    cannot be shifted (within hours of year 1 or 9999) is refused as Invalid naming it, instead of an OverflowError."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=settings.zone)
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        if field is None:
            raise
        raise invalid(field, "is out of range") from None
