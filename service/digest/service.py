"""The digest as the API, the CLI and the worker use it: which week, whose reference, sending.

Sending puts one e-mail per recipient in the outbox (service.outbox.enqueue_email, the same path as
letters) with the idempotency key `digest:<week>:<recipient>`, so the same week reaches the same
person once however often it is asked for; `force` sends again under a fresh key. Each sending is
recorded in `digests`. The scheduler's record is unique per week: a restarted or second worker
finds it and sends nothing.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.db import Database
from service.digest.build import NO_REFERENCE, Reference, build_digest, content_hash
from service.digest.render import title, to_html, to_text
from service.digest.schema import DigestSendResult, WeeklyDigest
from service.digest.weeks import Week, last_complete_week, parse_week
from service.digest_schedule import due_at, parse_schedule
from service.outbox import enqueue_email
from service.settings import Settings
from service.tables import Digest, OutboxMessage

log = logging.getLogger("xiaobao.service.digest")

EVENT = "digest.weekly"


class DigestError(Exception):
    """A digest that cannot be made or sent; str() is one line for the user."""


class NoRecipient(DigestError):
    pass


def requested_week(text: str | None, settings: Settings, now: datetime) -> Week:
    """The week asked for (`YYYY-Www`), or the last complete one; WeekError for a malformed or
    future week."""
    if text is None or text == "":  # absent, or a form's empty field
        return last_complete_week(now, settings.zone)
    return parse_week(text, settings.zone, now)


def reference_of(holder: Any) -> Reference:
    """The served model's reference histogram; the registry's current card when none is served."""
    served = getattr(holder, "served", None)
    if served is not None:
        return Reference.from_bundle(served.bundle)
    registry = getattr(holder, "registry", None)
    return Reference.from_registry(registry) if registry is not None else NO_REFERENCE


def registry_reference(settings: Settings) -> Reference:
    """The current card of the registry these settings name (the CLI and the worker have no model)."""
    from models.registry import Registry

    return Reference.from_registry(Registry.from_settings(settings.models))


def make_digest(db: Database, week: Week, reference: Reference, now: datetime) -> WeeklyDigest:
    with db.reading() as session:
        return build_digest(session, week, reference=reference, now=now)


# --- recipients and the outbox ----------------------------------------------------------------
def recipients(settings: Settings) -> list[str]:
    """XIAOBAO_DIGEST_RECIPIENTS, else the protection department's e-mail in the routing file."""
    if settings.digest_recipients:
        return list(dict.fromkeys(settings.digest_recipients))
    from service.routing import RoutingError, load_routing

    try:
        routing = load_routing(settings)
    except RoutingError as exc:
        raise NoRecipient(f"no digest recipient: {exc}") from None
    contact = routing.departments.get(settings.protection_department)
    return list(contact.emails) if contact else []


def outbox_key(week: str, recipient: str) -> str:
    return f"digest:{week}:{recipient}"


@dataclass(frozen=True)
class Mail:
    subject: str
    text: str
    html: str


def mail_of(digest: WeeklyDigest) -> Mail:
    return Mail(subject=title(digest), text=to_text(digest), html=to_html(digest))


def _already_sent(session: Session, week: str, to: list[str]) -> set[str]:
    keys = {outbox_key(week, r): r for r in to}
    found = session.scalars(select(OutboxMessage.idempotency_key).where(OutboxMessage.idempotency_key.in_(list(keys))))
    return {keys[k] for k in found}


def enqueue(session: Session, digest: WeeklyDigest, mail: Mail, to: list[str], *, force: bool,
            record: Digest | None = None, source: str = "api") -> DigestSendResult:
    """One outbox e-mail per recipient who has not had this week's digest (all of them with
    `force`), and the record of it; runs in the caller's transaction."""
    previously = _already_sent(session, digest.week, to)
    sent: list[str] = []
    already: list[str] = []
    suffix = secrets.token_hex(4)
    for r in to:
        key = outbox_key(digest.week, r)
        if r in previously:
            if not force:
                already.append(r)
                continue
            key = f"{key}:{suffix}"  # a forced resend: a new message, not a redelivery
        try:
            with session.begin_nested():  # a concurrent sender's row makes this one a no-op
                enqueue_email(session, key=key, to=[r], subject=mail.subject, text=mail.text, html=mail.html,
                              event=EVENT)
        except IntegrityError:
            already.append(r)
            continue
        sent.append(r)
    digest_hash = content_hash(digest)
    if record is not None:
        record.recipients, record.content_hash = sent, digest_hash
    elif sent:
        record = Digest(week=digest.week, source=source, forced=force, recipients=sent, content_hash=digest_hash)
        session.add(record)
    session.flush()
    return DigestSendResult(week=digest.week, digest_id=record.id if record is not None else None, sent_to=sent,
                            already_sent=already, content_hash=digest_hash)


def send_now(db: Database, settings: Settings, week: Week, reference: Reference, now: datetime, *,
             force: bool = False, source: str = "api", to: list[str] | None = None) -> DigestSendResult:
    """Generate and queue the digest of `week` for its recipients (API and CLI). Figures are built
    and rendered outside the write transaction, which only inserts the messages."""
    to = list(dict.fromkeys(to)) if to else recipients(settings)
    if not to:
        raise NoRecipient(f"no digest recipient: set XIAOBAO_DIGEST_RECIPIENTS or give "
                          f"{settings.protection_department} an email in the routing file")
    digest = make_digest(db, week, reference, now)
    if not force:
        with db.reading() as session:
            if _already_sent(session, week.label, to) == set(to):
                return DigestSendResult(week=week.label, digest_id=None, sent_to=[], already_sent=to,
                                        content_hash=content_hash(digest))
    mail = mail_of(digest)
    with db.transaction() as session:
        return enqueue(session, digest, mail, to, force=force, source=source)


# --- the schedule -----------------------------------------------------------------------------
def due_week(now: datetime, settings: Settings) -> Week | None:
    """The last complete week if its scheduled sending time has come, else None."""
    schedule = parse_schedule(settings.digest_schedule)
    if schedule is None:
        return None
    week = last_complete_week(now, settings.zone)
    return week if now >= due_at(schedule, week.end, settings.zone) else None


def _scheduled(session: Session, week: Week) -> bool:
    return session.scalar(select(Digest.id).where(Digest.week == week.label, Digest.source == "schedule")) is not None


def run_due_digests(session: Session, now: datetime, settings: Settings,
                    reference: Reference | None = None) -> DigestSendResult | None:
    """Called by the worker loop in its transaction: sends the last complete week's digest once its
    scheduled time (XIAOBAO_DIGEST_SCHEDULE, default Monday 08:00 local) has come, unless a
    scheduled digest of that week is recorded already. Returns what was sent, or None.

    A worker that was down at the scheduled time sends it when it comes back (the latest week only).
    """
    week = due_week(now, settings)
    if week is None or _scheduled(session, week):
        return None
    try:
        to = recipients(settings)
    except NoRecipient as exc:
        log.warning("weekly digest %s: %s", week.label, exc)
        to = []
    digest = build_digest(session, week, reference=reference or registry_reference(settings), now=now)
    record = Digest(week=week.label, source="schedule", recipients=[], content_hash=content_hash(digest))
    try:
        with session.begin_nested():  # the partial unique index: one scheduled digest per week
            session.add(record)
    except IntegrityError:
        return None
    if not to:
        # Recorded all the same, so the worker does not rebuild it every poll; POST …/send later.
        log.warning("weekly digest %s generated but not sent: no recipient configured", week.label)
        return DigestSendResult(week=week.label, digest_id=record.id, sent_to=[], already_sent=[],
                                content_hash=record.content_hash)
    result = enqueue(session, digest, mail_of(digest), to, force=False, record=record)
    log.info("weekly digest %s queued for %s", week.label, ", ".join(result.sent_to) or "nobody new")
    return result



class DigestJob:
    """The worker's job (`service.worker.Job`: called each round with a session and the time) that
    runs `run_due_digests` with these settings. It remembers a week it has seen recorded, so the
    rest of the week costs no query per round."""

    name = "weekly-digest"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._recorded: str | None = None

    def __call__(self, session: Session, now: datetime) -> DigestSendResult | None:
        week = due_week(now, self.settings)
        if week is None or week.label == self._recorded:
            return None
        if _scheduled(session, week):  # committed by this or another worker
            self._recorded = week.label
            return None
        return run_due_digests(session, now, self.settings)

    def job(self) -> tuple[str, DigestJob]:
        return self.name, self
