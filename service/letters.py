"""投诉风险提示函: issuing letters from alerts, numbering them, their deadlines, acknowledgement,
resolution, extension and escalation, and what they show.

Numbers (〔2026〕第0001号) come from the per-year row of `letter_sequences`, incremented inside
the letter's transaction: the row lock makes concurrent issuers wait their turn, a rollback gives
the number back, so numbers are sequential and gapless per year, and UNIQUE (year, seq) means
none is ever issued twice.

Grouping: one letter per department per window of `group_window_minutes` (fixed windows, counted
from the epoch in UTC) lists all its alerts opened in that window; the worker's flusher issues it
once the window has closed. With a window of 0 each alert gets its own letter in the intake
transaction. Whatever issues a letter writes the letter, its items, its events and its outbox
messages in one transaction.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from models.text import clean
from service.auth import Principal
from service.clock import Clock
from service.db import Database
from service.deadlines import CalendarNotCovered, ack_due, last_day, response_due
from service.errors import ApiError
from service.letter_render import LetterRenderer
from service.letter_schemas import LetterEventOut, LetterItemOut, LetterOut, LetterPage, LetterSummary
from service.outbox import enqueue_email, enqueue_webhook
from service.routing import Routing
from service.settings import Settings
from service.silences import silence_for
from service.tables import Alert, Complaint, Letter, LetterEvent, LetterItem, LetterSequence
from service.vocab import LEVEL_RANK, AlertStatus, LetterStatus

log = logging.getLogger("xiaobao.service.letters")

SUMMARY_CHARS = 160
PHRASES_PER_ITEM = 6
FLUSH_LOCK_KEY = 0x5842_4C45  # advisory lock id ("XBLE") serialising letter flushes on PostgreSQL
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_number(year: int, seq: int) -> str:
    return f"〔{year}〕第{seq:04d}号"


def max_level(levels: Iterable[str | None]) -> str | None:
    known = [lv for lv in levels if lv in LEVEL_RANK]
    return max(known, key=LEVEL_RANK.__getitem__) if known else None


def mask_ref(ref: str | None) -> str | None:
    """A customer reference as a letter shows it: both ends kept, the middle starred."""
    if not ref:
        return None
    if len(ref) <= 2:
        return ref[0] + "*"
    keep = max(1, len(ref) // 4)
    return ref[:keep] + "*" * max(len(ref) - 2 * keep, 2) + ref[-keep:]


def summarize(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = clean(text)  # stored masked already; cleaning again costs little and guards old rows
    return text if len(text) <= limit else text[: limit - 1] + "…"


def phrases_of(prediction: dict[str, Any]) -> list[str]:
    """Risk phrases first (why it may escalate), then category and cause phrases; no repeats."""
    out: list[str] = []
    for head in ("risk", "cause", "category"):
        part = prediction.get(head) or {}
        for p in part.get("phrases") or []:
            phrase = p.get("phrase") if isinstance(p, dict) else None
            if phrase and phrase not in out and (p.get("weight") or 0) > 0:
                out.append(phrase)
    return out[:PHRASES_PER_ITEM]


def window_start(moment: datetime, minutes: int) -> datetime:
    if minutes <= 0:
        return moment
    size = timedelta(minutes=minutes)
    return EPOCH + ((moment - EPOCH) // size) * size


def take_number(session: Session, year: int) -> int:
    """The next letter number of `year`, held (row-locked) until the transaction ends."""
    bump = (update(LetterSequence).where(LetterSequence.year == year)
            .values(last_seq=LetterSequence.last_seq + 1).returning(LetterSequence.last_seq)
            .execution_options(synchronize_session=False))
    seq = session.execute(bump).scalar()
    if seq is None:  # the year's first letter: create the counter (a racing creator wins, we bump theirs)
        try:
            with session.begin_nested():
                session.add(LetterSequence(year=year, last_seq=0))
                session.flush()
        except IntegrityError:
            pass
        seq = session.execute(bump).scalar_one()
    return seq


@dataclass
class Access:
    """What a caller may do with letters: a department only its own."""

    principal: Principal

    def scope(self, query: Select) -> Select:
        dept = self.principal.department
        return query if dept is None else query.where(Letter.department == dept)


class Letters:
    def __init__(self, settings: Settings, routing: Routing, clock: Clock,
                 renderer: LetterRenderer | None = None) -> None:
        self.settings, self.routing, self.clock = settings, routing, clock
        self.calendar = routing.calendar
        self.renderer = renderer or LetterRenderer(settings)

    @property
    def sender(self) -> str:
        return self.settings.protection_department

    # --- issuing -----------------------------------------------------------------------------------
    def issue(self, session: Session, department: str, alerts: list[Alert], group_key: str) -> Letter:
        """One letter to `department` listing every complaint of `alerts`, numbered, with its
        deadlines and outgoing messages, in the caller's transaction."""
        now = self.clock.now()
        zone = self.settings.zone
        year = now.astimezone(zone).year
        seq = take_number(session, year)
        by_id = {a.id: a for a in alerts}
        complaints = list(session.scalars(select(Complaint).where(Complaint.alert_id.in_(list(by_id)))
                                          .order_by(Complaint.received_at, Complaint.id)))
        days = self.settings.response_days
        ack_due_at, provisional = self._ack_due(now)
        letter = Letter(year=year, seq=seq, number=format_number(year, seq), department=department,
                        status=LetterStatus.ISSUED, group_key=group_key, issued_at=now, response_days=days,
                        risk_level=max_level(a.risk_level for a in alerts),
                        ack_due_at=ack_due_at,
                        response_due_at=min(response_due(c.received_at, days, zone) for c in complaints))
        for c in complaints:
            letter.items.append(LetterItem(complaint_id=c.id, alert_id=c.alert_id,
                                           snapshot=self._snapshot(c, by_id[c.alert_id])))
        note = f"{len(complaints)} 件，{len(alerts)} 项预警" + (f"；{provisional}" if provisional else "")
        letter.events.append(LetterEvent(kind="issued", at=now, note=note))
        session.add(letter)
        session.flush()
        for a in alerts:
            a.letter_id = letter.id
        view = self.view(letter)
        self._notify(session, letter, "letter.issued", "issued",
                     subject=f"【投诉风险提示函】{letter.number} {department}（{len(complaints)}件，最高风险：{letter.risk_level or '—'}）",
                     text=self.renderer.text(view), html=self.renderer.html(view),
                     body={"letter": view.model_dump(mode="json")}, cc_protection=False)
        log.info("issued letter %s to %s with %d requests", letter.number, department, len(complaints))
        return letter

    def _ack_due(self, now: datetime) -> tuple[datetime, str | None]:
        """The acknowledgement deadline, and a note when it is provisional: a count that runs into a
        year the calendar does not cover takes every day of that year as a working day (the earliest
        the deadline could be, see service.deadlines) rather than holding up the letter."""
        n, zone = self.settings.ack_working_days, self.settings.zone
        try:
            return ack_due(now, n, self.calendar, zone), None
        except CalendarNotCovered as exc:
            log.warning("acknowledgement deadline counted from the earliest it could be: %s", exc)
            return (ack_due(now, n, self.calendar, zone, uncovered_as_working=True),
                    f"签收期限从严计算：工作日历未含{exc.year}年节假日安排，该年每天按工作日计")

    def _snapshot(self, c: Complaint, alert: Alert) -> dict[str, Any]:
        return {"complaint_id": c.id, "external_id": c.external_id, "customer": mask_ref(c.customer_ref),
                "branch": c.branch, "channel": c.channel, "received_at": c.received_at.isoformat(),
                "summary": summarize(c.text_masked), "category": c.category,
                "category_probability": c.category_probability, "cause": c.cause,
                "cause_probability": c.cause_probability, "risk_level": c.risk_level, "risk_score": c.risk_score,
                "phrases": phrases_of(c.prediction), "occurrences": alert.occurrences, "reason": alert.reason}

    def flush_due(self, session: Session, *, force: bool = False) -> list[Letter]:
        """Letters for every department whose grouping window has closed (`force`: all pending
        alerts now). Alerts another transaction holds are skipped (SKIP LOCKED) and left for the
        next round, so two flushers never list the same alert and never wait on each other."""
        now = self.clock.now()
        minutes = self.settings.group_window_minutes
        # One flusher at a time: two that each SKIP LOCKED part of a window's alerts would write two
        # letters for one department and window. A flusher that finds the lock taken leaves the round
        # to the one holding it. (SQLite's single writer serialises flushers already.)
        if session.get_bind().dialect.name == "postgresql" and not session.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": FLUSH_LOCK_KEY}).scalar():
            return []
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
        letters = []
        for (department, start), members in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[1][0].id)):
            if minutes <= 0:
                for a in members:
                    letters.append(self.issue(session, department, [a], f"{department}|immediate|{a.id}"))
            else:
                key = f"{department}|{start:%Y%m%dT%H%MZ}|{members[0].id}"
                letters.append(self.issue(session, department, members, key))
        return letters

    def flush_now(self, db: Database) -> list[str]:
        with db.transaction() as session:
            return [letter.number for letter in self.flush_due(session, force=True)]

    def note_repeat(self, session: Session, alert: Alert, complaint: Complaint) -> None:
        """A repeat of a matter whose letter is out: recorded on the letter, and the department told."""
        letter = session.get(Letter, alert.letter_id)
        if letter is None or letter.status == LetterStatus.RESOLVED:
            return
        now = self.clock.now()
        note = (f"客户再次来访（累计{alert.occurrences}次）：{complaint.channel}，{complaint.branch}，"
                f"风险{complaint.risk_level or '—'}，编号{complaint.external_id}")
        letter.events.append(LetterEvent(kind="repeat", at=now, note=note))
        session.flush()
        view = self.view(letter)
        text = self.renderer.notice("repeat", view, note=note, summary=summarize(complaint.text_masked))
        self._notify(session, letter, "letter.repeat", f"repeat-{complaint.id}",
                     subject=f"【再次来访】{letter.number} 所涉客户再次反映", text=text, html=None,
                     body={"letter": self._summary(letter).model_dump(mode="json"), "note": note}, cc_protection=False)

    # --- follow-up -----------------------------------------------------------------------------------
    def escalate(self, session: Session, limit: int = 200) -> list[Letter]:
        """Reminders for letters past a deadline (not acknowledged by the acknowledgement deadline,
        or not resolved by the response deadline), at most one per `reminder_interval_hours`, to
        the department and copied to the protection department. None before the acknowledgement
        deadline: a letter about old requests (a replay, a late flush) may be overdue on the day it
        is issued, and says so itself; the department still gets its days to acknowledge."""
        now = self.clock.now()
        quiet_since = now - timedelta(hours=self.settings.reminder_interval_hours)
        query = (select(Letter).where(
            Letter.status != LetterStatus.RESOLVED, Letter.ack_due_at <= now,
            or_(Letter.status == LetterStatus.ISSUED, Letter.response_due_at <= now),
            or_(Letter.reminded_at.is_(None), Letter.reminded_at <= quiet_since))
            .order_by(Letter.id).limit(limit).with_for_update(skip_locked=True))
        letters = list(session.scalars(query))
        for letter in letters:
            letter.reminders += 1
            letter.reminded_at = now
            overdue = self.overdue(letter, now)
            what = "、".join({"ack": "逾期未签收", "response": "逾期未反馈处理结果"}[o] for o in overdue)
            note = f"第{letter.reminders}次催办：{what}，已抄送{self.sender}"
            letter.events.append(LetterEvent(kind="reminded", at=now, note=note))
            session.flush()
            view = self.view(letter)
            self._notify(session, letter, "letter.reminder", f"reminder-{letter.reminders}",
                         subject=f"【催办】{letter.number} 投诉风险提示函{what}",
                         text=self.renderer.notice("reminder", view, note=note), html=None,
                         body={"letter": self._summary(letter).model_dump(mode="json"), "reminder": letter.reminders,
                               "overdue": overdue}, cc_protection=True)
        return letters

    def overdue(self, letter: Letter, now: datetime) -> list[str]:
        out = []
        if letter.status == LetterStatus.ISSUED and letter.ack_due_at and letter.ack_due_at <= now:
            out.append("ack")
        if letter.status != LetterStatus.RESOLVED and letter.response_due_at and letter.response_due_at <= now:
            out.append("response")
        return out

    def _lock(self, session: Session, access: Access, letter_id: int) -> Letter:
        letter = session.scalar(access.scope(select(Letter).where(Letter.id == letter_id)).with_for_update())
        if letter is None:
            raise ApiError(404, "not_found", f"letter_id: no letter {letter_id}", field="letter_id")
        return letter

    def acknowledge(self, session: Session, access: Access, letter_id: int, note: str | None) -> Letter:
        letter = self._lock(session, access, letter_id)
        if letter.status != LetterStatus.ISSUED:
            raise ApiError(409, "conflict", f"letter {letter.number} is {letter.status} already")
        now = self.clock.now()
        letter.status, letter.acknowledged_at = LetterStatus.ACKNOWLEDGED, now
        letter.ack_note = clean(note) if note else None
        letter.events.append(LetterEvent(kind="acknowledged", at=now, note=letter.ack_note,
                                         api_key_id=access.principal.key_id))
        return letter

    def resolve(self, session: Session, access: Access, letter_id: int, note: str) -> Letter:
        """Resolving implies acknowledging; the letter's alerts close, so a later repeat opens a new
        alert (and letter); the department and the protection department get a resolved notice."""
        letter = self._lock(session, access, letter_id)
        if letter.status == LetterStatus.RESOLVED:
            raise ApiError(409, "conflict", f"letter {letter.number} is resolved already")
        now = self.clock.now()
        if letter.acknowledged_at is None:
            letter.acknowledged_at = now
        letter.status, letter.resolved_at, letter.resolve_note = LetterStatus.RESOLVED, now, clean(note)
        letter.events.append(LetterEvent(kind="resolved", at=now, note=letter.resolve_note,
                                         api_key_id=access.principal.key_id))
        unresolved = (AlertStatus.OPEN, AlertStatus.LAPSED)
        session.execute(update(Alert).where(Alert.letter_id == letter.id, Alert.status.in_(unresolved))
                        .values(status=AlertStatus.RESOLVED, resolved_at=now, updated_at=now)
                        .execution_options(synchronize_session=False))
        session.flush()
        view = self.view(letter)
        self._notify(session, letter, "letter.resolved", "resolved", subject=f"【已办结】{letter.number} 投诉风险提示函",
                     text=self.renderer.notice("resolved", view, note=letter.resolve_note), html=None,
                     body={"letter": self._summary(letter).model_dump(mode="json"), "note": letter.resolve_note},
                     cc_protection=True)
        return letter

    def extend(self, session: Session, access: Access, letter_id: int, days: int, reason: str,
               approved_by: str | None) -> Letter:
        letter = self._lock(session, access, letter_id)
        if letter.status == LetterStatus.RESOLVED:
            raise ApiError(409, "conflict", f"letter {letter.number} is resolved already")
        if days <= letter.response_days:
            raise ApiError(409, "conflict", f"letter {letter.number} already has {letter.response_days} days",
                           field="days")
        received = session.scalars(select(Complaint.received_at).join(
            LetterItem, LetterItem.complaint_id == Complaint.id).where(LetterItem.letter_id == letter.id))
        letter.response_days = days
        letter.response_due_at = min(response_due(r, days, self.settings.zone) for r in received)
        approval = f"（{clean(approved_by)}批准）" if approved_by else ""
        letter.events.append(LetterEvent(kind="extended", at=self.clock.now(), api_key_id=access.principal.key_id,
                                         note=f"处理期限延长至{days}日{approval}：{clean(reason)}"))
        return letter

    def _notify(self, session: Session, letter: Letter, event: str, tag: str, *, subject: str, text: str,
                html: str | None, body: dict[str, Any], cc_protection: bool) -> None:
        """Messages to the letter's department (email and webhook, as the routing file lists them);
        with `cc_protection`, the protection department is copied (Cc, and its own webhook)."""
        contact = self.routing.contact(letter.department)
        protection = self.routing.contact(self.sender)
        copy = cc_protection and protection.department != contact.department
        base = f"letter-{letter.year}-{letter.seq:04d}-{tag}"
        now = self.clock.now()
        payload = {"event": event, "number": letter.number, "department": letter.department, **body,
                   "links": {"json": f"{self.settings.public_url}/v1/letters/{letter.id}",
                             "html": f"{self.settings.public_url}/v1/letters/{letter.id}?format=html"}}
        if contact.emails or (copy and protection.emails):
            to = list(contact.emails) or list(protection.emails)
            cc = [a for a in protection.emails if a not in to] if copy else []
            enqueue_email(session, key=f"{base}-email", to=to, cc=cc, subject=subject, text=text, html=html,
                          event=event, letter_id=letter.id, now=now)
        if contact.webhook:
            enqueue_webhook(session, key=f"{base}-webhook", url=contact.webhook.url,
                            secret_env=contact.webhook.secret_env, body=payload, event=event, letter_id=letter.id,
                            now=now)
        if copy and protection.webhook:
            enqueue_webhook(session, key=f"{base}-webhook-cc", url=protection.webhook.url,
                            secret_env=protection.webhook.secret_env, body=payload, event=event, letter_id=letter.id,
                            now=now)

    # --- views -------------------------------------------------------------------------------------
    def _summary(self, letter: Letter, items_count: int | None = None) -> LetterSummary:
        return LetterSummary(
            id=letter.id, number=letter.number, department=letter.department, sender=self.sender,
            status=letter.status, risk_level=letter.risk_level,
            items_count=len(letter.items) if items_count is None else items_count, issued_at=letter.issued_at,
            ack_due_at=letter.ack_due_at, response_due_at=letter.response_due_at,
            response_days=letter.response_days, acknowledged_at=letter.acknowledged_at,
            resolved_at=letter.resolved_at, reminders=letter.reminders, overdue=self.overdue(letter, self.clock.now()))

    def view(self, letter: Letter) -> LetterOut:
        days = letter.response_days
        items = []
        for item in letter.items:
            snap = item.snapshot
            received = datetime.fromisoformat(snap["received_at"])
            items.append(LetterItemOut(**snap, decision_due=self._decision_due(received, days)))
        events = [LetterEventOut(kind=e.kind, note=e.note, at=e.at) for e in letter.events]
        return LetterOut(**self._summary(letter, len(items)).model_dump(), ack_note=letter.ack_note,
                         resolve_note=letter.resolve_note, items=items, events=events)

    def _decision_due(self, received: datetime, days: int) -> date:
        return last_day(response_due(received, days, self.settings.zone), self.settings.zone)

    # --- reading for the API ---------------------------------------------------------------------------
    def list_page(self, db: Database, access: Access, *, department: str | None, status: str | None,
                  limit: int | None, offset: int) -> LetterPage:
        limit = self._page_limit(limit)
        query = access.scope(select(Letter))
        if department:
            query = query.where(Letter.department == department)
        if status:
            query = query.where(Letter.status == status)
        counts = (select(LetterItem.letter_id, func.count().label("n")).group_by(LetterItem.letter_id).subquery())
        with db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.execute(
                query.add_columns(func.coalesce(counts.c.n, 0)).outerjoin(counts, counts.c.letter_id == Letter.id)
                .order_by(Letter.issued_at.desc(), Letter.id.desc()).limit(limit).offset(offset)).all()
            items = [self._summary(letter, n) for letter, n in rows]
        return LetterPage(items=items, total=total, limit=limit, offset=offset)

    def _page_limit(self, limit: int | None) -> int:
        if limit is not None and limit > self.settings.page_limit_max:
            raise ApiError(422, "invalid_field", f"limit: at most {self.settings.page_limit_max}", field="limit")
        return limit or self.settings.page_limit_default

    def get(self, db: Database, access: Access, letter_id: int) -> LetterOut:
        with db.reading() as session:
            letter = session.scalar(access.scope(select(Letter).where(Letter.id == letter_id))
                                    .options(selectinload(Letter.items), selectinload(Letter.events)))
            if letter is None:
                raise ApiError(404, "not_found", f"letter_id: no letter {letter_id}", field="letter_id")
            return self.view(letter)

    def change(self, db: Database, access: Access, letter_id: int, action: str, **kwargs: Any) -> LetterOut:
        """acknowledge / resolve / extend in one transaction; answers the letter as it now stands."""
        with db.transaction() as session:
            letter = getattr(self, action)(session, access, letter_id, **kwargs)
            session.flush()
            return self.view(letter)
