"""Hand-built rows for the digest tests: complaints, alerts and letters at chosen local times."""

from __future__ import annotations

from datetime import datetime
from itertools import count
from typing import Any
from zoneinfo import ZoneInfo

from service.tables import Alert, Complaint, Letter

ZONE = ZoneInfo("Asia/Shanghai")
_ids = count(1)


def at(text: str) -> datetime:
    """'2026-05-11 09:00' in the bank's zone, as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=ZONE)


def complaint(received: str, *, branch: str = "城东支行", category: str | None = "信用卡",
              cause: str | None = "定价收费", channel: str = "电话客服", level: str | None = "低",
              score: float | None = 0.05, closed: str | None = None, needs_review: bool = False,
              phrases: list[str] | None = None, version: str = "v-test", text: str = "客户反映信用卡年费多扣",
              alert: Alert | None = None) -> Complaint:
    n = next(_ids)
    prediction: dict[str, Any] = {"model_version": version, "needs_review": needs_review}
    if phrases is not None:
        # Phrases spread over the heads as the model names them; one may repeat across heads.
        prediction["category"] = {"label": category, "probability": 0.9, "top_k": [],
                                  "phrases": [{"phrase": p, "weight": 0.1} for p in phrases]}
        prediction["risk"] = {"score": score, "level": level,
                              "phrases": [{"phrase": p, "weight": 0.1} for p in phrases[:1]]}
    return Complaint(external_id=f"T-{n:05d}", text_masked=text, channel=channel, branch=branch,
                     received_at=at(received), prediction=prediction, model_version=version, category=category,
                     cause=cause, risk_score=score, risk_level=level, needs_review=needs_review,
                     status="closed" if closed else "open", closed_at=at(closed) if closed else None, alert=alert)


def letter(number: int, issued: str, *, department: str = "信用卡中心", ack_due: str | None = None,
           response_due: str | None = None, acknowledged: str | None = None, resolved: str | None = None) -> Letter:
    status = "resolved" if resolved else "acknowledged" if acknowledged else "issued"
    return Letter(year=2026, seq=number, number=f"〔2026〕第{number:04d}号", department=department, status=status,
                  issued_at=at(issued), ack_due_at=at(ack_due) if ack_due else None,
                  response_due_at=at(response_due) if response_due else None,
                  acknowledged_at=at(acknowledged) if acknowledged else None,
                  resolved_at=at(resolved) if resolved else None)


def alert(department: str = "信用卡中心", letter_row: Letter | None = None, status: str = "open") -> Alert:
    return Alert(dedup_key=f"K{next(_ids)}", status=status, reason="risk_level", department=department,
                 risk_level="高", letter=letter_row)
