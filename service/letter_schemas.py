"""Bodies of the letters, silences and outbox endpoints (pydantic v2)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.schemas import Moment, storable
from service.vocab import LetterStatus, OutboxStatus, RiskLevel

Note = Field(None, max_length=4000)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    _storable = field_validator("*")(storable)  # no NUL or unpaired surrogate in what is stored


# --- letters ---------------------------------------------------------------------------------------
class LetterItemOut(BaseModel):
    """One request as the letter shows it (frozen when the letter was issued; masked)."""

    complaint_id: int
    external_id: str
    customer: str | None = Field(description="masked customer reference")
    branch: str
    channel: str
    received_at: datetime
    summary: str = Field(description="the request, personal data masked, shortened")
    category: str | None
    category_probability: float | None
    cause: str | None
    cause_probability: float | None
    risk_level: RiskLevel | None
    risk_score: float | None
    phrases: list[str] = Field(description="the phrases behind the prediction")
    occurrences: int = Field(description="contacts about this matter when the letter was issued")
    reason: str = Field(description="risk_level (risk reached the alert level) or referral (channel always alerts)")
    decision_due: date = Field(description="last day of the 15/30/60-day decision period")


class LetterEventOut(BaseModel):
    kind: str
    note: str | None
    at: datetime


class LetterSummary(BaseModel):
    id: int
    number: str = Field(description="〔year〕第NNNN号")
    department: str
    sender: str
    status: LetterStatus
    risk_level: RiskLevel | None
    items_count: int
    issued_at: datetime
    ack_due_at: datetime | None
    response_due_at: datetime | None
    response_days: int = Field(description="15, or 30 / 60 once extended")
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    reminders: int
    overdue: list[Literal["ack", "response"]] = Field(description="deadlines missed so far")


class LetterOut(LetterSummary):
    ack_note: str | None
    resolve_note: str | None
    items: list[LetterItemOut]
    events: list[LetterEventOut]


class LetterPage(BaseModel):
    items: list[LetterSummary]
    total: int
    limit: int
    offset: int


class FlushOut(BaseModel):
    letters: list[str] = Field(description="numbers of the letters issued")


class AckIn(_In):
    note: str | None = Note


class ResolveIn(_In):
    note: str = Field(min_length=1, max_length=4000, description="处理情况及整改措施: what was done")


class ExtendIn(_In):
    """A complex case: extend the decision period from 15 to 30 days, or (with the approval of the
    superior institution) to 60 days at most."""

    days: Literal[30, 60]
    reason: str = Field(min_length=1, max_length=2000)
    approved_by: str | None = Field(None, max_length=200, description="who approved a 60-day period (required for 60)")

    @model_validator(mode="after")
    def _approval(self) -> ExtendIn:
        if self.days == 60 and not self.approved_by:
            raise ValueError("a 60-day period needs the approval of the superior institution: give approved_by")
        return self


# --- silences --------------------------------------------------------------------------------------
class SilenceIn(_In):
    department: str | None = Field(None, max_length=100)
    category: str | None = Field(None, max_length=64)
    cause: str | None = Field(None, max_length=64)
    branch: str | None = Field(None, max_length=100)
    starts_at: Moment | None = Field(None, description="default: now")
    ends_at: Moment
    comment: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _matches_something(self) -> SilenceIn:
        if not any((self.department, self.category, self.cause, self.branch)):
            raise ValueError("a silence needs at least one of department, category, cause, branch")
        return self


class SilenceOut(BaseModel):
    id: int
    department: str | None
    category: str | None
    cause: str | None
    branch: str | None
    starts_at: datetime
    ends_at: Moment
    active: bool
    comment: str | None
    created_at: datetime


class SilencePage(BaseModel):
    items: list[SilenceOut]
    total: int


# --- outbox ----------------------------------------------------------------------------------------
class OutboxOut(BaseModel):
    id: int
    idempotency_key: str
    kind: str
    event: str | None
    receiver: str
    subject: str | None
    status: OutboxStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    letter_id: int | None
    created_at: datetime
    sent_at: datetime | None


class OutboxPage(BaseModel):
    items: list[OutboxOut]
    total: int
    limit: int
    offset: int
