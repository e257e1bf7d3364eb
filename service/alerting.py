"""Alert raising, called by the intake (`service.intake:Intake._store_once`) inside the transaction
that stores the complaint: `Alerting.alert_for` for each stored complaint, then
`Alerting.issue_owed_letters` once, after the last.

A stored request raises an alert when its risk level reaches `alert_min_level` or it came through
one of `alert_channels` (regulator referrals: reason `referral`). Its dedup key is (customer_ref,
category, cause): a request whose key has an active alert whose last request is at most
`dedup_window_days` older joins that alert (count, last_seen_at, risk raised to the higher one,
the request linked) instead of opening a new one, whatever its own risk; an active alert older
than the window lapses and the request starts a new one. Two intakes racing on one key: the
partial unique index admits one active alert per key, the loser's insert fails inside a
savepoint, and it joins the winner's alert under its row lock.

The department comes from the routing file; active silences mute (see service.silences); the
letter is issued at the end of the intake transaction (window 0: `issue_owed_letters`, through
`Letters.issue_immediate`) or by the worker's flusher (`Letters.flush_due`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.clock import Clock
from service.letters import Letters, max_level
from service.routing import Routing
from service.settings import Settings
from service.silences import silence_for
from service.tables import Alert, Complaint, Letter
from service.vocab import ACTIVE_ALERT, LEVEL_RANK, AlertStatus

log = logging.getLogger("xiaobao.service.alerting")

_RACE_RETRIES = 5


def dedup_key(complaint: Complaint) -> str:
    if not complaint.customer_ref:
        return f"complaint:{complaint.id}"  # no customer to match on: its own matter
    return f"{complaint.customer_ref}|{complaint.category or ''}|{complaint.cause or ''}"


class Alerting:
    def __init__(self, settings: Settings, routing: Routing, clock: Clock, letters: Letters | None = None) -> None:
        self.settings, self.routing, self.clock = settings, routing, clock
        self.letters = letters or Letters(settings, routing, clock)
        self.window = timedelta(days=settings.dedup_window_days)

    def reason(self, complaint: Complaint) -> str | None:
        if complaint.channel in self.settings.alert_channels:
            return "referral"
        level = complaint.risk_level
        if level in LEVEL_RANK and LEVEL_RANK[level] >= LEVEL_RANK[self.settings.alert_min_level]:
            return "risk_level"
        return None

    def alert_for(self, session: Session, complaint: Complaint, owed: list[Alert]) -> Alert | None:
        """The alert `complaint` (stored and flushed, so its id is set) opened or joined, or None.
        An open alert that goes out at once (window 0) and has no letter yet is appended to `owed`:
        the caller hands that list to `issue_owed_letters` after its last complaint. A repeat of a
        matter whose letter is out is noted on the letter now. Raising aborts the caller's
        transaction (nothing of the intake is stored)."""
        reason = self.reason(complaint)
        key = dedup_key(complaint)
        alert, created = self._join_or_open(session, complaint, key, reason)
        if alert is None:
            return None
        complaint.alert = alert
        if created or alert.status == AlertStatus.SILENCED:
            self._apply_silences(session, alert)
        session.flush()
        if alert.status == AlertStatus.OPEN:
            if alert.letter_id is None:
                if self.settings.group_window_minutes == 0:
                    owed.append(alert)
            elif not created:
                self.letters.note_repeat(session, alert, complaint)
        return alert

    def issue_owed_letters(self, session: Session, owed: list[Alert]) -> list[Letter]:
        """Letters for the alerts `alert_for` listed as owed one at once, in the caller's transaction
        (so complaint, alert, letter and its messages commit together). Called once, after the
        transaction's last complaint: the letter-number lock is taken last, after every alert row
        lock, so two batches cannot deadlock on the lock order."""
        seen: set[int] = set()
        letters = []
        for alert in owed:
            if (alert.id in seen or alert not in session or alert.letter_id is not None
                    or alert.status != AlertStatus.OPEN):
                continue  # listed twice in a batch, lapsed later in it, or its savepoint was rolled back
            seen.add(alert.id)
            letters.append(self.letters.issue_immediate(session, alert))
        return letters

    def _join_or_open(self, session: Session, complaint: Complaint, key: str,
                      reason: str | None) -> tuple[Alert | None, bool]:
        for _ in range(_RACE_RETRIES):
            alert = session.scalar(select(Alert).where(Alert.dedup_key == key, Alert.status.in_(ACTIVE_ALERT))
                                   .with_for_update())
            if alert is not None and complaint.received_at - alert.last_seen_at > self.window:
                alert.status = AlertStatus.LAPSED  # too long ago: this request is a new matter
                session.flush()
                alert = None
            if alert is not None:
                self._join(alert, complaint, reason)
                return alert, False
            if reason is None:
                return None, False
            try:
                with session.begin_nested():
                    alert = self._open(complaint, key, reason)
                    session.add(alert)
                    session.flush()
                return alert, True
            except IntegrityError:
                continue  # another intake opened this key's alert meanwhile: join it
        raise RuntimeError(f"could not open or join the alert for dedup key {key!r}")

    def _open(self, complaint: Complaint, key: str, reason: str) -> Alert:
        department = self.routing.route(category=complaint.category, cause=complaint.cause,
                                         branch=complaint.branch, channel=complaint.channel)
        now = self.clock.now()
        return Alert(dedup_key=key, status=AlertStatus.OPEN, reason=reason, department=department,
                     customer_ref=complaint.customer_ref, category=complaint.category, cause=complaint.cause,
                     branch=complaint.branch, risk_score=complaint.risk_score, risk_level=complaint.risk_level,
                     occurrences=1, opened_at=now, last_seen_at=complaint.received_at, updated_at=now)

    def _join(self, alert: Alert, complaint: Complaint, reason: str | None) -> None:
        alert.occurrences += 1
        alert.last_seen_at = max(alert.last_seen_at, complaint.received_at)
        if complaint.risk_score is not None and (alert.risk_score is None or complaint.risk_score > alert.risk_score):
            alert.risk_score = complaint.risk_score
        alert.risk_level = max_level([alert.risk_level, complaint.risk_level])
        if reason == "referral":
            alert.reason = "referral"
        alert.updated_at = self.clock.now()

    def _apply_silences(self, session: Session, alert: Alert) -> None:
        """Mute a new alert that an active silence covers; wake a silenced one whose silence ended
        (or that a referral now joins: referrals are never muted)."""
        silence = None
        if alert.reason != "referral":
            silence = silence_for(session, self.clock.now(), alert.department, alert.category, alert.cause,
                                  alert.branch)
        if silence is not None:
            alert.status, alert.silence_id = AlertStatus.SILENCED, silence.id
        elif alert.status == AlertStatus.SILENCED:
            alert.status, alert.silence_id = AlertStatus.OPEN, None
