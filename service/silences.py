"""Silences: mute alerts for a department, category, cause or branch (every field given must
match) from `starts_at` until `ends_at`.

What a silence does: an alert that matches is still recorded (status `silenced`, with the
silence's id, and it still collects repeats under its dedup key) but gets no letter and sends
nothing. A repeat after the silence has ended makes it `open` again, so the matter reaches the
department then. Regulator referrals (the `alert_channels`) are never muted: the bank must answer
them whatever it has silenced.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models.text import clean
from service.auth import Principal
from service.clock import Clock, to_utc
from service.db import Database
from service.errors import NotFound, invalid
from service.schemas import SilenceIn, SilenceOut, SilencePage
from service.settings import Settings
from service.tables import Silence


def _fits(column, value: str | None):
    return column.is_(None) if value is None else or_(column.is_(None), column == value)


def silence_for(session: Session, now: datetime, department: str | None, category: str | None,
                cause: str | None, branch: str | None) -> Silence | None:
    """The active silence (the one ending last) that mutes an alert with these labels, or None."""
    query = (select(Silence).where(Silence.starts_at <= now, Silence.ends_at > now,
                                   _fits(Silence.department, department), _fits(Silence.category, category),
                                   _fits(Silence.cause, cause), _fits(Silence.branch, branch))
             .order_by(Silence.ends_at.desc(), Silence.id).limit(1))
    return session.scalar(query)


def out(s: Silence, now: datetime) -> SilenceOut:
    return SilenceOut(id=s.id, department=s.department, category=s.category, cause=s.cause, branch=s.branch,
                      starts_at=s.starts_at, ends_at=s.ends_at, active=s.starts_at <= now < s.ends_at,
                      comment=s.comment, created_at=s.created_at)


class Silences:
    def __init__(self, db: Database, settings: Settings, clock: Clock, departments: Iterable[str]) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.departments = sorted(departments)

    def create(self, principal: Principal, body: SilenceIn) -> SilenceOut:
        s = self.settings
        for field, value, allowed in (("department", body.department, self.departments),
                                      ("category", body.category, s.categories), ("cause", body.cause, s.causes)):
            if value and value not in allowed:
                raise invalid(field, f"{value!r} is not a known {field}; use one of {', '.join(allowed)}")
        now = self.clock.now()
        starts = self._utc(body.starts_at, "starts_at") if body.starts_at else now
        ends = self._utc(body.ends_at, "ends_at")
        if ends <= starts:
            raise invalid("ends_at", "must be later than starts_at")
        if ends <= now:
            raise invalid("ends_at", "lies in the past: the silence would never apply")
        row = Silence(department=body.department or None, category=body.category or None, cause=body.cause or None,
                      branch=clean(body.branch) if body.branch else None, starts_at=starts, ends_at=ends,
                      comment=clean(body.comment) if body.comment else None, api_key_id=principal.key_id,
                      created_at=now)
        with self.db.transaction() as session:
            session.add(row)
            session.flush()
            return out(row, now)

    def list(self, active: bool | None) -> SilencePage:
        now = self.clock.now()
        query = select(Silence)
        if active is True:
            query = query.where(Silence.starts_at <= now, Silence.ends_at > now)
        elif active is False:
            query = query.where(or_(Silence.starts_at > now, Silence.ends_at <= now))
        with self.db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(Silence.ends_at.desc(), Silence.id.desc()))
            return SilencePage(items=[out(r, now) for r in rows], total=total)

    def get(self, silence_id: int) -> SilenceOut:
        with self.db.reading() as session:
            return out(self._find(session, silence_id), self.clock.now())

    def expire(self, silence_id: int) -> SilenceOut:
        """Ends a silence now; the record stays (alerts it muted point to it)."""
        now = self.clock.now()
        with self.db.transaction() as session:
            row = self._find(session, silence_id)
            if row.ends_at > now:
                row.ends_at = max(now, row.starts_at)
            return out(row, now)

    def _utc(self, moment: datetime, field: str) -> datetime:
        try:
            return to_utc(moment, self.settings)
        except OverflowError:  # year 1 in a zone east of UTC falls before year 1
            raise invalid(field, "lies outside the supported range of times") from None

    @staticmethod
    def _find(session: Session, silence_id: int) -> Silence:
        row = session.get(Silence, silence_id)
        if row is None:
            raise NotFound(f"silence_id: no silence {silence_id}", field="silence_id")
        return row
