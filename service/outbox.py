"""The transactional outbox: messages are rows written in the same transaction as the change that
causes them (a letter, a reminder, a digest), and a worker delivers them afterwards.

Delivery is at-least-once with an idempotency key per message:

- `claim` takes due messages in a short transaction (`FOR UPDATE SKIP LOCKED` on PostgreSQL; the
  single write lock on SQLite), marks them `sending` with a lease (`locked_until`, `lease_owner`)
  and counts the attempt; nothing is locked while the network is used.
- after sending, the worker settles the message only if it still holds the lease: `sent`, or
  `failed` with the next attempt after an exponential backoff, or `dead` after
  `outbox_max_attempts` attempts (visible at GET /v1/outbox?status=dead, retried by
  POST /v1/outbox/{id}/retry).
- a worker that dies leaves its messages `sending` with a lease that runs out; another worker
  then takes them again. A message sent just before the crash is sent a second time, with the
  same idempotency key (`X-Idempotency-Key` header for webhooks; the SMTP Message-ID is derived
  from it, plus an `X-Idempotency-Key` header): receivers drop what they have seen. Nothing is
  lost, and what a receiver acts on, it acts on once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import smtplib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from models.text import mask_pii
from service.clock import Clock
from service.db import Database
from service.errors import Conflict, NotFound, invalid
from service.schemas import OutboxOut, OutboxPage
from service.settings import Settings
from service.tables import LetterEvent, OutboxMessage
from service.vocab import OutboxStatus

log = logging.getLogger("xiaobao.service.outbox")

SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Xiaobao-Signature", "X-Xiaobao-Timestamp"
IDEMPOTENCY_HEADER, EVENT_HEADER = "X-Idempotency-Key", "X-Xiaobao-Event"


# --- writing messages (inside the caller's transaction) -----------------------------------------------
def enqueue_email(session: Session, *, key: str, to: list[str], subject: str, text: str,
                  html: str | None = None, cc: list[str] | None = None, event: str | None = None,
                  letter_id: int | None = None, now: datetime | None = None) -> OutboxMessage:
    """`key` is the idempotency key: unique, and stable for "the same message" (a second enqueue of
    it fails on the UNIQUE constraint). `now` (default: the wall clock) makes it due at once."""
    msg = OutboxMessage(idempotency_key=key, kind="email", receiver=", ".join(to)[:1000], subject=subject[:300],
                        payload={"to": to, "cc": cc or [], "subject": subject, "text": text, "html": html},
                        event=event, letter_id=letter_id, **_times(now))
    session.add(msg)
    return msg


def enqueue_webhook(session: Session, *, key: str, url: str, secret_env: str, body: dict[str, Any],
                    event: str | None = None, letter_id: int | None = None,
                    now: datetime | None = None) -> OutboxMessage:
    """`body` is serialised once, here, so a redelivery sends the very same bytes."""
    raw = json.dumps(body, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    msg = OutboxMessage(idempotency_key=key, kind="webhook", receiver=url[:1000], subject=event,
                        payload={"body": raw, "secret_env": secret_env}, event=event, letter_id=letter_id,
                        **_times(now))
    session.add(msg)
    return msg


def _times(now: datetime | None) -> dict[str, datetime]:
    return {} if now is None else {"created_at": now, "next_attempt_at": now}


# --- signing -----------------------------------------------------------------------------------------
def sign(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over `timestamp + "." + body`; the timestamp lets receivers refuse replays."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def message_id(key: str, sender: str) -> str:
    """The same idempotency key always gives the same Message-ID."""
    domain = sender.rpartition("@")[2] or "xiaobao.local"
    return f"<{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}@{domain}>"


# --- sending -----------------------------------------------------------------------------------------
class SendError(Exception):
    """The receiver did not take the message; str() says why (kept as last_error)."""


@dataclass(frozen=True)
class Claimed:
    """A claimed message, detached from its session."""

    id: int
    key: str
    kind: str
    receiver: str
    subject: str | None
    payload: dict[str, Any]
    event: str | None
    letter_id: int | None
    attempts: int
    owner: str


class Sender(Protocol):
    def __call__(self, message: Claimed) -> None: ...


class EmailSender:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def build(self, message: Claimed) -> EmailMessage:
        p, s = message.payload, self.settings
        mail = EmailMessage()
        mail["From"] = s.smtp_sender
        mail["To"] = ", ".join(p["to"])
        if p.get("cc"):
            mail["Cc"] = ", ".join(p["cc"])
        mail["Subject"] = p["subject"]
        mail["Date"] = format_datetime(datetime.now().astimezone())
        mail["Message-ID"] = message_id(message.key, s.smtp_sender)
        mail[IDEMPOTENCY_HEADER] = message.key
        if message.event:
            mail[EVENT_HEADER] = message.event
        mail.set_content(p["text"], charset="utf-8")
        if p.get("html"):
            mail.add_alternative(p["html"], subtype="html", charset="utf-8")
        return mail

    def __call__(self, message: Claimed) -> None:
        s = self.settings
        mail = self.build(message)
        if s.mail_dir is not None:
            self._write(mail, message.key, Path(s.mail_dir))
            return
        try:
            with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.send_timeout_seconds) as smtp:
                if s.smtp_starttls:
                    smtp.starttls()
                if s.smtp_username:
                    smtp.login(s.smtp_username, s.smtp_password or "")
                refused = smtp.send_message(mail)
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(f"SMTP {s.smtp_host}:{s.smtp_port}: {type(exc).__name__}: {exc}") from None
        if refused:
            raise SendError(f"SMTP refused recipients {sorted(refused)}")


    @staticmethod
    def _write(mail: EmailMessage, key: str, folder: Path) -> None:
        """One file per idempotency key, written atomically: a re-sent message replaces itself."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".eml"
            tmp = folder / f".{name}.tmp"
            tmp.write_bytes(bytes(mail))
            os.replace(tmp, folder / name)
        except OSError as exc:
            raise SendError(f"mail folder {folder}: {exc}") from None


class WebhookSender:
    def __init__(self, settings: Settings, clock: Clock, client: httpx.Client | None = None) -> None:
        self.settings, self.clock = settings, clock
        self.client = client or httpx.Client(timeout=settings.send_timeout_seconds, follow_redirects=False)

    def __call__(self, message: Claimed) -> None:
        env = message.payload["secret_env"]
        secret = os.environ.get(env)
        if not secret:
            raise SendError(f"the webhook secret variable {env} is not set")
        body = message.payload["body"].encode("utf-8")
        timestamp = str(int(self.clock.now().timestamp()))
        headers = {"Content-Type": "application/json; charset=utf-8", TIMESTAMP_HEADER: timestamp,
                   SIGNATURE_HEADER: sign(secret, timestamp, body), IDEMPOTENCY_HEADER: message.key,
                   EVENT_HEADER: message.event or ""}
        try:
            r = self.client.post(message.receiver, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(f"POST {message.receiver}: {type(exc).__name__}: {exc}") from None
        if not 200 <= r.status_code < 300:
            raise SendError(f"POST {message.receiver}: HTTP {r.status_code}")

    def close(self) -> None:
        self.client.close()


# --- claiming and settling ---------------------------------------------------------------------------
@dataclass
class DeliveryReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    dead: int = 0
    lost_lease: int = 0


class Delivery:
    """Delivers due outbox messages; several may run at once (processes or machines)."""

    def __init__(self, db: Database, settings: Settings, clock: Clock,
                 senders: dict[str, Sender] | None = None) -> None:
        self.db, self.settings, self.clock = db, settings, clock
        self.senders: dict[str, Sender] = senders or {"email": EmailSender(settings),
                                                      "webhook": WebhookSender(settings, clock)}

    def backoff(self, attempts: int) -> timedelta:
        """Doubling from `outbox_backoff_seconds`, capped, with up to 10% jitter so that messages
        that failed together do not retry together."""
        s = self.settings
        delay = min(s.outbox_backoff_seconds * 2 ** max(attempts - 1, 0), s.outbox_backoff_max_seconds)
        return timedelta(seconds=delay * (1 + random.random() * 0.1))

    def claim(self, limit: int | None = None) -> list[Claimed]:
        now = self.clock.now()
        owner = uuid.uuid4().hex
        waiting = (OutboxStatus.PENDING, OutboxStatus.FAILED)
        due = or_(and_(OutboxMessage.status.in_(waiting), OutboxMessage.next_attempt_at <= now),
                  and_(OutboxMessage.status == OutboxStatus.SENDING, OutboxMessage.locked_until < now))
        with self.db.transaction() as session:
            rows = list(session.scalars(
                select(OutboxMessage).where(due).order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
                .limit(limit or self.settings.outbox_batch_size).with_for_update(skip_locked=True)))
            lease = now + timedelta(seconds=self.settings.outbox_lease_seconds)
            out = []
            for m in rows:
                m.status, m.locked_until, m.lease_owner, m.attempts = OutboxStatus.SENDING, lease, owner, m.attempts + 1
                out.append(Claimed(m.id, m.idempotency_key, m.kind, m.receiver, m.subject, m.payload, m.event,
                                   m.letter_id, m.attempts, owner))
        return out

    def send(self, message: Claimed) -> None:
        sender = self.senders.get(message.kind)
        if sender is None:
            raise SendError(f"no sender for {message.kind!r} messages")
        sender(message)

    def settle(self, message: Claimed, error: str | None) -> str:
        """Record the result if this worker still holds the lease; the status written, or "lost"."""
        now = self.clock.now()
        if error is None:
            values: dict[str, Any] = {"status": OutboxStatus.SENT, "sent_at": now, "last_error": None}
        elif message.attempts >= self.settings.outbox_max_attempts:
            values = {"status": OutboxStatus.DEAD, "last_error": error}
        else:
            values = {"status": OutboxStatus.FAILED, "last_error": error,
                      "next_attempt_at": now + self.backoff(message.attempts)}
        values.update(locked_until=None, lease_owner=None)
        with self.db.transaction() as session:
            done = session.execute(
                update(OutboxMessage).where(OutboxMessage.id == message.id, OutboxMessage.lease_owner == message.owner,
                                            OutboxMessage.status == OutboxStatus.SENDING)
                .values(**values).execution_options(synchronize_session=False))
            if done.rowcount != 1:
                return "lost"
            if message.letter_id is not None and values["status"] in (OutboxStatus.SENT, OutboxStatus.DEAD):
                what = "delivered" if values["status"] == OutboxStatus.SENT else "undeliverable"
                session.add(LetterEvent(letter_id=message.letter_id, kind=what, at=now,
                                        note=f"{message.event or ''} {message.kind} → {message.receiver}"
                                             + (f" ({error[:300]})" if error else "")))
        return values["status"]

    def run_once(self, limit: int | None = None) -> DeliveryReport:
        report = DeliveryReport()
        for message in self.claim(limit):
            report.claimed += 1
            try:
                self.send(message)
                error = None
            except SendError as exc:
                error = mask_pii(str(exc))[:2000]
            except Exception as exc:  # a bug in a sender must not stop the others
                log.exception("sending outbox message %s failed unexpectedly", message.id)
                error = f"{type(exc).__name__}: {mask_pii(str(exc))[:500]}"
            status = self.settle(message, error)
            if status == "lost":
                report.lost_lease += 1
                log.warning("outbox message %s: lease lost before settling (another worker retries it)", message.id)
            else:
                setattr(report, status, getattr(report, status) + 1)
            if error:
                log.warning("outbox message %s (%s → %s) attempt %d: %s", message.id, message.kind,
                            message.receiver, message.attempts, error)
        return report


# --- reading and retrying (admin) ---------------------------------------------------------------------
def counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
    out = dict.fromkeys(map(str, OutboxStatus), 0)
    out.update({status: n for status, n in rows})
    return out


class OutboxAdmin:
    """What operators see of the outbox: messages by status (dead letters first of all), and a
    way to give a dead message another round of attempts."""

    def __init__(self, db: Database, settings: Settings, clock: Clock) -> None:
        self.db, self.settings, self.clock = db, settings, clock

    def list_page(self, status: str | None, limit: int | None, offset: int) -> OutboxPage:
        if limit is not None and limit > self.settings.page_limit_max:
            raise invalid("limit", f"at most {self.settings.page_limit_max}")
        limit = limit or self.settings.page_limit_default
        query = select(OutboxMessage)
        if status:
            query = query.where(OutboxMessage.status == status)
        with self.db.reading() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(OutboxMessage.id.desc()).limit(limit).offset(offset))
            return OutboxPage(items=[_out(m) for m in rows], total=total, limit=limit, offset=offset)

    def retry(self, message_id: int) -> OutboxOut:
        with self.db.transaction() as session:
            msg = session.get(OutboxMessage, message_id, with_for_update=True)
            if msg is None:
                raise NotFound(f"message_id: no outbox message {message_id}", field="message_id")
            if msg.status not in (OutboxStatus.DEAD, OutboxStatus.FAILED):
                raise Conflict(f"message {message_id} is {msg.status}; only dead or failed "
                                                "messages are retried")
            msg.status, msg.attempts, msg.next_attempt_at = OutboxStatus.PENDING, 0, self.clock.now()
            msg.locked_until, msg.lease_owner, msg.last_error = None, None, None
            session.flush()
            return _out(msg)


def _out(m: OutboxMessage) -> OutboxOut:
    return OutboxOut(id=m.id, idempotency_key=m.idempotency_key, kind=m.kind, event=m.event, receiver=m.receiver,
                     subject=m.subject, status=m.status, attempts=m.attempts, next_attempt_at=m.next_attempt_at,
                     last_error=m.last_error, letter_id=m.letter_id, created_at=m.created_at, sent_at=m.sent_at)
