"""Which letters are overdue, and which are owed a reminder (催办) now."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.tables import Letter
from service.vocab import LetterStatus

OVERDUE_WORDS = {"ack": "逾期未签收", "response": "逾期未反馈处理结果"}  # in the reminder's subject and note


def overdue(letter: Letter, now: datetime) -> list[str]:
    """The deadlines `letter` has missed by `now`: "ack", "response", both or none."""
    out = []
    if letter.status == LetterStatus.ISSUED and letter.ack_due_at and letter.ack_due_at <= now:
        out.append("ack")
    if letter.status != LetterStatus.RESOLVED and letter.response_due_at and letter.response_due_at <= now:
        out.append("response")
    return out


def owed_reminders(session: Session, now: datetime, interval_hours: float, limit: int) -> list[Letter]:
    """Letters past a deadline (not acknowledged by the acknowledgement deadline, or not resolved by
    the response deadline) not reminded within `interval_hours`, row-locked (others skipped). None
    before the acknowledgement deadline: a letter about old requests (a replay, a late flush) may be
    overdue on the day it is issued, and says so itself; the department still gets its days to
    acknowledge."""
    quiet_since = now - timedelta(hours=interval_hours)
    query = (select(Letter).where(
        Letter.status != LetterStatus.RESOLVED, Letter.ack_due_at <= now,
        or_(Letter.status == LetterStatus.ISSUED, Letter.response_due_at <= now),
        or_(Letter.reminded_at.is_(None), Letter.reminded_at <= quiet_since))
        .order_by(Letter.id).limit(limit).with_for_update(skip_locked=True))
    return list(session.scalars(query))
