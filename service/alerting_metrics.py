"""Gauges read from the database when /metrics is scraped: letters by status (and overdue),
outbox messages by status (dead letters included), alerts by status."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select

from service.clock import Clock
from service.db import Database
from service.outbox import counts as outbox_counts
from service.tables import Alert, Letter

log = logging.getLogger("xiaobao.service.metrics")

LETTER_STATUSES = ("issued", "acknowledged", "resolved")
ALERT_STATUSES = ("open", "silenced", "resolved", "lapsed")


class DeliveryCollector(Collector):
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db, self.clock = db, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self.clock.now()
        try:
            with self.db.reading() as session:
                letters = dict(session.execute(select(Letter.status, func.count()).group_by(Letter.status)).all())
                overdue = session.scalar(select(func.count()).select_from(Letter).where(
                    Letter.status != "resolved",
                    or_(Letter.response_due_at <= now, (Letter.status == "issued") & (Letter.ack_due_at <= now))))
                outbox = outbox_counts(session)
                alerts = dict(session.execute(select(Alert.status, func.count()).group_by(Alert.status)).all())
        except Exception as exc:  # a scrape must not fail because the database is away
            log.warning("metrics: database gauges unavailable: %s", exc)
            return
        g = GaugeMetricFamily("xiaobao_letters", "Letters by status", labels=["status"])
        for status in sorted(set(LETTER_STATUSES) | set(letters)):
            g.add_metric([status], letters.get(status, 0))
        yield g
        yield GaugeMetricFamily("xiaobao_letters_overdue", "Letters past their acknowledgement or response deadline",
                                value=overdue or 0)
        g = GaugeMetricFamily("xiaobao_outbox_messages", "Outbox depth by status", labels=["status"])
        for status, n in outbox.items():
            g.add_metric([status], n)
        yield g
        yield GaugeMetricFamily("xiaobao_outbox_dead", "Messages that failed every attempt (dead letters)",
                                value=outbox.get("dead", 0))
        g = GaugeMetricFamily("xiaobao_alerts", "Alerts by status", labels=["status"])
        for status in sorted(set(ALERT_STATUSES) | set(alerts)):
            g.add_metric([status], alerts.get(status, 0))
        yield g
