"""Reading complaints and recording feedback on them.

A department key sees only the requests whose alert was routed to its department; asking for
another one's request answers 404, so ids do not reveal what exists elsewhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from models.text import clean
from service.auth import Principal
from service.clock import to_utc
from service.db import Database
from service.errors import NotFound, invalid
from service.intake import alert_ref
from service.schemas import (
    ComplaintOut,
    ComplaintPage,
    ComplaintSummary,
    Labels,
    OutcomeIn,
    OutcomeOut,
    Prediction,
)
from service.settings import Settings
from service.tables import Alert, Complaint, ComplaintOutcome
from service.vocab import ComplaintStatus


@dataclass
class Filters:
    channel: str | None = None
    branch: str | None = None
    category: str | None = None
    cause: str | None = None
    risk_level: str | None = None
    needs_review: bool | None = None
    status: str | None = None
    customer_ref: str | None = None
    received_from: datetime | None = None
    received_to: datetime | None = None


def visible(query: Select, principal: Principal) -> Select:
    if principal.department is None:
        return query
    return query.join(Alert, Complaint.alert_id == Alert.id).where(Alert.department == principal.department)


def _filtered(filters: Filters, settings: Settings) -> Select:
    query = select(Complaint)
    for name in ("channel", "branch", "category", "cause", "risk_level", "needs_review", "status", "customer_ref"):
        value = asdict(filters)[name]
        if value is not None:
            query = query.where(getattr(Complaint, name) == value)
    if filters.received_from is not None:
        query = query.where(Complaint.received_at >= to_utc(filters.received_from, settings, "received_from"))
    if filters.received_to is not None:
        query = query.where(Complaint.received_at < to_utc(filters.received_to, settings, "received_to"))
    return query


def summary(c: Complaint) -> ComplaintSummary:
    return ComplaintSummary(
        id=c.id, external_id=c.external_id, text=c.text_masked, channel=c.channel, branch=c.branch,
        received_at=c.received_at, customer_ref=c.customer_ref, product=c.product,
        amount=None if c.amount is None else float(c.amount), repeat_count=c.repeat_count,
        model_version=c.model_version, category=c.category, cause=c.cause, risk_score=c.risk_score,
        risk_level=c.risk_level, needs_review=c.needs_review, status=c.status, closed_at=c.closed_at,
        alert_id=c.alert_id, created_at=c.created_at)


def merged_labels(c: Complaint, outcomes: list[ComplaintOutcome]) -> Labels:
    """The labels established by the outcomes, oldest first: each field takes its latest value; a
    confirmation takes the predicted category/cause unless the same outcome corrects them."""
    labels = Labels()
    for o in outcomes:
        if o.escalated is not None:
            labels.escalated = o.escalated
        for head in ("category", "cause"):
            corrected = getattr(o, head)
            if corrected is not None:
                setattr(labels, head, corrected)
            elif o.confirmed and getattr(c, head) is not None:
                setattr(labels, head, getattr(c, head))
    return labels


def list_page(db: Database, settings: Settings, principal: Principal, filters: Filters,
              limit: int | None, offset: int) -> ComplaintPage:
    if filters.received_from and filters.received_to and \
            to_utc(filters.received_from, settings, "received_from") >= to_utc(filters.received_to, settings, "received_to"):
        raise invalid("received_to", "must be later than received_from")
    if limit is not None and limit > settings.page_limit_max:
        raise invalid("limit", f"at most {settings.page_limit_max}")
    limit = limit or settings.page_limit_default
    query = visible(_filtered(filters, settings), principal)
    with db.reading() as session:
        total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        rows = session.scalars(query.order_by(Complaint.received_at.desc(), Complaint.id.desc())
                               .limit(limit).offset(offset))
        items = [summary(c) for c in rows]
    return ComplaintPage(items=items, total=total or 0, limit=limit, offset=offset)


def _load(session: Session, principal: Principal, complaint_id: int) -> Complaint:
    query = visible(select(Complaint).where(Complaint.id == complaint_id), principal).options(
        selectinload(Complaint.alert).selectinload(Alert.letter), selectinload(Complaint.outcomes))
    complaint = session.scalar(query)
    if complaint is None:
        raise NotFound(f"complaint_id: no complaint {complaint_id}", field="complaint_id")
    return complaint


def get_one(db: Database, principal: Principal, complaint_id: int) -> ComplaintOut:
    with db.reading() as session:
        c = _load(session, principal, complaint_id)
        return ComplaintOut(**summary(c).model_dump(), prediction=Prediction.model_validate(c.prediction),
                            alert=alert_ref(c.alert), labels=merged_labels(c, c.outcomes) if c.outcomes else None)


def _check_label(value: str | None, field: str, allowed: list[str]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise invalid(field, f"{value!r} is not a known label; use one of {', '.join(allowed)}")
    return value


CLOSED_AT_HORIZON = timedelta(days=366)


def record_outcome(db: Database, settings: Settings, principal: Principal, complaint_id: int,
                   body: OutcomeIn) -> OutcomeOut:
    category = _check_label(body.category, "category", settings.categories)
    cause = _check_label(body.cause, "cause", settings.causes)
    closed_at = to_utc(body.closed_at, settings, "closed_at") if body.closed_at else None
    if closed_at is not None and closed_at > datetime.now(UTC) + CLOSED_AT_HORIZON:
        # a typing error, and near year 9999 one that overflows when shown in the bank's zone (a 500)
        raise invalid("closed_at", "lies in the future (more than a year from now)")
    with db.transaction() as session:
        c = _load(session, principal, complaint_id)
        if closed_at is not None and closed_at < c.received_at:
            raise invalid("closed_at", "lies before the request was received")
        outcome = ComplaintOutcome(complaint=c, escalated=body.escalated, category=category, cause=cause,
                                   confirmed=body.confirmed, note=clean(body.note) if body.note else None,
                                   api_key_id=principal.key_id)
        session.add(outcome)
        if body.closed or closed_at is not None:
            c.status = ComplaintStatus.CLOSED
            c.closed_at = closed_at or c.closed_at or datetime.now(UTC)
        session.flush()
        labels = merged_labels(c, c.outcomes)
        return OutcomeOut(id=outcome.id, complaint_id=c.id, escalated=outcome.escalated, category=outcome.category,
                          cause=outcome.cause, confirmed=outcome.confirmed, note=outcome.note,
                          recorded_at=outcome.recorded_at, complaint_status=c.status, closed_at=c.closed_at,
                          labels=labels)
