"""Prometheus metrics of one app. Each app has its own registry, so several apps in one process
(tests) do not collide. Gauges read from the database (letters by status, outbox depth) belong in
a custom collector registered on `Metrics.registry`; they are computed when /metrics is scraped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

if TYPE_CHECKING:
    from service.schemas import IntakeResult

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.request_seconds = Histogram(
            "xiaobao_http_request_duration_seconds", "Time to answer an HTTP request, by route template",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter(
            "xiaobao_predictions", "Texts scored, by source (predict or intake), risk level and top category",
            ["source", "risk_level", "category"], registry=r)
        self.complaints = Counter(
            "xiaobao_complaints_received", "Intake answers: created (stored now) or existing (external_id known)",
            ["result"], registry=r)
        self.model_info = Gauge("xiaobao_model_info", "The model version being served (value 1)", ["version"],
                                registry=r)
        self.model_loaded = Gauge("xiaobao_model_loaded", "1 while a model is loaded", registry=r)
        self.model_reloads = Counter("xiaobao_model_reloads", "Reload attempts by result (ok or refused)",
                                     ["result"], registry=r)

    def observe_predictions(self, source: str, predictions: Iterable[dict[str, Any]]) -> None:
        for p in predictions:
            risk, category = p.get("risk"), p.get("category")
            self.predictions.labels(source, risk["level"] if risk else "none",
                                    category["label"] if category else "none").inc()

    def count_intake(self, results: Iterable[IntakeResult]) -> None:
        for r in results:
            self.complaints.labels("created" if r.created else "existing").inc()
            if r.created:
                self.observe_predictions("intake", [r.prediction.model_dump()])

    def set_model(self, version: str | None) -> None:
        self.model_info.clear()
        if version:
            self.model_info.labels(version).set(1)
        self.model_loaded.set(1 if version else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
