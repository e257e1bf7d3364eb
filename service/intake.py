"""Intake: check a request, mask it, score it, store it — once per external_id, whatever the races.

`Intake._store_once` calls alerting directly (`Alerting.alert_for` per complaint, then
`Alerting.issue_owed_letters`) inside the transaction that stores the complaints, so a complaint and
whatever it raises (alert, letter, outbox messages) commit together, and a 2xx answer means all of
it is committed. The outbox messages are sent by the worker, so only after that commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, selectinload

from models.bundle import ModelBundle
from models.text import clean
from service.alerting import Alerting
from service.auth import Principal
from service.clock import to_utc
from service.db import Database
from service.errors import Invalid, invalid
from service.metrics import Metrics
from service.schemas import (
    AlertRef,
    ComplaintIn,
    IntakeResult,
    LetterRef,
    Prediction,
    PredictItem,
)
from service.settings import Settings
from service.tables import Alert, Complaint

log = logging.getLogger("xiaobao.service.intake")

FUTURE_TOLERANCE = timedelta(days=1)  # upstream clocks drift; a later time is a mistake


# --- checks ------------------------------------------------------------------------------------
def check_text(text: str | None, field: str, settings: Settings) -> str:
    """The masked, normalised text; 422 naming the field if it is empty or too long."""
    if text is None or not text.strip():
        raise invalid(field, "text is empty")
    if len(text) > settings.max_text_chars:
        raise invalid(field, f"text has {len(text)} characters; at most {settings.max_text_chars} are accepted")
    masked = clean(text)
    if not masked:
        raise invalid(field, "text is empty once control characters are removed")
    return masked


def check_channel(channel: str | None, field: str, settings: Settings, *, required: bool) -> str | None:
    if channel is None or channel == "":
        if required:
            raise invalid(field, "a channel is required")
        return None
    if channel not in settings.channels:
        raise invalid(field, f"{channel!r} is not a known channel; use one of {', '.join(settings.channels)}")
    return channel


def check_batch(n: int, limit: int, field: str) -> None:
    if n == 0:
        raise invalid(field, "the batch is empty")
    if n > limit:
        raise Invalid(f"{field}: {n} items; at most {limit} per request", field=field, code="batch_too_large")


DEADLOCK_RETRIES = 3
RETRYABLE_SQLSTATES = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure
EARLIEST_YEAR = 1990  # no bank request in this system predates it; older dates are typing errors


def _optional_clean(value: str | None) -> str | None:
    if value is None:
        return None
    value = clean(value)
    return value or None


def _amount(amount: float | None) -> Decimal | None:
    return None if amount is None else Decimal(str(amount)).quantize(Decimal("0.01"))


@dataclass
class Prepared:
    """A checked request, masked and ready to score."""

    item: ComplaintIn
    text: str
    received_at: datetime
    customer_ref: str | None
    branch: str
    product: str | None

    @property
    def fields(self) -> dict[str, Any]:
        return {"channel": self.item.channel, "repeat_count": self.item.repeat_count, "amount": self.item.amount}

    def differences(self, stored: Complaint) -> list[str]:
        """The API fields of this request that are not what `stored` holds, compared as stored (masked)."""
        item = self.item
        sent = {"text": self.text, "channel": item.channel, "branch": self.branch, "received_at": self.received_at,
                "customer_ref": self.customer_ref, "product": self.product, "amount": _amount(item.amount),
                "repeat_count": item.repeat_count}
        held = {"text": stored.text_masked, "channel": stored.channel, "branch": stored.branch,
                "received_at": stored.received_at, "customer_ref": stored.customer_ref, "product": stored.product,
                "amount": stored.amount, "repeat_count": stored.repeat_count}
        return [name for name, value in sent.items() if held[name] != value]


def prepare(item: ComplaintIn, settings: Settings, prefix: str = "") -> Prepared:
    text = check_text(item.text, prefix + "text", settings)
    check_channel(item.channel, prefix + "channel", settings, required=True)
    try:
        received = to_utc(item.received_at, settings)
    except (OverflowError, ValueError):  # e.g. 0001-01-01 cannot shift to UTC
        raise invalid(prefix + "received_at", "is out of range") from None
    if received.year < EARLIEST_YEAR:
        raise invalid(prefix + "received_at", f"lies before {EARLIEST_YEAR}")
    if received > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise invalid(prefix + "received_at", "lies in the future")
    branch = clean(item.branch)
    if not branch:
        raise invalid(prefix + "branch", "branch is empty")
    return Prepared(item, text, received, _optional_clean(item.customer_ref), branch, _optional_clean(item.product))


def prepare_predict_items(items: list[PredictItem], settings: Settings, prefix: str) -> tuple[list[str], list[dict]]:
    texts, fields = [], []
    for i, item in enumerate(items):
        p = f"{prefix}[{i}]." if prefix else ""
        texts.append(check_text(item.text, p + "text", settings))
        check_channel(item.channel, p + "channel", settings, required=False)
        fields.append({"channel": item.channel, "repeat_count": item.repeat_count, "amount": item.amount})
    return texts, fields


# --- storing -----------------------------------------------------------------------------------
def _new_complaint(p: Prepared, prediction: dict[str, Any], principal: Principal | None) -> Complaint:
    category, cause, risk = prediction.get("category"), prediction.get("cause"), prediction.get("risk")
    item = p.item
    return Complaint(
        external_id=item.external_id, text_masked=p.text, channel=item.channel, branch=p.branch,
        received_at=p.received_at, customer_ref=p.customer_ref, product=p.product,
        amount=_amount(item.amount),
        repeat_count=item.repeat_count, prediction=prediction, model_version=str(prediction["model_version"]),
        category=category["label"] if category else None,
        category_probability=category["probability"] if category else None,
        cause=cause["label"] if cause else None, cause_probability=cause["probability"] if cause else None,
        risk_score=risk["score"] if risk else None, risk_level=risk["level"] if risk else None,
        needs_review=bool(prediction.get("needs_review")), api_key_id=principal.key_id if principal else None,
    )


def alert_ref(alert: Alert | None) -> AlertRef | None:
    if alert is None:
        return None
    letter = alert.letter
    return AlertRef(id=alert.id, status=alert.status, reason=alert.reason, department=alert.department,
                    risk_level=alert.risk_level, occurrences=alert.occurrences,
                    letter=LetterRef(id=letter.id, number=letter.number) if letter else None)


def result_of(complaint: Complaint, created: bool, alert: Alert | None) -> IntakeResult:
    return IntakeResult(id=complaint.id, external_id=complaint.external_id, created=created,
                        prediction=Prediction.model_validate(complaint.prediction), alert=alert_ref(alert))


def _existing(session: Session, external_ids: list[str]) -> dict[str, Complaint]:
    rows = session.scalars(select(Complaint).where(Complaint.external_id.in_(external_ids))
                           .options(selectinload(Complaint.alert).selectinload(Alert.letter)))
    return {c.external_id: c for c in rows}


class Intake:
    """Stores requests for one app: database, model holder, settings and metrics together."""

    def __init__(self, db: Database, settings: Settings, metrics: Metrics, alerting: Alerting | None = None) -> None:
        self.db, self.settings, self.metrics = db, settings, metrics
        self.alerting = alerting  # None: store without alerting

    def find(self, external_ids: list[str]) -> dict[str, IntakeResult]:
        with self.db.reading() as session:
            return {k: result_of(c, False, c.alert) for k, c in _existing(session, external_ids).items()}

    def submit(self, bundle: ModelBundle, item: ComplaintIn, principal: Principal | None) -> IntakeResult:
        return self.submit_many(bundle, [item], principal, prefix=None)[0]

    def submit_many(self, bundle: ModelBundle, items: list[ComplaintIn], principal: Principal | None,
                    prefix: str | None = "items") -> list[IntakeResult]:
        """Every item is checked before anything is stored; a bad one refuses the whole batch."""
        prepared = [prepare(item, self.settings, f"{prefix}[{i}]." if prefix else "") for i, item in enumerate(items)]
        known = self.find(list({p.item.external_id for p in prepared}))
        fresh: dict[str, Prepared] = {}
        for p in prepared:
            if p.item.external_id not in known:
                fresh.setdefault(p.item.external_id, p)  # a repeat inside one batch is the same request
        stored: dict[str, IntakeResult] = {}
        if fresh:
            todo = list(fresh.values())
            predictions = bundle.predict([p.text for p in todo], [p.fields for p in todo], explain=True,
                                         already_clean=True)
            stored = self._store(todo, predictions, principal)
        results = []
        seen: set[str] = set()
        for p in prepared:
            key = p.item.external_id
            result = known.get(key) or stored[key]
            if key in seen and result.created:
                result = result.model_copy(update={"created": False})
            seen.add(key)
            results.append(result)
        results = self._with_differences(prepared, results)
        self.metrics.count_intake(results)
        return results

    def _with_differences(self, prepared: list[Prepared], results: list[IntakeResult]) -> list[IntakeResult]:
        """A request answered with a record stored before (earlier, by a concurrent request, or
        earlier in the batch) says which of its fields the record does not hold: the stored record
        stands (the external_id is the idempotency key), and the caller learns its content differed."""
        repeats = [p.item.external_id for p, r in zip(prepared, results, strict=True) if not r.created]
        if not repeats:
            return results
        with self.db.reading() as session:
            held = _existing(session, repeats)
        return [r if r.created else r.model_copy(update={"differs": p.differences(held[p.item.external_id])})
                for p, r in zip(prepared, results, strict=True)]

    def _store(self, todo: list[Prepared], predictions: list[dict[str, Any]],
               principal: Principal | None) -> dict[str, IntakeResult]:
        """One transaction; each complaint in a savepoint, so a duplicate that another request stored
        meanwhile (the UNIQUE external_id refuses it) is answered with the stored record.

        Items go in dedup-key order, so two batches touching the same customers lock their alerts in
        the same order; a deadlock the database still reports is retried, since nothing was stored."""
        pairs = sorted(zip(todo, predictions, strict=True), key=lambda tp: (
            tp[0].customer_ref or "", (tp[1].get("category") or {}).get("label") or "",
            (tp[1].get("cause") or {}).get("label") or "", tp[0].item.external_id))
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                return self._store_once([p for p, _ in pairs], [q for _, q in pairs], principal)
            except OperationalError as exc:
                if attempt == DEADLOCK_RETRIES or getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                    raise
        raise AssertionError("unreachable")

    def _store_once(self, todo: list[Prepared], predictions: list[dict[str, Any]],
                    principal: Principal | None) -> dict[str, IntakeResult]:
        out: dict[str, IntakeResult] = {}
        lost: list[str] = []
        made: list[tuple[str, Complaint, Alert | None]] = []
        owed: list[Alert] = []  # alerts whose letter goes out before this transaction commits
        with self.db.transaction() as session:
            for p, prediction in zip(todo, predictions, strict=True):
                try:
                    with session.begin_nested():
                        complaint = _new_complaint(p, prediction, principal)
                        session.add(complaint)
                        session.flush()  # the id is set: alerting links and keys by it
                        alert = self.alerting.alert_for(session, complaint, owed) if self.alerting else None
                        session.flush()
                except IntegrityError:
                    if not _existing(session, [p.item.external_id]):
                        raise  # another constraint: a bug, not a duplicate
                    lost.append(p.item.external_id)
                    continue
                made.append((p.item.external_id, complaint, alert))
            if self.alerting is not None:
                self.alerting.issue_owed_letters(session, owed)  # after every alert row lock: see there
            out.update({key: result_of(complaint, True, alert) for key, complaint, alert in made})
            if lost:
                out.update({k: result_of(c, False, c.alert) for k, c in _existing(session, lost).items()})
        return out
