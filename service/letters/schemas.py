"""Bodies of the letters endpoints (pydantic v2)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from service.schemas import In
from service.vocab import LetterStatus, RiskLevel

Note = Field(None, max_length=4000)


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


class AckIn(In):
    note: str | None = Note


class ResolveIn(In):
    note: str = Field(min_length=1, max_length=4000, description="处理情况及整改措施: what was done")


class ExtendIn(In):
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
