"""The digest's figures, aggregated by the database (SQLite and PostgreSQL alike).

Each function runs one or two grouped queries over a time window and returns plain rows; no ORM
objects are loaded. Windows are half-open [start, end) in UTC. "At the week's end" is judged from
the timestamps (`closed_at`, `acknowledged_at` …), so a digest of a past week reads the same later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, literal, or_, select, text
from sqlalchemy.orm import Session

from service.digest.weeks import Week
from service.letters.deadlines import DUE_SOON_DAYS, RESPONSE_PERIODS, end_of_day, response_due
from service.tables import Alert, Complaint, ComplaintOutcome, Letter, LetterItem, OutboxMessage, UTCDateTime
from service.vocab import ComplaintStatus, OutboxStatus, RiskLevel

UNCLASSIFIED = "未分类"
HIGH = RiskLevel.HIGH
LIST_LIMIT = 50
EXCERPT_CHARS = 60


def _within(column, start: datetime, end: datetime) -> ColumnElement[bool]:
    return and_(column >= start, column < end)


def _count_if(condition) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _days_between(session: Session, earlier, later) -> ColumnElement[float]:
    """`later - earlier` in days, as the dialect can compute it."""
    if session.get_bind().dialect.name == "sqlite":
        return func.julianday(later) - func.julianday(earlier)
    return func.extract("epoch", later - earlier) / 86400.0


def _local_days_between(session: Session, earlier, later, week: Week) -> ColumnElement[int]:
    """Calendar days from `earlier`'s local date to `later`'s, as the regulation counts them
    (service.letters.deadlines: the deadline is the end of the N-th day after receipt). SQLite has no time
    zones: it shifts by the zone's offset at the week's end, exact for zones without DST."""
    zone = week.zone
    if session.get_bind().dialect.name == "sqlite":
        offset = week.end.astimezone(zone).utcoffset() or timedelta(0)
        shift = f"{int(offset.total_seconds() // 60):+d} minutes"
        return func.julianday(func.date(later, shift)) - func.julianday(func.date(earlier, shift))
    later_day = func.date(func.timezone(zone.key, later))
    earlier_day = func.date(func.timezone(zone.key, earlier))
    return later_day - earlier_day


def _deadline_cut(week: Week, days: int, offset_days: int = 0) -> datetime:
    """Requests received before this instant have their `days`-day deadline before the local
    Monday that ends the week (+ offset_days)."""
    return end_of_day(week.end.astimezone(week.zone).date() - timedelta(days=days + 1 - offset_days), week.zone)


def _open_at(moment: datetime) -> ColumnElement[bool]:
    return or_(Complaint.closed_at.is_(None), Complaint.closed_at >= moment)


def _excerpt():
    return func.substr(Complaint.text_masked, 1, EXCERPT_CHARS)


# --- volume -----------------------------------------------------------------------------------
def window_counts(session: Session, windows: list[tuple[datetime, datetime]]) -> list[tuple[int, int]]:
    """(requests, high-risk requests) per window, in one query; windows must not overlap."""
    if not windows:
        return []
    bucket = case(*[(_within(Complaint.received_at, s, e), i) for i, (s, e) in enumerate(windows)], else_=None)
    lo, hi = min(s for s, _ in windows), max(e for _, e in windows)
    # Grouped in an outer query: PostgreSQL cannot match a GROUP BY CASE whose bound times are new
    # parameters to the same CASE in the select list.
    inner = (select(bucket.label("bucket"), (Complaint.risk_level == HIGH).label("high"))
             .where(_within(Complaint.received_at, lo, hi)).subquery())
    rows = session.execute(select(inner.c.bucket, func.count(), _count_if(inner.c.high))
                           .group_by(inner.c.bucket))
    out = [(0, 0)] * len(windows)
    for b, n, high in rows:
        if b is not None:
            out[int(b)] = (int(n), int(high))
    return out


def first_received(session: Session) -> datetime | None:
    return session.scalar(select(func.min(Complaint.received_at)))


# --- breakdowns -------------------------------------------------------------------------------
def breakdown(session: Session, column, start: datetime, end: datetime,
              previous_start: datetime) -> list[tuple[str, int, int, int]]:
    """(label, this week, previous week, high-risk this week) by `column`, largest first."""
    this_week = _within(Complaint.received_at, start, end)
    query = (select(column, _count_if(this_week), _count_if(Complaint.received_at < start),
                    _count_if(and_(this_week, Complaint.risk_level == HIGH)))
             .where(_within(Complaint.received_at, previous_start, end)).group_by(column))
    rows = [(UNCLASSIFIED if lab is None else str(lab), int(n), int(p), int(h))
            for lab, n, p, h in session.execute(query)]
    return sorted(rows, key=lambda r: (-r[1], -r[2], r[0]))


@dataclass
class BranchFigures:
    branch: str
    count: int
    previous: int
    high_risk: int
    due: int
    closed_within_15: int
    open_over_15: int


def branches(session: Session, week: Week) -> list[BranchFigures]:
    """Per branch: volume this and last week, high-risk count, the 15-day cohort (deadline in this
    week) and how much of it closed in time, and open cases past their 15-day deadline at the
    week's end."""
    start, end, previous_start = week.start, week.end, week.shift(-1).start
    this_week = _within(Complaint.received_at, start, end)
    due_from, due_to = _deadline_cut(week, 15, -7), _deadline_cut(week, 15)
    due = _within(Complaint.received_at, due_from, due_to)
    in_time = and_(due, Complaint.closed_at.is_not(None),
                   _local_days_between(session, Complaint.received_at, Complaint.closed_at, week) <= 15)
    overdue = and_(Complaint.received_at < due_to, _open_at(end))
    query = (select(Complaint.branch, _count_if(this_week),
                    _count_if(_within(Complaint.received_at, previous_start, start)),
                    _count_if(and_(this_week, Complaint.risk_level == HIGH)),
                    _count_if(due), _count_if(in_time), _count_if(overdue))
             .where(Complaint.received_at < end,
                    or_(Complaint.received_at >= min(previous_start, due_from), _open_at(end)))
             .group_by(Complaint.branch))
    return [BranchFigures(str(b), *(int(v) for v in rest)) for b, *rest in session.execute(query)]


# --- high-risk requests -----------------------------------------------------------------------
def high_risk(session: Session, start: datetime, end: datetime) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Counts (total, with_alert, with_letter, closed) and the top rows by score, with alert and letter."""
    listed = (select(LetterItem.complaint_id, func.max(LetterItem.letter_id).label("letter_id"))
              .group_by(LetterItem.complaint_id).subquery())
    letter_id = func.coalesce(Alert.letter_id, listed.c.letter_id)
    closed = and_(Complaint.closed_at.is_not(None), Complaint.closed_at < end)
    base = (select(Complaint.id)
            .outerjoin(Alert, Complaint.alert_id == Alert.id)
            .outerjoin(listed, listed.c.complaint_id == Complaint.id)
            .where(_within(Complaint.received_at, start, end), Complaint.risk_level == HIGH))
    total, with_alert, with_letter, n_closed = session.execute(
        base.with_only_columns(func.count(), _count_if(Complaint.alert_id.is_not(None)),
                               _count_if(letter_id.is_not(None)), _count_if(closed))).one()
    counts = {"total": int(total), "with_alert": int(with_alert), "with_letter": int(with_letter),
              "closed": int(n_closed)}
    rows = session.execute(
        base.outerjoin(Letter, Letter.id == letter_id)
        .with_only_columns(Complaint.id, Complaint.external_id, Complaint.received_at, Complaint.branch,
                           Complaint.channel, Complaint.category, Complaint.cause, Complaint.risk_score,
                           _excerpt().label("excerpt"),
                           case((closed, ComplaintStatus.CLOSED.value), else_=ComplaintStatus.OPEN.value).label("status"),
                           Alert.id.label("alert_id"), Alert.status.label("alert_status"),
                           Alert.department, Letter.number.label("letter_number"),
                           Letter.status.label("letter_status"))
        .order_by(Complaint.risk_score.desc(), Complaint.received_at, Complaint.id).limit(LIST_LIMIT))
    return counts, [dict(r._mapping) for r in rows]


# --- letters ----------------------------------------------------------------------------------
def _letter_overdue(end: datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    unresolved = or_(Letter.resolved_at.is_(None), Letter.resolved_at >= end)
    ack = and_(Letter.ack_due_at < end, or_(Letter.acknowledged_at.is_(None), Letter.acknowledged_at >= end),
               unresolved)
    response = and_(Letter.response_due_at < end, unresolved)
    return ack, response


def dead_messages(session: Session, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
    """Dead outbox messages now (see schema.Letters.undeliverable): the count and the oldest."""
    dead = OutboxMessage.status == OutboxStatus.DEAD
    total = session.scalar(select(func.count()).select_from(OutboxMessage).where(dead)) or 0
    rows = session.execute(select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.event, OutboxMessage.receiver,
                                  OutboxMessage.attempts, OutboxMessage.last_error)
                           .where(dead).order_by(OutboxMessage.id).limit(limit)).mappings().all()
    return total, [dict(r) for r in rows]


def letters(session: Session, start: datetime, end: datetime) -> dict[str, Any]:
    ack_late, response_late = _letter_overdue(end)
    late = or_(ack_late, response_late)
    sent = _within(Letter.issued_at, start, end)
    acknowledged = _within(Letter.acknowledged_at, start, end)
    query = (select(Letter.department, _count_if(sent), _count_if(acknowledged),
                    _count_if(_within(Letter.resolved_at, start, end)), _count_if(late),
                    _count_if(ack_late), _count_if(response_late))
             .where(Letter.issued_at < end).group_by(Letter.department))
    by_department, totals = [], [0] * 6
    for department, *values in session.execute(query):
        values = [int(v) for v in values]
        totals = [a + b for a, b in zip(totals, values, strict=True)]
        if values[0] or values[1] or values[3]:
            by_department.append({"department": department, "sent": values[0], "acknowledged": values[1],
                                  "overdue": values[3]})
    by_department.sort(key=lambda r: (-r["overdue"], -r["sent"], r["department"]))
    kind = case((and_(ack_late, response_late), "ack+response"), (ack_late, "ack"), else_="response")
    items = [dict(r._mapping) for r in session.execute(
        select(Letter.number, Letter.department, Letter.issued_at, Letter.ack_due_at, Letter.response_due_at,
               Letter.status, kind.label("overdue"))
        .where(Letter.issued_at < end, late).order_by(Letter.issued_at, Letter.id).limit(LIST_LIMIT))]
    return {"sent": totals[0], "acknowledged": totals[1], "resolved": totals[2], "overdue": totals[3],
            "overdue_ack": totals[4], "overdue_response": totals[5], "by_department": by_department,
            "overdue_items": items}


# --- handling time and deadlines --------------------------------------------------------------
def handling(session: Session, week: Week) -> dict[str, Any]:
    """Closings of the week (durations for the median), the 15-day cohort, open cases by age at
    the week's end, and open cases whose next limit (15, 30 or 60 days) falls in the 3 days after."""
    start, end = week.start, week.end
    # The week's closings, one (days, calendar days) pair per row: the caller takes the median.
    closings = [(float(x), int(n)) for x, n in session.execute(
        select(_days_between(session, Complaint.received_at, Complaint.closed_at),
               _local_days_between(session, Complaint.received_at, Complaint.closed_at, week))
        .where(_within(Complaint.closed_at, start, end)))]
    due = _within(Complaint.received_at, _deadline_cut(week, 15, -7), _deadline_cut(week, 15))
    in_time = and_(Complaint.closed_at.is_not(None),
                   _local_days_between(session, Complaint.received_at, Complaint.closed_at, week) <= 15)
    due_n, due_in_time = session.execute(select(func.count(), _count_if(in_time)).where(due)).one()
    open_now = and_(Complaint.received_at < end, _open_at(end))
    open_total, over15, over30, over60 = session.execute(
        select(func.count(), *[_count_if(Complaint.received_at < _deadline_cut(week, n)) for n in RESPONSE_PERIODS])
        .where(open_now)).one()
    deadline = case(*[(_within(Complaint.received_at, _deadline_cut(week, n), _deadline_cut(week, n, DUE_SOON_DAYS)),
                       n) for n in RESPONSE_PERIODS], else_=None)
    soon_rows = session.execute(
        select(Complaint.id, Complaint.external_id, Complaint.branch, Complaint.category, Complaint.received_at,
               deadline.label("deadline_days"), _excerpt().label("excerpt"))
        .where(open_now, deadline.is_not(None)))
    due_soon = []
    for r in soon_rows:
        item = dict(r._mapping)
        item["due_at"] = response_due(item["received_at"], item["deadline_days"], week.zone)
        item["due_date"] = (item["due_at"].astimezone(week.zone) - timedelta(microseconds=1)).date()
        item["age_days"] = round((end - item["received_at"]).total_seconds() / 86400, 1)
        due_soon.append(item)
    due_soon.sort(key=lambda r: (r["due_at"], r["id"]))
    return {"closings": closings, "due": int(due_n), "due_closed_within_15": int(due_in_time),
            "open_total": int(open_total), "open_over_15": int(over15), "open_over_30": int(over30),
            "open_over_60": int(over60), "due_soon_total": len(due_soon), "due_soon": due_soon[:LIST_LIMIT]}


# --- emerging topics --------------------------------------------------------------------------
_PHRASES_SQL = {
    # Each request counts once per phrase, whichever heads (category, cause, risk) name it.
    "sqlite": """
        SELECT phrase, SUM(cur), COUNT(*) - SUM(cur) FROM (
            SELECT DISTINCT c.id, json_extract(t.value, '$.phrase') AS phrase,
                   CASE WHEN c.received_at >= :split THEN 1 ELSE 0 END AS cur
            FROM complaints AS c, json_tree(c.prediction) AS t
            WHERE c.received_at >= :lo AND c.received_at < :hi
              AND t.type = 'object' AND t.path LIKE '$.%.phrases'
        ) AS p WHERE phrase IS NOT NULL AND length(phrase) >= 2 GROUP BY phrase""",
    "postgresql": """
        SELECT phrase, SUM(cur), COUNT(*) - SUM(cur) FROM (
            SELECT DISTINCT c.id, p #>> '{}' AS phrase,
                   CASE WHEN c.received_at >= :split THEN 1 ELSE 0 END AS cur
            FROM complaints AS c,
                 jsonb_path_query(c.prediction, 'lax $.*.phrases[*].phrase') AS p
            WHERE c.received_at >= :lo AND c.received_at < :hi
        ) AS p WHERE phrase IS NOT NULL AND length(phrase) >= 2 GROUP BY phrase""",
}


def phrase_counts(session: Session, lo: datetime, split: datetime, hi: datetime) -> list[tuple[str, int, int]]:
    """(phrase, requests naming it in [split, hi), requests naming it in [lo, split))."""
    dialect = session.get_bind().dialect.name
    stmt = text(_PHRASES_SQL[dialect]).bindparams(
        *[bindparam(n, type_=UTCDateTime()) for n in ("lo", "split", "hi")])
    return [(str(p), int(cur), int(base)) for p, cur, base in
            session.execute(stmt, {"lo": lo, "split": split, "hi": hi})]


# --- model health -----------------------------------------------------------------------------
def score_summary(session: Session, start: datetime, end: datetime, bins: int = 10) -> dict[str, Any]:
    """Counts of this week's risk scores per tenth of [0, 1] (the last bin closed), needs-review count,
    and the model versions that scored the week."""
    score = Complaint.risk_score
    edges = [i / bins for i in range(bins + 1)]
    columns = [_count_if(and_(score >= edges[i], score < edges[i + 1] if i < bins - 1 else score <= literal(1.0)))
               for i in range(bins)]
    week = _within(Complaint.received_at, start, end)
    total, scored, review, *hist = session.execute(
        select(func.count(), func.count(score), _count_if(Complaint.needs_review.is_(True)), *columns)
        .where(week)).one()
    versions = session.execute(select(Complaint.model_version, func.count()).where(week)
                               .group_by(Complaint.model_version).order_by(func.count().desc()))
    return {"total": int(total), "scored": int(scored), "needs_review": int(review),
            "histogram": [int(h) for h in hist], "versions": [(str(v), int(n)) for v, n in versions]}


# --- alert watch --------------------------------------------------------------------------------
def level_counts(session: Session, start: datetime, end: datetime) -> dict[str, int]:
    """Requests received in [start, end) per risk level (scored ones only)."""
    rows = session.execute(select(Complaint.risk_level, func.count())
                           .where(_within(Complaint.received_at, start, end), Complaint.risk_level.is_not(None))
                           .group_by(Complaint.risk_level))
    return {str(level): int(n) for level, n in rows}


def escalation_outcomes(session: Session, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Requests received in [start, end) whose escalation is known: the latest outcome that said
    escalated or not, with the risk level it was scored at and whether it raised an alert."""
    latest = (select(ComplaintOutcome.complaint_id, func.max(ComplaintOutcome.id).label("outcome_id"))
              .where(ComplaintOutcome.escalated.is_not(None)).group_by(ComplaintOutcome.complaint_id).subquery())
    rows = session.execute(
        select(Complaint.id, Complaint.external_id, Complaint.received_at, Complaint.branch, Complaint.channel,
               Complaint.category, Complaint.cause, Complaint.risk_level, Complaint.risk_score,
               _excerpt().label("excerpt"), Complaint.alert_id, ComplaintOutcome.escalated)
        .join(latest, latest.c.complaint_id == Complaint.id)
        .join(ComplaintOutcome, ComplaintOutcome.id == latest.c.outcome_id)
        .where(_within(Complaint.received_at, start, end))
        .order_by(Complaint.received_at, Complaint.id))
    return [dict(r._mapping) for r in rows]
