"""投诉风险提示函: the one entry point to letters (`Letters`): issuing them from alerts, recording
repeats, reminding, acknowledging, resolving and extending, and the views the API and console show.

Whatever issues or changes a letter writes the letter, its items, its events and its outbox
messages in the caller's transaction. The parts live beside this module: numbers
(service.letters.numbering), grouping windows (service.letters.grouping), deadlines
(service.letters.deadlines), reminders (service.letters.reminders), what a letter lists of each
request (service.letters.items), messages (service.letters.notify), who sees which letter
(service.letters.access), rendering (service.letters.render) and bodies (service.letters.schemas).
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from models.text import clean
from service.clock import Clock
from service.db import Database
from service.errors import Conflict, NotFound, invalid
from service.letters.access import Access
from service.letters.deadlines import ack_due, last_day, response_due
from service.letters.grouping import due_groups, immediate_key, take_flush_lock
from service.letters.items import max_level, snapshot, summarize
from service.letters.notify import notify
from service.letters.numbering import format_number, take_number
from service.letters.reminders import OVERDUE_WORDS, overdue, owed_reminders
from service.letters.render import LetterRenderer
from service.letters.schemas import LetterEventOut, LetterItemOut, LetterOut, LetterPage, LetterSummary
from service.routing import Routing
from service.settings import Settings
from service.tables import Alert, Complaint, Letter, LetterEvent, LetterItem
from service.vocab import AlertStatus, LetterStatus
from service.workdays import CalendarNotCovered

log = logging.getLogger("xiaobao.service.letters")


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
                                           snapshot=snapshot(c, by_id[c.alert_id])))
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

    def issue_immediate(self, session: Session, alert: Alert) -> Letter:
        """The alert's own letter, at once (grouping window 0)."""
        return self.issue(session, alert.department, [alert], immediate_key(alert))

    def _ack_due(self, now: datetime) -> tuple[datetime, str | None]:
        """The acknowledgement deadline, and a note when it is provisional: a count that runs into a
        year the calendar does not cover takes every day of that year as a working day (the earliest
        the deadline could be, see service.workdays) rather than holding up the letter."""
        n, zone = self.settings.ack_working_days, self.settings.zone
        try:
            return ack_due(now, n, self.calendar, zone), None
        except CalendarNotCovered as exc:
            log.warning("acknowledgement deadline counted from the earliest it could be: %s", exc)
            return (ack_due(now, n, self.calendar, zone, uncovered_as_working=True),
                    f"签收期限从严计算：工作日历未含{exc.year}年节假日安排，该年每天按工作日计")

    def flush_due(self, session: Session, *, force: bool = False) -> list[Letter]:
        """Letters for every department whose grouping window has closed (`force`: all pending
        alerts now), one flusher at a time. Alerts another transaction holds are skipped (SKIP LOCKED)
        and left for the next round, so two flushers never list the same alert and never wait on each
        other (service.letters.grouping)."""
        if not take_flush_lock(session):
            return []
        groups = due_groups(session, self.clock.now(), self.settings.group_window_minutes, force=force)
        return [self.issue(session, g.department, g.alerts, g.key) for g in groups]

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
        """Reminders for the letters owed one (service.letters.reminders:owed_reminders), at most one
        per `reminder_interval_hours`, to the department and copied to the protection department."""
        now = self.clock.now()
        letters = owed_reminders(session, now, self.settings.reminder_interval_hours, limit)
        for letter in letters:
            letter.reminders += 1
            letter.reminded_at = now
            missed = overdue(letter, now)
            what = "、".join(OVERDUE_WORDS[o] for o in missed)
            note = f"第{letter.reminders}次催办：{what}，已抄送{self.sender}"
            letter.events.append(LetterEvent(kind="reminded", at=now, note=note))
            session.flush()
            view = self.view(letter)
            self._notify(session, letter, "letter.reminder", f"reminder-{letter.reminders}",
                         subject=f"【催办】{letter.number} 投诉风险提示函{what}",
                         text=self.renderer.notice("reminder", view, note=note), html=None,
                         body={"letter": self._summary(letter).model_dump(mode="json"), "reminder": letter.reminders,
                               "overdue": missed}, cc_protection=True)
        return letters

    def _lock(self, session: Session, access: Access, letter_id: int) -> Letter:
        letter = session.scalar(access.scope(select(Letter).where(Letter.id == letter_id)).with_for_update())
        if letter is None:
            raise NotFound(f"letter_id: no letter {letter_id}", field="letter_id")
        return letter

    def acknowledge(self, session: Session, access: Access, letter_id: int, note: str | None) -> Letter:
        letter = self._lock(session, access, letter_id)
        if letter.status != LetterStatus.ISSUED:
            raise Conflict(f"letter {letter.number} is {letter.status} already")
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
            raise Conflict(f"letter {letter.number} is resolved already")
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
            raise Conflict(f"letter {letter.number} is resolved already")
        if days <= letter.response_days:
            raise Conflict(f"letter {letter.number} already has {letter.response_days} days",
                           field="days")
        received = session.scalars(select(Complaint.received_at).join(
            LetterItem, LetterItem.complaint_id == Complaint.id).where(LetterItem.letter_id == letter.id))
        letter.response_days = days
        letter.response_due_at = min(response_due(r, days, self.settings.zone) for r in received)
        approval = f"（{clean(approved_by)}批准）" if approved_by else ""
        letter.events.append(LetterEvent(kind="extended", at=self.clock.now(), api_key_id=access.principal.key_id,
                                         note=f"处理期限延长至{days}日{approval}：{clean(reason)}"))
        return letter

    def _notify(self, session: Session, letter: Letter, event: str, tag: str, **message: Any) -> None:
        notify(session, self.routing, self.settings, self.clock.now(), letter, event, tag, **message)

    # --- views -------------------------------------------------------------------------------------
    def _summary(self, letter: Letter, items_count: int | None = None) -> LetterSummary:
        return LetterSummary(
            id=letter.id, number=letter.number, department=letter.department, sender=self.sender,
            status=letter.status, risk_level=letter.risk_level,
            items_count=len(letter.items) if items_count is None else items_count, issued_at=letter.issued_at,
            ack_due_at=letter.ack_due_at, response_due_at=letter.response_due_at,
            response_days=letter.response_days, acknowledged_at=letter.acknowledged_at,
            resolved_at=letter.resolved_at, reminders=letter.reminders, overdue=overdue(letter, self.clock.now()))

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
            raise invalid("limit", f"at most {self.settings.page_limit_max}")
        return limit or self.settings.page_limit_default

    def get(self, db: Database, access: Access, letter_id: int) -> LetterOut:
        with db.reading() as session:
            letter = session.scalar(access.scope(select(Letter).where(Letter.id == letter_id))
                                    .options(selectinload(Letter.items), selectinload(Letter.events)))
            if letter is None:
                raise NotFound(f"letter_id: no letter {letter_id}", field="letter_id")
            return self.view(letter)

    def change(self, db: Database, access: Access, letter_id: int, action: str, **kwargs: Any) -> LetterOut:
        """acknowledge / resolve / extend in one transaction; answers the letter as it now stands."""
        with db.transaction() as session:
            letter = getattr(self, action)(session, access, letter_id, **kwargs)
            session.flush()
            return self.view(letter)
