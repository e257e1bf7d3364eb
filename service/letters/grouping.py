"""Which alerts go into which letter: one letter per department per window of
`group_window_minutes` (fixed windows, counted from the epoch in UTC) lists all its alerts opened
in that window; the worker's flusher issues it once the window has closed. With a window of 0 each
alert gets its own letter, in the intake transaction (`immediate_key`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, text
from sqlalchemy.orm import Session

from service.silences import silence_for
from service.tables import Alert
from service.vocab import AlertStatus

FLUSH_LOCK_KEY = 0x5842_4C45  # advisory lock id ("XBLE") serialising letter flushes on PostgreSQL
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Group:
    """The alerts of one letter to be: its department, members and `group_key`."""

    department: str
    alerts: list[Alert]
    key: str


def window_start(moment: datetime, minutes: int) -> datetime:
    if minutes <= 0:
        return moment
    size = timedelta(minutes=minutes)
    return EPOCH + ((moment - EPOCH) // size) * size


def immediate_key(alert: Alert) -> str:
    return f"{alert.department}|immediate|{alert.id}"


def take_flush_lock(session: Session) -> bool:
    """One flusher at a time: two that each SKIP LOCKED part of a window's alerts would write two
    letters for one department and window. A flusher that finds the lock taken leaves the round
    to the one holding it. (SQLite's single writer serialises flushers already.)"""
    return session.get_bind().dialect.name != "postgresql" or bool(session.execute(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FLUSH_LOCK_KEY}).scalar())


def due_groups(session: Session, now: datetime, minutes: int, *, force: bool = False) -> list[Group]:
    """The letters due: alerts without a letter whose window has closed (`force`: all of them),
    grouped, oldest window first. Alerts another transaction holds are skipped (SKIP LOCKED) and
    left for the next round; an alert silenced while it waited is marked so and left out."""
    # A lapsed alert never lettered (its window passed while no worker ran) is still owed a letter.
    waiting = or_(Alert.status == AlertStatus.OPEN,
                  and_(Alert.status == AlertStatus.LAPSED, Alert.silence_id.is_(None)))
    query = select(Alert).where(waiting, Alert.letter_id.is_(None))
    if not force and minutes > 0:
        query = query.where(Alert.opened_at < window_start(now, minutes))
    alerts = list(session.scalars(query.order_by(Alert.id).with_for_update(skip_locked=True)))
    groups: dict[tuple[str, datetime], list[Alert]] = defaultdict(list)
    for a in alerts:
        silence = silence_for(session, now, a.department, a.category, a.cause, a.branch) \
            if a.reason != "referral" else None
        if silence is not None:  # silenced while it waited for its window
            a.status, a.silence_id = AlertStatus.SILENCED, silence.id
            continue
        groups[(a.department, window_start(a.opened_at, minutes) if minutes > 0 else a.opened_at)].append(a)
    out = []
    for (department, start), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[1][0].id)):
        if minutes <= 0:
            out.extend(Group(department, [a], immediate_key(a)) for a in members)
        else:
            out.append(Group(department, members, f"{department}|{start:%Y%m%dT%H%MZ}|{members[0].id}"))
    return out
