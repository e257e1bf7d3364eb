"""The database schema (SQLAlchemy 2 typed declarative). Alembic migrations in service/migrations
create it; a change here needs a new migration (tests compare the two).

Times are stored as UTC and come back timezone-aware on SQLite and PostgreSQL alike.
Complaint text, notes and customer references are stored only after `models.text.clean`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from service.vocab import (
    ACTIVE_ALERT,
    AlertStatus,
    ComplaintStatus,
    LetterStatus,
    OutboxStatus,
    RiskLevel,
    one_of,
)

# Stable constraint names: Alembic needs them to alter or drop constraints later (SQLite batch mode too).
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out; naive values are refused, not guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: Json}


class ApiKey(Base):
    """A caller of the API. Only the sha256 of the key is kept; `prefix` identifies it in lists."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    scope: Mapped[str] = mapped_column(String(120))  # intake | admin | protection | department:<部门>
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


_ACTIVE = one_of("status", ACTIVE_ALERT)


class Alert(Base):
    """One matter that needs a department's attention. Repeats with the same dedup key (customer,
    category, cause) update the active alert; the partial unique index keeps one active (open or
    silenced) alert per key even when two workers race. A letter lists an open alert once
    (`letter_id`); a silenced one is kept for the record and gets no letter."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("uq_alerts_active_dedup_key", "dedup_key", unique=True,
              sqlite_where=text(_ACTIVE), postgresql_where=text(_ACTIVE)),
        CheckConstraint("occurrences >= 1", name="occurrences_positive"),
        CheckConstraint(one_of("status", AlertStatus), name="status_known"),
        CheckConstraint(one_of("risk_level", RiskLevel), name="risk_level_known"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(400), index=True)
    status: Mapped[str] = mapped_column(String(16), default=AlertStatus.OPEN, index=True)  # service.vocab.AlertStatus
    reason: Mapped[str] = mapped_column(String(32))  # risk_level | referral | …
    department: Mapped[str] = mapped_column(String(100), index=True)
    customer_ref: Mapped[str | None] = mapped_column(String(128))
    category: Mapped[str | None] = mapped_column(String(64))
    cause: Mapped[str | None] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(String(100))
    risk_score: Mapped[float | None]
    risk_level: Mapped[str | None] = mapped_column(String(4))
    occurrences: Mapped[int] = mapped_column(default=1)
    letter_id: Mapped[int | None] = mapped_column(Id, ForeignKey("letters.id", ondelete="SET NULL"), index=True)
    silence_id: Mapped[int | None] = mapped_column(Id, ForeignKey("silences.id", ondelete="SET NULL"))
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    # received_at of the latest complaint: the dedup window runs from here
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    resolved_at: Mapped[datetime | None]

    letter: Mapped[Letter | None] = relationship(foreign_keys=[letter_id])
    complaints: Mapped[list[Complaint]] = relationship(back_populates="alert")


class Complaint(Base):
    """One request or complaint as received, with the prediction made when it arrived."""

    __tablename__ = "complaints"
    __table_args__ = (
        CheckConstraint(one_of("status", ComplaintStatus), name="status_known"),
        CheckConstraint(one_of("risk_level", RiskLevel), name="risk_level_known"),
        CheckConstraint("repeat_count IS NULL OR repeat_count >= 0", name="repeat_count_not_negative"),
        Index("ix_complaints_received_at_id", "received_at", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128), unique=True)
    text_masked: Mapped[str] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(String(32), index=True)
    branch: Mapped[str] = mapped_column(String(100), index=True)
    received_at: Mapped[datetime]
    customer_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    product: Mapped[str | None] = mapped_column(String(100))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(18, 2, asdecimal=True))
    repeat_count: Mapped[int | None]
    # The model's answer at intake, whole (top-k, phrases, review reasons) and in indexed columns.
    prediction: Mapped[dict[str, Any]]
    model_version: Mapped[str] = mapped_column(String(64), index=True)
    category: Mapped[str | None] = mapped_column(String(64), index=True)
    category_probability: Mapped[float | None]
    cause: Mapped[str | None] = mapped_column(String(64), index=True)
    cause_probability: Mapped[float | None]
    risk_score: Mapped[float | None]
    risk_level: Mapped[str | None] = mapped_column(String(4), index=True)
    needs_review: Mapped[bool] = mapped_column(default=False, index=True)
    # Handling: the 15/30/60-day rule and the digest's "closed within 15 days" read these.
    status: Mapped[str] = mapped_column(String(16), default=ComplaintStatus.OPEN,
                                        server_default=ComplaintStatus.OPEN.value, index=True)
    closed_at: Mapped[datetime | None]
    alert_id: Mapped[int | None] = mapped_column(Id, ForeignKey("alerts.id", ondelete="SET NULL"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(Id, ForeignKey("api_keys.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    alert: Mapped[Alert | None] = relationship(back_populates="complaints")
    outcomes: Mapped[list[ComplaintOutcome]] = relationship(
        back_populates="complaint", order_by="ComplaintOutcome.id", cascade="all, delete-orphan")


class ComplaintOutcome(Base):
    """Feedback on a complaint: what really happened and the right labels. Several may be recorded;
    for each field the latest non-empty value counts (see service.labels)."""

    __tablename__ = "complaint_outcomes"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    complaint_id: Mapped[int] = mapped_column(Id, ForeignKey("complaints.id", ondelete="CASCADE"), index=True)
    escalated: Mapped[bool | None]
    category: Mapped[str | None] = mapped_column(String(64))
    cause: Mapped[str | None] = mapped_column(String(64))
    # The reviewer states that the predicted category and cause are right (they become labels too).
    confirmed: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    note: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[int | None] = mapped_column(Id, ForeignKey("api_keys.id", ondelete="SET NULL"))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    complaint: Mapped[Complaint] = relationship(back_populates="outcomes")


class LetterSequence(Base):
    """The per-year counter behind letter numbers. Take the next number with
    `UPDATE letter_sequences SET last_seq = last_seq + 1 WHERE year = :y RETURNING last_seq` inside the
    letter's transaction: the row lock serialises workers and a rollback returns the number, so
    numbers stay gapless and never repeat."""

    __tablename__ = "letter_sequences"
    __table_args__ = (CheckConstraint("last_seq >= 0", name="last_seq_not_negative"),)

    year: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(default=0)


class Letter(Base):
    """A 投诉风险提示函 to one department, numbered 〔year〕第NNNN号."""

    __tablename__ = "letters"
    __table_args__ = (
        UniqueConstraint("year", "seq"),
        CheckConstraint("seq >= 1", name="seq_positive"),
        CheckConstraint(one_of("status", LetterStatus), name="status_known"),
        CheckConstraint(one_of("risk_level", RiskLevel), name="risk_level_known"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    year: Mapped[int]
    seq: Mapped[int]
    number: Mapped[str] = mapped_column(String(32), unique=True)
    department: Mapped[str] = mapped_column(String(100), index=True)
    status: Mapped[str] = mapped_column(String(16), default=LetterStatus.ISSUED, index=True)  # service.vocab.LetterStatus
    # One letter per department per grouping window: the window's key makes a second worker's
    # attempt to open the same letter fail instead of duplicating it.
    group_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    risk_level: Mapped[str | None] = mapped_column(String(4))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow)
    ack_due_at: Mapped[datetime | None] = mapped_column(index=True)
    response_due_at: Mapped[datetime | None] = mapped_column(index=True)
    acknowledged_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    reminders: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    # 15, or 30 / 60 once extended for a complex case (POST /v1/letters/{id}/extend)
    response_days: Mapped[int] = mapped_column(default=15, server_default=text("15"))
    ack_note: Mapped[str | None] = mapped_column(Text)
    resolve_note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    items: Mapped[list[LetterItem]] = relationship(back_populates="letter", order_by="LetterItem.id",
                                                   cascade="all, delete-orphan")
    events: Mapped[list[LetterEvent]] = relationship(back_populates="letter", order_by="LetterEvent.id",
                                                     cascade="all, delete-orphan")


class LetterItem(Base):
    """One request listed in a letter; `snapshot` freezes what the letter showed about it."""

    __tablename__ = "letter_items"
    __table_args__ = (UniqueConstraint("letter_id", "complaint_id"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    letter_id: Mapped[int] = mapped_column(Id, ForeignKey("letters.id", ondelete="CASCADE"), index=True)
    complaint_id: Mapped[int] = mapped_column(Id, ForeignKey("complaints.id", ondelete="RESTRICT"), index=True)
    alert_id: Mapped[int | None] = mapped_column(Id, ForeignKey("alerts.id", ondelete="SET NULL"), index=True)
    snapshot: Mapped[dict[str, Any]] = mapped_column(default=dict)

    letter: Mapped[Letter] = relationship(back_populates="items")


class LetterEvent(Base):
    """The letter's history: issued, sent, delivered, acknowledged, reminded, escalated, resolved."""

    __tablename__ = "letter_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    letter_id: Mapped[int] = mapped_column(Id, ForeignKey("letters.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    api_key_id: Mapped[int | None] = mapped_column(Id, ForeignKey("api_keys.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow)

    letter: Mapped[Letter] = relationship(back_populates="events")


class OutboxMessage(Base):
    """A message to deliver, written in the same transaction as the change that causes it. The
    idempotency key goes with the message so a receiver can drop a redelivery after a crash."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        CheckConstraint(one_of("status", OutboxStatus), name="status_known"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # email | webhook
    receiver: Mapped[str] = mapped_column(String(1000))  # address or URL
    subject: Mapped[str | None] = mapped_column(String(300))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING)  # service.vocab.OutboxStatus
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime | None]  # a worker's lease; an expired lease means it crashed
    lease_owner: Mapped[str | None] = mapped_column(String(64))  # only the lease holder may settle it
    event: Mapped[str | None] = mapped_column(String(40))  # letter.issued, letter.reminder, …
    last_error: Mapped[str | None] = mapped_column(Text)
    letter_id: Mapped[int | None] = mapped_column(Id, ForeignKey("letters.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    sent_at: Mapped[datetime | None]


class Silence(Base):
    """Mutes alerts matching every non-empty field until `ends_at`."""

    __tablename__ = "silences"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    department: Mapped[str | None] = mapped_column(String(100))
    category: Mapped[str | None] = mapped_column(String(64))
    cause: Mapped[str | None] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(String(100))
    comment: Mapped[str | None] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(default=utcnow)
    ends_at: Mapped[datetime] = mapped_column(index=True)
    api_key_id: Mapped[int | None] = mapped_column(Id, ForeignKey("api_keys.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Digest(Base):
    """A 投诉处理周报 generated and handed to the outbox. The scheduler's row is unique per week (partial
    index), so a restarted or second worker never sends a scheduled digest twice; on-demand sends are
    recorded too, with the recipients they reached."""

    __tablename__ = "digests"
    __table_args__ = (
        Index("uq_digests_scheduled_week", "week", unique=True,
              sqlite_where=text("source = 'schedule'"), postgresql_where=text("source = 'schedule'")),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    week: Mapped[str] = mapped_column(String(8), index=True)  # ISO week, 2026-W47
    source: Mapped[str] = mapped_column(String(16))  # schedule | api | cli
    forced: Mapped[bool] = mapped_column(default=False, server_default=text("false"))
    recipients: Mapped[list[str]] = mapped_column(Json, default=list)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the figures, without generated_at
    generated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsoleSession(Base):
    """A browser signed in to the console (service.web). The cookie carries a random token and only
    its sha256 is stored, so the table alone opens no session; signing out deletes the row. The
    CSRF synchroniser token of the session's forms lives here too."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the cookie's token
    api_key_id: Mapped[int] = mapped_column(Id, ForeignKey("api_keys.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)
