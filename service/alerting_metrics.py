"""Gauges read from the database when /metrics is scraped: letters by status (and overdue),
outbox messages by status (dead letters included), alerts by status; the alert rate per risk level
against the model card's, and the recall and precision of past alerts where outcomes exist."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select

from service.clock import Clock
from service.db import Database
from service.digest.build import OUTCOME_WEEKS, alert_watch
from service.digest.service import reference_of
from service.outbox import counts as outbox_counts
from service.tables import Alert, Letter
from service.vocab import AlertStatus, LetterStatus, OutboxStatus

log = logging.getLogger("xiaobao.service.metrics")



class DeliveryCollector(Collector):
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock.now()
        try:
            with self.db.reading() as session:
                letters = dict(session.execute(select(Letter.status, func.count()).group_by(Letter.status)).all())
                overdue = session.scalar(select(func.count()).select_from(Letter).where(
                    Letter.status != LetterStatus.RESOLVED,
                    or_(Letter.response_due_at <= now,
                        (Letter.status == LetterStatus.ISSUED) & (Letter.ack_due_at <= now))))
                outbox = outbox_counts(session)
                alerts = dict(session.execute(select(Alert.status, func.count()).group_by(Alert.status)).all())
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("metrics: database gauges unavailable: %s", exc)
            return
        g = GaugeMetricFamily("xiaobao_letters", "Letters by status", labels=["status"])
        for status in sorted(set(map(str, LetterStatus)) | set(letters)):
            g.add_metric([status], letters.get(status, 0))
        yield g
        yield GaugeMetricFamily("xiaobao_letters_overdue", "Letters past their acknowledgement or response deadline",
                                value=overdue or 0)
        g = GaugeMetricFamily("xiaobao_outbox_messages", "Outbox depth by status", labels=["status"])
        for status, n in outbox.items():
            g.add_metric([status], n)
        yield g
        yield GaugeMetricFamily("xiaobao_outbox_dead", "Messages that failed every attempt (dead letters)",
                                value=outbox.get(OutboxStatus.DEAD, 0))
        g = GaugeMetricFamily("xiaobao_alerts", "Alerts by status", labels=["status"])
        for status in sorted(set(map(str, AlertStatus)) | set(alerts)):
            g.add_metric([status], alerts.get(status, 0))
        yield g


RATE_WINDOW = timedelta(days=7)  # the alert rate: requests of the last week, as the digest counts a week


class AlertWatchCollector(Collector):
    """The digest's 预警效果 figures over a trailing window (service.digest.build:alert_watch)."""

    def __init__(self, db: Database, clock: Clock, holder: Any) -> None:
        self.db, self.clock, self.holder = db, clock, holder

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock.now()
        try:
            with self.db.reading() as session:
                watch = alert_watch(session, now - RATE_WINDOW, now, now - timedelta(weeks=OUTCOME_WEEKS),
                                    reference_of(self.holder))
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("metrics: alert watch unavailable: %s", exc)
            return
        figures = {
            "xiaobao_risk_level_rate": ("Share of the last 7 days' scored requests at or above the level", "rate"),
            "xiaobao_risk_level_expected_rate": ("The share the served model's card expects at or above the level",
                                                 "expected_rate"),
            "xiaobao_alert_recall": (f"Of the last {OUTCOME_WEEKS} weeks' escalated requests, the share at or "
                                     "above the level", "recall"),
            "xiaobao_alert_precision": (f"Of the last {OUTCOME_WEEKS} weeks' requests with an outcome at or above "
                                        "the level, the share that escalated", "precision"),
        }
        for name, (doc, attr) in figures.items():
            g = GaugeMetricFamily(name, doc, labels=["level"])
            for row in watch.levels:
                value = getattr(row, attr)
                if value is not None:
                    g.add_metric([row.level], value)
            yield g
        yield GaugeMetricFamily("xiaobao_escalation_outcomes",
                                f"Requests of the last {OUTCOME_WEEKS} weeks with a recorded escalation outcome",
                                value=watch.outcomes)
        yield GaugeMetricFamily("xiaobao_alerts_missed",
                                f"Escalated requests of the last {OUTCOME_WEEKS} weeks that raised no alert (漏报)",
                                value=watch.missed_total)
