"""Request and response bodies (pydantic v2). Limits that depend on the settings (text length,
channels, batch sizes) are checked in service.intake, so they can be configured per deployment.

Numbers and flags are strict (a JSON "2" is not a repeat count); times are ISO 8601, and a time
without an offset is read in the configured zone (Asia/Shanghai by default).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from service.vocab import AlertStatus, ComplaintStatus, OutboxStatus, RiskLevel

# Times the API accepts: ISO 8601, never a bare number (pydantic would read one as a Unix timestamp,
# while the schema says date-time). Shifting to UTC may still overflow near year 1 or 9999: that
# is checked where the zone is known (service.clock.to_utc with the field's name).
_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _iso_only(value: object) -> object:
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("write an ISO 8601 date or time, e.g. 2026-05-06T10:00:00+08:00")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_only)]
# Offsets past a signed 64-bit integer overflow both databases' OFFSET (a 500 before).
MAX_OFFSET = 2**63 - 1


# What models.text.clean drops from text besides whitespace: C0 controls and DEL, zero-width marks,
# bidirectional embeddings, overrides and isolates, the BOM (a character class body, also for the
# OpenAPI patterns). Free text loses them at intake; an id is kept as sent, so one holding them is refused.
INVISIBLE = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
_INVISIBLE = re.compile(f"[{INVISIBLE}]")


def visible_id(value: str) -> str:
    found = _INVISIBLE.search(value)
    if found:
        raise ValueError(f"contains an invisible or control character (U+{ord(found.group()):04X}); ids are "
                         "kept as sent, so send it without")
    return value


def storable(value: object) -> object:
    """Strings the databases can hold: no NUL (PostgreSQL refuses it) and no unpaired surrogate
    (valid JSON, but not encodable as UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("contains a NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired surrogate (not valid Unicode text)") from None
    return value


# JSON as Python reads it allows NaN and Infinity: refused as such, not as "less than 1e15".
Amount = Annotated[float, Strict(), Field(ge=0, le=1e15, allow_inf_nan=False, description="金额 in yuan")]


def _whole(value: object) -> object:
    """JSON Schema counts 3.0 as an integer, so the API does too; "3", 3.5 and true stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


RepeatCount = Annotated[StrictInt, Field(ge=0, le=1_000_000, description="times the customer raised it before"),
                        BeforeValidator(_whole)]


def _absent(value: object) -> bool:
    """Left out of the JSON rather than null, as the model leaves out what it does not predict."""
    return value is None


class In(BaseModel):
    """A request body: unknown fields refused, strings stripped, nothing unstorable (NUL, lone surrogates)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    _storable = field_validator("*")(storable)


# --- prediction ------------------------------------------------------------------------------------
class LabelProbability(BaseModel):
    label: str
    probability: float


class Phrase(BaseModel):
    phrase: str
    weight: float


class HeadPrediction(BaseModel):
    label: str
    probability: float
    top_k: list[LabelProbability]
    phrases: list[Phrase] = []
    labels: list[str] | None = Field(None, exclude_if=_absent,
                                     description="all labels above threshold (multi-label models only)")


class RiskPrediction(BaseModel):
    score: float = Field(description="calibrated probability that the request becomes a dispute")
    level: RiskLevel
    phrases: list[Phrase] = []


class Prediction(BaseModel):
    """The model's full answer; a head is absent when the model was trained without its label."""

    model_config = ConfigDict(extra="allow")

    model_version: str
    category: HeadPrediction | None = Field(None, exclude_if=_absent)
    cause: HeadPrediction | None = Field(None, exclude_if=_absent)
    risk: RiskPrediction | None = Field(None, exclude_if=_absent)
    needs_review: bool
    review_reasons: list[str] = []


class PredictItem(In):
    text: str = Field(description="the request as written; personal data is masked before scoring")
    channel: str | None = None
    repeat_count: RepeatCount | None = None
    amount: Amount | None = None
    product: str | None = Field(None, max_length=100)


class PredictRequest(In):
    """Either one text (`text` and its fields) or a batch (`items`)."""

    text: str | None = None
    channel: str | None = None
    repeat_count: RepeatCount | None = None
    amount: Amount | None = None
    product: str | None = Field(None, max_length=100)
    items: list[PredictItem] | None = None
    explain: StrictBool = Field(True, description="include the phrases behind each decision")

    @model_validator(mode="after")
    def _one_or_batch(self) -> PredictRequest:
        single = self.text is not None or any(
            v is not None for v in (self.channel, self.repeat_count, self.amount, self.product))
        if self.items is None and self.text is None:
            raise ValueError("give `text` for one prediction or `items` for a batch")
        if self.items is not None and single:
            raise ValueError("give either `text` (with its fields) or `items`, not both")
        return self


class PredictResponse(BaseModel):
    model_version: str
    prediction: Prediction


class PredictBatchResponse(BaseModel):
    model_version: str
    predictions: list[Prediction]


# --- complaints ------------------------------------------------------------------------------------
class ComplaintIn(In):
    external_id: Annotated[str, AfterValidator(visible_id)] = Field(
        min_length=1, max_length=128, description="the upstream system's id; repeats are idempotent; no control, "
                                                  "zero-width or bidirectional characters")
    text: str
    channel: str
    branch: str = Field(min_length=1, max_length=100)
    received_at: Moment
    customer_ref: str | None = Field(None, max_length=128, description="the upstream's customer reference (masked if it holds personal data)")
    product: str | None = Field(None, max_length=100)
    amount: Amount | None = None
    repeat_count: RepeatCount | None = None


class ComplaintBatchIn(In):
    items: list[ComplaintIn]


class LetterRef(BaseModel):
    id: int
    number: str


class AlertRef(BaseModel):
    id: int
    status: AlertStatus
    reason: str
    department: str
    risk_level: RiskLevel | None
    occurrences: int
    letter: LetterRef | None = None


class IntakeResult(BaseModel):
    id: int
    external_id: str
    created: bool = Field(description="false when the external_id was known and the stored record is returned")
    differs: list[str] = Field(default_factory=list, description=(
        "the fields sent this time that are not what the stored record holds (after masking): a known "
        "external_id with other content; the stored record stands and nothing was stored. Empty otherwise"))
    prediction: Prediction
    alert: AlertRef | None = None


class IntakeBatchResult(BaseModel):
    items: list[IntakeResult]
    created: int
    existing: int


class Labels(BaseModel):
    """The labels feedback has established so far (see `POST …/outcome`)."""

    escalated: bool | None = None
    category: str | None = None
    cause: str | None = None


class ComplaintSummary(BaseModel):
    id: int
    external_id: str
    text: str = Field(description="masked")
    channel: str
    branch: str
    received_at: datetime
    customer_ref: str | None
    product: str | None
    amount: float | None
    repeat_count: int | None
    model_version: str
    category: str | None
    cause: str | None
    risk_score: float | None
    risk_level: RiskLevel | None
    needs_review: bool
    status: ComplaintStatus
    closed_at: datetime | None
    alert_id: int | None
    created_at: datetime


class ComplaintOut(ComplaintSummary):
    prediction: Prediction
    alert: AlertRef | None = None
    labels: Labels | None = None


class ComplaintPage(BaseModel):
    items: list[ComplaintSummary]
    total: int
    limit: int
    offset: int


class OutcomeIn(In):
    escalated: StrictBool | None = Field(None, description="the request did become a formal dispute")
    category: str | None = Field(None, description="the right category, if the prediction was wrong")
    cause: str | None = Field(None, description="the right cause, if the prediction was wrong")
    confirmed: StrictBool = Field(False, description="the predicted category and cause are right")
    note: str | None = Field(None, max_length=4000)
    closed: StrictBool = Field(False, description="the case is closed (handling finished)")
    closed_at: Moment | None = Field(None, description="when it was closed (default: now); implies closed")

    @model_validator(mode="after")
    def _says_something(self) -> OutcomeIn:
        given: dict[str, Any] = {"escalated": self.escalated, "category": self.category, "cause": self.cause,
                                 "note": self.note, "closed_at": self.closed_at}
        if not self.confirmed and not self.closed and all(v is None for v in given.values()):
            raise ValueError("give at least one of escalated, category, cause, confirmed, note, closed")
        return self


class OutcomeOut(BaseModel):
    id: int
    complaint_id: int
    escalated: bool | None
    category: str | None
    cause: str | None
    confirmed: bool
    note: str | None
    recorded_at: datetime
    complaint_status: ComplaintStatus
    closed_at: datetime | None
    labels: Labels


# --- operations ------------------------------------------------------------------------------------
class ReloadOut(BaseModel):
    previous_version: str | None
    version: str
    changed: bool


class ErrorDetail(BaseModel):
    field: str
    message: str
    type: str


class Error(BaseModel):
    code: str
    message: str
    field: str | None = None
    details: list[ErrorDetail] | None = None


class ErrorResponse(BaseModel):
    error: Error


# --- silences --------------------------------------------------------------------------------------
class SilenceIn(In):
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
