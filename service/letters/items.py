"""What a letter shows of each request it lists, frozen when it is issued (`letter_items.snapshot`):
masked, shortened, with the phrases behind the prediction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from models.text import clean
from service.tables import Alert, Complaint
from service.vocab import LEVEL_RANK

SUMMARY_CHARS = 160
PHRASES_PER_ITEM = 6


def max_level(levels: Iterable[str | None]) -> str | None:
    known = [lv for lv in levels if lv in LEVEL_RANK]
    return max(known, key=LEVEL_RANK.__getitem__) if known else None


def mask_ref(ref: str | None) -> str | None:
    """A customer reference as a letter shows it: both ends kept, the middle starred."""
    if not ref:
        return None
    if len(ref) <= 2:
        return ref[0] + "*"
    keep = max(1, len(ref) // 4)
    return ref[:keep] + "*" * max(len(ref) - 2 * keep, 2) + ref[-keep:]


def summarize(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = clean(text)  # stored masked already; cleaning again costs little and guards old rows
    return text if len(text) <= limit else text[: limit - 1] + "…"


def phrases_of(prediction: dict[str, Any]) -> list[str]:
    """Risk phrases first (why it may escalate), then category and cause phrases; no repeats."""
    out: list[str] = []
    for head in ("risk", "cause", "category"):
        part = prediction.get(head) or {}
        for p in part.get("phrases") or []:
            phrase = p.get("phrase") if isinstance(p, dict) else None
            if phrase and phrase not in out and (p.get("weight") or 0) > 0:
                out.append(phrase)
    return out[:PHRASES_PER_ITEM]


def snapshot(c: Complaint, alert: Alert) -> dict[str, Any]:
    return {"complaint_id": c.id, "external_id": c.external_id, "customer": mask_ref(c.customer_ref),
            "branch": c.branch, "channel": c.channel, "received_at": c.received_at.isoformat(),
            "summary": summarize(c.text_masked), "category": c.category,
            "category_probability": c.category_probability, "cause": c.cause,
            "cause_probability": c.cause_probability, "risk_level": c.risk_level, "risk_score": c.risk_score,
            "phrases": phrases_of(c.prediction), "occurrences": alert.occurrences, "reason": alert.reason}
