"""The 投诉处理周报 as data (pydantic v2): what the JSON answer is and what every renderer reads.

Counts are integers, shares are fractions in [0, 1] (renderers show percentages), changes in
percent. Times are UTC; `start`/`end` are the week's local Monday-to-Monday window.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

from service.vocab import AlertStatus, ComplaintStatus, LetterStatus, RiskLevel


class Change(BaseModel):
    """A figure against an earlier period; `change_pct` is null (with `note`) where it is undefined."""

    current: int
    previous: int | None
    change: int | None
    change_pct: float | None = Field(description="percent; -40.14 means 40.14% fewer")
    note: str | None = None


class WeekCount(BaseModel):
    week: str
    count: int
    high_risk: int


class Volume(BaseModel):
    this_week: int
    week_on_week: Change
    year_on_year: Change
    trend: list[WeekCount] = Field(description="the last 12 weeks, oldest first, this week last")


class BreakdownRow(BaseModel):
    label: str
    count: int
    share: float
    previous: int = Field(description="the previous week's count")
    high_risk: int


class BranchRow(BaseModel):
    rank: int
    branch: str
    count: int
    previous: int
    high_risk: int
    due: int = Field(description="requests whose 15-day deadline fell in this week")
    closed_within_15: int
    closed_within_15_share: float | None
    open_over_15: int = Field(description="open at the week's end and older than 15 days")


class RequestRow(BaseModel):
    """A request as the digest lists it."""

    id: int
    external_id: str
    received_at: datetime
    branch: str
    channel: str
    category: str | None
    cause: str | None
    risk_score: float | None
    excerpt: str = Field(description="the start of the masked text")


class HighRiskItem(RequestRow):
    status: ComplaintStatus = Field(description="at the week's end")
    alert_id: int | None
    alert_status: AlertStatus | None
    department: str | None
    letter_number: str | None
    letter_status: LetterStatus | None


class HighRisk(BaseModel):
    total: int
    with_alert: int
    with_letter: int
    closed: int
    items: list[HighRiskItem] = Field(description="the highest scores first, at most 50")


class LetterRow(BaseModel):
    number: str
    department: str
    issued_at: datetime
    ack_due_at: datetime | None
    response_due_at: datetime | None
    status: LetterStatus
    overdue: str = Field(description="ack | response | ack+response")


class DepartmentLetters(BaseModel):
    department: str
    sent: int
    acknowledged: int
    overdue: int


class DeadMessage(BaseModel):
    """An outgoing message that failed every attempt (a dead letter), as the outbox holds it now."""

    id: int
    kind: str
    event: str | None
    receiver: str
    attempts: int
    last_error: str | None


class Letters(BaseModel):
    sent: int = Field(description="issued this week")
    acknowledged: int = Field(description="acknowledged this week")
    resolved: int = Field(description="resolved this week")
    overdue: int = Field(description="at the week's end: a deadline passed without acknowledgement or resolution")
    overdue_ack: int
    overdue_response: int
    by_department: list[DepartmentLetters]
    overdue_items: list[LetterRow] = Field(description="the oldest first, at most 50")
    # Delivery state, not a figure of the week: read when the digest is generated (a retried
    # message leaves the list), so operators see receivers that keep failing.
    undeliverable: int = Field(0, description="outbox messages dead (every attempt failed) when generated")
    undeliverable_items: list[DeadMessage] = Field(default_factory=list, description="the oldest first, at most 20")


class DueItem(BaseModel):
    id: int
    external_id: str
    branch: str
    category: str | None
    received_at: datetime
    age_days: float
    deadline_days: int = Field(description="15, 30 or 60: the next limit of the 15/30/60-day rule")
    due_at: datetime = Field(description="the end of the last day (service.letters.deadlines)")
    due_date: date = Field(description="the last day, local")
    excerpt: str


class Handling(BaseModel):
    closed: int = Field(description="closed this week")
    median_days: float | None = Field(description="median days from receipt to closing, of those closed this week")
    closed_this_week_within_15_share: float | None
    due: int = Field(description="requests whose 15-day deadline fell in this week")
    due_closed_within_15: int
    closed_within_15_share: float | None = Field(description="of `due`: closed within 15 days")
    open_total: int = Field(description="open at the week's end")
    open_over_15: int
    open_over_30: int
    open_over_60: int
    due_soon_total: int = Field(description="open cases whose next 15/30/60-day limit falls in the next 3 days")
    due_soon: list[DueItem] = Field(description="the nearest deadline first, at most 50")


class TopicRow(BaseModel):
    phrase: str
    count: int = Field(description="requests of this week whose explanation names the phrase")
    baseline_weekly: float = Field(description="average requests per week naming it in the 4 weeks before")
    lift: float = Field(description="smoothed share this week / share in the baseline weeks")
    score: float = Field(description="rank: (count - expected) / sqrt(expected + 1), expected from the baseline")


class Topics(BaseModel):
    baseline_weeks: int
    min_count: int
    items: list[TopicRow]
    note: str | None = None


class VersionCount(BaseModel):
    version: str
    count: int


class ModelHealth(BaseModel):
    scored: int = Field(description="requests of the week with a risk score")
    psi: float | None
    drift: bool = Field(description="PSI above the threshold")
    psi_threshold: float
    reference_version: str | None = Field(description="the model whose training histogram is the reference")
    histogram: list[float] = Field(description="this week's share of scores in each tenth of [0, 1]")
    reference_histogram: list[float] | None
    needs_review: int
    needs_review_share: float | None
    versions: list[VersionCount] = Field(description="model versions that scored this week's requests")
    note: str | None = None


class LevelWatch(BaseModel):
    level: RiskLevel = Field(description="高, or 中 counting 高 too: the requests at or above it")
    raised: int = Field(description="requests of the week at or above the level")
    rate: float | None = Field(description="their share of the week's scored requests")
    expected_rate: float | None = Field(description="the share the model card expects (held-out writers)")
    off: bool = Field(description="the rate is under two thirds or over 1.5 times the expected one, "
                                  "with enough requests to tell")
    outcomes_alerted: int = Field(description="of the window's requests with a known outcome, those at or above")
    recall: float | None = Field(description="share of the window's escalated requests at or above the level")
    precision: float | None = Field(description="share of those at or above the level that escalated")


class MissedItem(RequestRow):
    risk_level: RiskLevel | None


class AlertWatch(BaseModel):
    """Alerts raised against the rate the model card expects, and, where outcomes are recorded, how
    past weeks' alerts did: recall and precision, and the escalated requests that got none (漏报)."""

    levels: list[LevelWatch]
    outcomes_from: datetime = Field(description="the outcome window: requests received from here ...")
    outcomes_to: datetime = Field(description="... to the week's end")
    outcomes: int = Field(description="requests of the window with a recorded escalation outcome")
    escalated: int
    missed_total: int = Field(description="escalated requests of the window that raised no alert (漏报)")
    missed: list[MissedItem] = Field(description="漏报 for review, the highest scores first, at most 50")
    note: str | None = None


class WeeklyDigest(BaseModel):
    """投诉处理周报 for one ISO week."""

    week: str
    start: datetime
    end: datetime
    timezone: str
    complete: bool = Field(description="false while the week is still running")
    generated_at: datetime
    volume: Volume
    categories: list[BreakdownRow]
    causes: list[BreakdownRow]
    channels: list[BreakdownRow]
    branches: list[BranchRow]
    high_risk: HighRisk
    letters: Letters
    handling: Handling
    topics: Topics
    model_health: ModelHealth
    alert_watch: AlertWatch


class DigestSendResult(BaseModel):
    week: str
    digest_id: int | None = Field(description="the record of this sending; null when nothing new was sent")
    sent_to: list[str] = Field(description="recipients given a message now")
    already_sent: list[str] = Field(description="recipients who had this week's digest already (idempotent)")
    content_hash: str
