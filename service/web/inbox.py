"""The console's inbox: letters and alerts with the filters, sorting and counts a desk needs.

The API's /v1/letters filters by department and status only; the inbox also filters by risk level,
category, branch (any request of the letter) and issue date, sorts, and counts what is overdue or
due soon. Scoping is the API's: `service.letters.Access` for letters, the alert's department for
alerts, so a department sees only its own. "Overdue" is `Letters.overdue`'s rule in SQL: not
acknowledged by the acknowledgement deadline, or not resolved by the response deadline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Select, and_, case, exists, func, or_, select, true
from sqlalchemy.orm import Session

from service.db import Database
from service.letters import Access
from service.letters.deadlines import DUE_SOON_DAYS, end_of_day
from service.tables import Alert, Complaint, Letter, LetterItem
from service.vocab import LEVEL_RANK, RISK_LEVELS, AlertStatus, LetterStatus, labels

PAGE_SIZE = 20
# The acknowledgement window is itself only two working days: "soon" there means the last day.
ACK_SOON_DAYS = 1
# The status filter: the statuses' own labels, and for letters two states derived from the deadlines.
LETTER_STATUSES = {**labels(LetterStatus), "overdue": "已逾期", "due_soon": f"{DUE_SOON_DAYS}日内到期"}
ALERT_STATUSES = labels(AlertStatus)
LETTER_SORTS = {"issued": "发函时间", "response_due": "反馈期限", "ack_due": "签收期限", "risk": "风险等级",
                "number": "文号"}
ALERT_SORTS = {"opened": "预警时间", "last_seen": "最近来访", "risk": "风险等级", "occurrences": "来访次数"}

View = Literal["letters", "alerts"]


@dataclass
class InboxQuery:
    """The inbox's query string, checked; what could not be read is dropped and named in `errors`."""

    view: View = "letters"
    status: str | None = None
    risk_level: str | None = None
    category: str | None = None
    branch: str | None = None
    department: str | None = None
    date_from: date | None = None
    date_to: date | None = None
    sort: str = "issued"
    descending: bool = True
    page: int = 1
    errors: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, params: dict[str, str], categories: list[str]) -> InboxQuery:
        q = cls()
        errors = q.errors
        view = params.get("view") or "letters"
        q.view = view if view in ("letters", "alerts") else "letters"  # type: ignore[assignment]
        statuses = LETTER_STATUSES if q.view == "letters" else ALERT_STATUSES
        sorts = LETTER_SORTS if q.view == "letters" else ALERT_SORTS
        q.sort = "issued" if q.view == "letters" else "opened"

        def pick(name: str, allowed: Any, label: str) -> str | None:
            value = (params.get(name) or "").strip()
            if not value:
                return None
            if value not in allowed:
                errors.append(f"{label}“{value}”无效，已忽略。")
                return None
            return value

        q.status = pick("status", statuses, "状态")
        q.risk_level = pick("risk_level", RISK_LEVELS, "风险等级")
        q.category = pick("category", categories, "业务类别")
        for name, label in (("branch", "网点"), ("department", "职能部室")):
            text = (params.get(name) or "").strip()[:100]
            if any(ord(c) < 32 for c in text):  # a NUL would fail on PostgreSQL; no name has control characters
                errors.append(f"{label}含控制字符，已忽略。")
                text = ""
            setattr(q, name, text or None)
        for name, label in (("date_from", "起始日期"), ("date_to", "截止日期")):
            text = (params.get(name) or "").strip()
            if text:
                try:
                    setattr(q, name, date.fromisoformat(text))
                except ValueError:
                    errors.append(f"{label}“{text[:20]}”不是有效日期（YYYY-MM-DD），已忽略。")
        if q.date_from and q.date_to and q.date_from > q.date_to:
            errors.append("起始日期晚于截止日期，已交换。")
            q.date_from, q.date_to = q.date_to, q.date_from
        q.sort = pick("sort", sorts, "排序") or q.sort
        q.descending = params.get("order", "desc") != "asc"
        try:
            q.page = max(1, min(int(params.get("page") or 1), 100_000))
        except ValueError:
            errors.append("页码无效，已显示第 1 页。")
        return q

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string for links (pagination, sorting), with `changes` applied; empty values left out."""
        values: dict[str, Any] = {"view": self.view, "status": self.status, "risk_level": self.risk_level,
                                  "category": self.category, "branch": self.branch, "department": self.department,
                                  "date_from": self.date_from, "date_to": self.date_to, "sort": self.sort,
                                  "order": "desc" if self.descending else "asc", "page": self.page}
        values.update(changes)
        return {k: str(v) for k, v in values.items() if v not in (None, "", 1) or k == "view"}


@dataclass
class Counts:
    overdue: int = 0
    overdue_ack: int = 0
    overdue_response: int = 0
    due_soon: int = 0
    awaiting_ack: int = 0
    in_progress: int = 0
    open_alerts: int = 0


@dataclass
class LetterRow:
    id: int
    number: str
    department: str
    status: str
    risk_level: str | None
    items: int
    issued_at: datetime
    ack_due_at: datetime | None
    response_due_at: datetime | None
    overdue: list[str]
    due_soon: bool
    categories: list[str]
    branches: list[str]


@dataclass
class AlertRow:
    id: int
    status: str
    reason: str
    department: str
    category: str | None
    cause: str | None
    branch: str | None
    risk_level: str | None
    risk_score: float | None
    occurrences: int
    opened_at: datetime
    last_seen_at: datetime
    letter_id: int | None
    letter_number: str | None
    complaint_id: int | None  # the latest request of the matter


@dataclass
class Page:
    rows: list[Any]
    total: int
    page: int
    pages: int


def _risk_rank(column: Any) -> ColumnElement[int]:
    return case(*((column == level, rank) for level, rank in LEVEL_RANK.items()), else_=0)


def overdue_ack(now: datetime) -> ColumnElement[bool]:
    return and_(Letter.status == LetterStatus.ISSUED, Letter.ack_due_at <= now)


def overdue_response(now: datetime) -> ColumnElement[bool]:
    return and_(Letter.status != LetterStatus.RESOLVED, Letter.response_due_at <= now)


def due_soon(now: datetime) -> ColumnElement[bool]:
    """Not overdue yet, and the response deadline falls within DUE_SOON_DAYS days or an awaited
    acknowledgement within ACK_SOON_DAYS."""
    return and_(Letter.status != LetterStatus.RESOLVED, ~overdue_ack(now), ~overdue_response(now),
                or_(Letter.response_due_at <= now + timedelta(days=DUE_SOON_DAYS),
                    and_(Letter.status == LetterStatus.ISSUED, Letter.ack_due_at <= now + timedelta(days=ACK_SOON_DAYS))))


def _day_window(q: InboxQuery, column: Any, zone: ZoneInfo) -> list[ColumnElement[bool]]:
    out = []
    if q.date_from:
        out.append(column >= end_of_day(q.date_from - timedelta(days=1), zone))
    if q.date_to:
        out.append(column < end_of_day(q.date_to, zone))
    return out


def _letters_query(q: InboxQuery, access: Access, now: datetime, zone: ZoneInfo) -> Select:
    query = access.scope(select(Letter))
    if q.department:
        query = query.where(Letter.department == q.department)
    if q.status in labels(LetterStatus):  # a stored status, not one derived from the deadlines
        query = query.where(Letter.status == q.status)
    elif q.status == "overdue":
        query = query.where(or_(overdue_ack(now), overdue_response(now)))
    elif q.status == "due_soon":
        query = query.where(due_soon(now))
    if q.risk_level:
        query = query.where(Letter.risk_level == q.risk_level)
    for column, value in ((Complaint.category, q.category), (Complaint.branch, q.branch)):
        if value:
            query = query.where(exists(select(LetterItem.id).join(Complaint, Complaint.id == LetterItem.complaint_id)
                                       .where(LetterItem.letter_id == Letter.id, column == value)))
    return query.where(*_day_window(q, Letter.issued_at, zone))


def letters_page(db: Database, access: Access, q: InboxQuery, now: datetime, zone: ZoneInfo) -> Page:
    query = _letters_query(q, access, now, zone)
    key = {"issued": Letter.issued_at, "response_due": Letter.response_due_at, "ack_due": Letter.ack_due_at,
           "risk": _risk_rank(Letter.risk_level), "number": Letter.year * 100_000 + Letter.seq}[q.sort]
    order = [key.desc() if q.descending else key.asc(), Letter.id.desc() if q.descending else Letter.id.asc()]
    with db.reading() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(q.page, pages)
        letters = list(session.scalars(query.order_by(*order).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
        details = _letter_details(session, [x.id for x in letters])
        soon = set(session.scalars(select(Letter.id).where(Letter.id.in_([x.id for x in letters]), due_soon(now))))
    rows = []
    for x in letters:
        n, categories, branches = details.get(x.id, (0, [], []))
        flags = []
        if x.status == LetterStatus.ISSUED and x.ack_due_at and x.ack_due_at <= now:
            flags.append("ack")
        if x.status != LetterStatus.RESOLVED and x.response_due_at and x.response_due_at <= now:
            flags.append("response")
        rows.append(LetterRow(x.id, x.number, x.department, x.status, x.risk_level, n, x.issued_at, x.ack_due_at,
                              x.response_due_at, flags, x.id in soon, categories, branches))
    return Page(rows, total, page, pages)


def _letter_details(session: Session, ids: list[int]) -> dict[int, tuple[int, list[str], list[str]]]:
    """Per letter: its request count, and the categories and branches of its requests."""
    out: dict[int, tuple[int, list[str], list[str]]] = {}
    if not ids:
        return out
    rows = session.execute(select(LetterItem.letter_id, Complaint.category, Complaint.branch)
                           .join(Complaint, Complaint.id == LetterItem.complaint_id)
                           .where(LetterItem.letter_id.in_(ids)).order_by(LetterItem.id))
    for letter_id, category, branch in rows:
        n, categories, branches = out.setdefault(letter_id, (0, [], []))
        if category and category not in categories:
            categories.append(category)
        if branch not in branches:
            branches.append(branch)
        out[letter_id] = (n + 1, categories, branches)
    return out


def _alert_scope(access: Access) -> ColumnElement[bool]:
    dept = access.principal.department
    return Alert.department == dept if dept is not None else true()


def alerts_page(db: Database, access: Access, q: InboxQuery, zone: ZoneInfo) -> Page:
    query = select(Alert).where(_alert_scope(access))
    for column, value in ((Alert.status, q.status), (Alert.risk_level, q.risk_level), (Alert.category, q.category),
                          (Alert.branch, q.branch), (Alert.department, q.department)):
        if value:
            query = query.where(column == value)
    query = query.where(*_day_window(q, Alert.opened_at, zone))
    key = {"opened": Alert.opened_at, "last_seen": Alert.last_seen_at, "risk": _risk_rank(Alert.risk_level),
           "occurrences": Alert.occurrences}[q.sort]
    order = [key.desc() if q.descending else key.asc(), Alert.id.desc() if q.descending else Alert.id.asc()]
    with db.reading() as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        pages = max(1, -(-total // PAGE_SIZE))
        page = min(q.page, pages)
        alerts = list(session.scalars(query.order_by(*order).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
        ids = [a.id for a in alerts]
        latest = dict(session.execute(select(Complaint.alert_id, func.max(Complaint.id))
                                      .where(Complaint.alert_id.in_(ids)).group_by(Complaint.alert_id)).all()) \
            if ids else {}
        letter_ids = [a.letter_id for a in alerts if a.letter_id]
        numbers = dict(session.execute(select(Letter.id, Letter.number).where(Letter.id.in_(letter_ids))).all()) \
            if letter_ids else {}
    rows = [AlertRow(a.id, a.status, a.reason, a.department, a.category, a.cause, a.branch, a.risk_level,
                     a.risk_score, a.occurrences, a.opened_at, a.last_seen_at, a.letter_id,
                     numbers.get(a.letter_id), latest.get(a.id)) for a in alerts]
    return Page(rows, total, page, pages)


def counts(db: Database, access: Access, now: datetime) -> Counts:
    """The figures on top of the inbox, over everything the user may see (filters aside)."""
    def n(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    query = access.scope(select(n(or_(overdue_ack(now), overdue_response(now))), n(overdue_ack(now)),
                                n(overdue_response(now)), n(due_soon(now)), n(Letter.status == LetterStatus.ISSUED),
                                n(Letter.status == LetterStatus.ACKNOWLEDGED)).select_from(Letter))
    with db.reading() as session:
        values = session.execute(query).one()
        alerts = session.scalar(select(func.count()).select_from(Alert)
                                .where(_alert_scope(access), Alert.status == AlertStatus.OPEN)) or 0
    return Counts(*(int(v) for v in values), open_alerts=int(alerts))


def filter_choices(db: Database, access: Access) -> dict[str, list[str]]:
    """Branches and departments that occur in what the user may see, for the filter lists."""
    with db.reading() as session:
        branches = session.scalars(select(Alert.branch).where(_alert_scope(access), Alert.branch.isnot(None))
                                   .distinct().order_by(Alert.branch))
        departments = session.scalars(access.scope(select(Letter.department)).distinct().order_by(Letter.department)) \
            if access.principal.department is None else []
        return {"branches": [b for b in branches if b], "departments": list(departments)}
