"""The service's one vocabulary: the statuses of letters, alerts, outbox messages and complaints, the
risk levels (defined with the model, `models.levels`), and the one Chinese label of each.

The database's CHECK constraints (`one_of`), the API's schemas and query parameters, the console,
the letters, the digest and its xlsx all take their values and labels from here, so a status is
spelled and named the same everywhere. Members are `StrEnum`s: they compare equal to the strings
stored in the database and print as their value.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from models.levels import RISK_LEVELS, RiskLevel


class LetterStatus(StrEnum):
    """A 投诉风险提示函: issued → acknowledged (签收) → resolved (办结); resolved may follow issued."""

    ISSUED = "issued"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class AlertStatus(StrEnum):
    """open until its letter is resolved; silenced by a silence; lapsed when the dedup window passed
    before it reached a letter (a repeat then opens a new matter)."""

    OPEN = "open"
    SILENCED = "silenced"
    RESOLVED = "resolved"
    LAPSED = "lapsed"


class OutboxStatus(StrEnum):
    """pending → sending (a worker's lease) → sent, or failed (retried later) → dead (out of attempts)."""

    PENDING = "pending"
    SENDING = "sending"
    FAILED = "failed"
    SENT = "sent"
    DEAD = "dead"


class ComplaintStatus(StrEnum):
    """A request's handling: open until an outcome closes it (the 15/30/60-day rule counts to here)."""

    OPEN = "open"
    CLOSED = "closed"


# Alerts that hold their dedup key: one per key (a partial unique index), and the ones a repeat updates.
ACTIVE_ALERT = (AlertStatus.OPEN, AlertStatus.SILENCED)

# The one label table. Keyed by vocabulary, not by value: "open" and "resolved" mean different
# things for an alert, a letter and a complaint.
LABELS: dict[type[StrEnum], dict[StrEnum, str]] = {
    LetterStatus: {LetterStatus.ISSUED: "待签收", LetterStatus.ACKNOWLEDGED: "已签收，处理中",
                   LetterStatus.RESOLVED: "已办结"},
    AlertStatus: {AlertStatus.OPEN: "待处理", AlertStatus.SILENCED: "已静默", AlertStatus.RESOLVED: "已解决",
                  AlertStatus.LAPSED: "已过期"},
    OutboxStatus: {OutboxStatus.PENDING: "待发送", OutboxStatus.SENDING: "发送中", OutboxStatus.FAILED: "发送失败，待重试",
                   OutboxStatus.SENT: "已发送", OutboxStatus.DEAD: "无法送达"},
    ComplaintStatus: {ComplaintStatus.OPEN: "未办结", ComplaintStatus.CLOSED: "已办结"},
    RiskLevel: {level: level.value for level in RiskLevel},
}
# Templates name a vocabulary by these keys: {{ letter.status | label("letter") }}.
VOCABULARIES: dict[str, type[StrEnum]] = {"letter": LetterStatus, "alert": AlertStatus, "outbox": OutboxStatus,
                                          "complaint": ComplaintStatus, "risk": RiskLevel}

for _vocabulary, _labels in LABELS.items():  # a member without a label, or a label without a member, is a bug
    if set(_labels) != set(_vocabulary):
        raise RuntimeError(f"service.vocab: the labels of {_vocabulary.__name__} do not match its members")


def labels(vocabulary: type[StrEnum]) -> dict[str, str]:
    """Value → label of every member, in the vocabulary's order (for filter lists and legends)."""
    return {member.value: LABELS[vocabulary][member] for member in vocabulary}


def label(value: str | None, vocabulary: str | type[StrEnum]) -> str | None:
    """The label of `value` in `vocabulary` (a class or a key of VOCABULARIES); None stays None and a
    value outside the vocabulary shows as itself, so a page never fails on an unexpected row."""
    if value is None:
        return None
    kind = VOCABULARIES[vocabulary] if isinstance(vocabulary, str) else vocabulary
    return labels(kind).get(value, value)


def one_of(column: str, values: Iterable[StrEnum]) -> str:
    """SQL that keeps `column` inside `values` (a vocabulary, or some of its members), for CHECK
    constraints and partial indexes; NULL passes a CHECK, as unknown does."""
    quoted = ", ".join(f"'{member.value}'" for member in values)
    return f"{column} IN ({quoted})"


# Higher is riskier: 高 3, 中 2, 低 1.
LEVEL_RANK: dict[str, int] = {level.value: len(RISK_LEVELS) - i for i, level in enumerate(RISK_LEVELS)}

__all__ = ["ACTIVE_ALERT", "LABELS", "LEVEL_RANK", "RISK_LEVELS", "VOCABULARIES", "AlertStatus", "ComplaintStatus",
           "LetterStatus", "OutboxStatus", "RiskLevel", "label", "labels", "one_of"]
