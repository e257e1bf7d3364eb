"""Helpers for the alerting, letters and delivery tests: the machinery on one test database with a
manual clock, and complaints with the labels a test needs (no model involved)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import func, select

from models.text import clean
from service.alerting import Alerting
from service.clock import ManualClock
from service.db import Database
from service.outbox import Delivery
from service.routing import Routing, default_path, load_routing
from service.settings import Settings
from service.tables import Alert, Complaint, Letter, OutboxMessage
from service.worker import Worker

# Wednesday 6 May 2026, 10:00 in Shanghai.
T0 = datetime(2026, 5, 6, 2, 0, tzinfo=UTC)
PII_TEXT = ("客户张先生来电，手机13812345678，身份证110101199003071234，反映信用卡6222021234567890123"
            "被连续扣了两次年费，邮箱zhang.san@example.com，多次联系客服无果，情绪激动，表示要向银保监会投诉。")
RAW_SECRETS = ("13812345678", "110101199003071234", "6222021234567890123", "zhang.san@example.com")
_ids = itertools.count(1)


def settings_for(db: Database, **changes: Any) -> Settings:
    base = {"database_url": db.engine.url.render_as_string(hide_password=False), "migrate_on_start": False}
    base.update(changes)
    return Settings(**base)


def routing_file(tmp_path: Path, *, webhook_url: str | None = None, secret_env: str = "XB_TEST_SECRET",
                 protection_webhook: bool = False, **top: Any) -> Path:
    """The shipped routing with webhooks added (card centre, and the protection department)."""
    raw = yaml.safe_load(default_path().read_text(encoding="utf-8"))
    if webhook_url:
        raw["departments"]["信用卡中心"]["webhook"] = {"url": webhook_url, "secret_env": secret_env}
        if protection_webhook:
            raw["departments"]["消费者权益保护部"]["webhook"] = {"url": webhook_url + "/cc", "secret_env": secret_env}
    raw.update(top)
    path = tmp_path / f"routing-{next(_ids)}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def prediction(category: str | None, cause: str | None, level: str | None, score: float | None) -> dict[str, Any]:
    p: dict[str, Any] = {"model_version": "test", "needs_review": False}
    if category:
        p["category"] = {"label": category, "probability": 0.91, "top_k": [],
                         "phrases": [{"phrase": "年费", "weight": 1.4}, {"phrase": "无关", "weight": -0.3}]}
    if cause:
        p["cause"] = {"label": cause, "probability": 0.83, "top_k": [], "phrases": [{"phrase": "重复扣费", "weight": 0.9}]}
    if level:
        p["risk"] = {"score": score, "level": level, "phrases": [{"phrase": "投诉", "weight": 0.7}]}
    return p


class Desk:
    """Alerting, letters and the worker on one database, driven by a manual clock."""

    def __init__(self, db: Database, settings: Settings, routing: Routing | None = None,
                 senders: dict | None = None, start: datetime = T0) -> None:
        self.db, self.settings = db, settings
        self.clock = ManualClock(start)
        self.routing = routing or load_routing(settings)
        self.alerting = Alerting(settings, self.routing, self.clock)
        self.letters = self.alerting.letters
        self.delivery = Delivery(db, settings, self.clock, senders=senders)
        self.worker = Worker(db, settings, self.alerting, self.clock, delivery=self.delivery)

    def intake(self, external_id: str | None = None, *, customer: str | None = "C0001", category: str | None = "信用卡",
               cause: str | None = "定价收费", level: str | None = "高", score: float | None = 0.9,
               channel: str = "电话客服", branch: str = "城东支行", received: datetime | None = None,
               text: str = "信用卡年费被重复扣了两次，客服一直推诿，要求退还并道歉，否则向监管投诉") -> dict[str, Any]:
        """Store one complaint and call alerting on it, as the intake transaction does."""
        with self.db.transaction() as session:
            c = Complaint(external_id=external_id or f"T-{next(_ids)}", text_masked=clean(text),
                          channel=channel, branch=branch, received_at=received or self.clock.now(),
                          customer_ref=customer, prediction=prediction(category, cause, level, score),
                          model_version="test", category=category, category_probability=0.91, cause=cause,
                          cause_probability=0.83, risk_score=score, risk_level=level, needs_review=False)
            session.add(c)
            session.flush()
            owed: list[Alert] = []
            alert = self.alerting.alert_for(session, c, owed)
            self.alerting.issue_owed_letters(session, owed)
            session.flush()
            return {"complaint": c.id, "alert": alert.id if alert else None,
                    "letter": alert.letter_id if alert else None, "status": alert.status if alert else None}

    def flush(self, force: bool = False) -> list[str]:
        return self.worker.flush(force=force)


def count(db: Database, table) -> int:
    with db.reading() as s:
        return s.scalar(select(func.count()).select_from(table)) or 0


def alerts(db: Database) -> list[Alert]:
    with db.reading() as s:
        return list(s.scalars(select(Alert).order_by(Alert.id)))


def letters(db: Database) -> list[Letter]:
    with db.reading() as s:
        return list(s.scalars(select(Letter).order_by(Letter.id)))


def messages(db: Database) -> list[OutboxMessage]:
    with db.reading() as s:
        return list(s.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def later(hours: float = 0, days: float = 0, minutes: float = 0) -> timedelta:
    return timedelta(hours=hours, days=days, minutes=minutes)
