"""The model status page: the model being served, its card's validation metrics, and drift (PSI of
the risk scores against the training histogram) and the needs-review share over recent weeks,
taken from the weekly digest's model-health figures so both pages tell the same story."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models.registry import ModelLoadError
from service.db import Database
from service.digest import service as digests
from service.digest.build import PSI_MIN_SAMPLE, PSI_THRESHOLD
from service.digest.schema import ModelHealth
from service.digest.weeks import week_of
from service.model_holder import ModelHolder
from service.settings import Settings

HEALTH_WEEKS = 4  # this week so far and the three before


@dataclass
class WeekHealth:
    week: str
    complete: bool
    health: ModelHealth


@dataclass
class ModelStatus:
    version: str | None
    loaded_at: datetime | None
    last_error: str | None
    card: dict[str, Any] = field(default_factory=dict)
    card_error: str | None = None
    weeks: list[WeekHealth] = field(default_factory=list)
    psi_threshold: float = PSI_THRESHOLD
    psi_min_sample: int = PSI_MIN_SAMPLE

    @property
    def trained_at(self) -> datetime | None:
        try:
            return datetime.fromisoformat(str(self.card.get("created_at")))
        except ValueError:
            return None

    @property
    def validation(self) -> dict[str, Any]:
        return (self.card.get("metrics") or {}).get("validation") or {}


def model_status(db: Database, holder: ModelHolder, settings: Settings, now: datetime) -> ModelStatus:
    served = holder.served
    status = ModelStatus(version=served.version if served else None, loaded_at=served.loaded_at if served else None,
                         last_error=holder.last_error)
    if status.version:
        try:
            status.card = holder.registry.card(status.version)
        except (ModelLoadError, OSError, ValueError) as exc:
            status.card_error = str(exc)
    reference = digests.reference_of(holder)
    this_week = week_of(now, settings.zone)
    for back in range(HEALTH_WEEKS):
        week = this_week.shift(-back)
        digest = digests.make_digest(db, week, reference, now)
        status.weeks.append(WeekHealth(week.label, digest.complete, digest.model_health))
    return status
