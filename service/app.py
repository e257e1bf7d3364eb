"""The FastAPI application: `create_app(settings)`.

At start it brings the database schema to the latest migration and loads the registry's current
model. Without a model it still starts: /readyz answers 503 with the reason and
POST /v1/admin/model/reload loads one once it is trained.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from models.registry import ModelLoadError, Registry
from service import openapi
from service.alerting import Alerting
from service.alerting_metrics import AlertWatchCollector, DeliveryCollector
from service.api import admin, complaints, digests, errors, health, predict
from service.api import letters as letters_api
from service.api import outbox as outbox_api
from service.api import silences as silences_api
from service.clock import Clock, SystemClock
from service.db import Database
from service.digest.service import DigestJob
from service.intake import Intake
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestContext
from service.model_holder import ModelHolder
from service.outbox import OutboxAdmin
from service.ratelimit import RateLimiter
from service.routing import load_routing
from service.settings import Settings
from service.silences import Silences
from service.web import routes as console
from service.worker import Worker

log = logging.getLogger("xiaobao.service")

DESCRIPTION = """消保预警: complaint-risk early warning for the consumer-protection department.

Send `Authorization: Bearer <key>` (`xiaobao keys create`). Errors are JSON:
`{"error": {"code", "message", "field"}}`, naming the field at fault.
"""


def create_app(settings: Settings | None = None, *, database: Database | None = None,
               model: ModelHolder | None = None, clock: Clock | None = None) -> FastAPI:
    """The app. `database` and `model` may be shared (tests); otherwise they come from `settings`.
    `clock` drives alerting, letters and delivery (tests pass a ManualClock). A routing file that
    does not validate, or whose working-day calendar does not cover the clock's year, stops it here
    (RoutingError, one line)."""
    settings = settings or Settings()
    clock = clock or SystemClock()
    routing = load_routing(settings)
    calendar_warnings = routing.check_calendar(clock.now().astimezone(settings.zone).date())
    own_database = database is None
    db = database or Database(settings.database_url)
    holder = model or ModelHolder(Registry.from_settings(settings.models), probe_channel=settings.channels[0])
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await run_in_threadpool(db.upgrade)
        if holder.version is None:
            try:
                await run_in_threadpool(holder.reload)
            except ModelLoadError as exc:
                log.warning("starting without a model: %s", exc)
        metrics.set_model(holder.version)
        log.info("serving on %s with model %s", db.url, holder.version)
        for warning in (*routing.warnings, *calendar_warnings):
            log.warning("%s", warning)
        for env in routing.missing_secrets():
            log.warning("routing: webhook secret variable %s is not set; those webhooks will fail", env)
        if settings.run_worker:
            app.state.worker = Worker(db, settings, alerting, clock, jobs=[DigestJob(settings).job()])
            app.state.worker.start()
        try:
            yield
        finally:
            if app.state.worker is not None:
                app.state.worker.stop()
            if own_database:
                db.dispose()

    app = FastAPI(title="消保预警 API", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.db, app.state.model, app.state.metrics = settings, db, holder, metrics
    alerting = Alerting(settings, routing, clock)
    app.state.routing, app.state.clock, app.state.alerting = routing, clock, alerting
    app.state.letters = alerting.letters
    app.state.silences = Silences(db, settings, clock, routing.departments)
    app.state.outbox = OutboxAdmin(db, settings, clock)
    app.state.worker = None
    metrics.registry.register(DeliveryCollector(db, clock))
    metrics.registry.register(AlertWatchCollector(db, clock, holder))
    app.state.intake = Intake(db, settings, metrics, alerting)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    errors.install(app)
    for router in (predict.router, complaints.router, letters_api.router, silences_api.router, outbox_api.router,
                   admin.router, digests.router, health.router):
        app.include_router(router, dependencies=[Depends(openapi.checked_query)])
    openapi.install(app, settings, list(routing.departments))  # the schema states the deployment's limits
    console.install(app)  # the browser console (/console/…) on the same services
    # The last added runs first: ids and timing wrap everything, including a 413.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=metrics)
    return app
