"""The FastAPI application: `create_app(settings)`.

At start it brings the database schema to the latest migration and loads the registry's current
model. Without a model it still starts: /readyz answers 503 with the reason and
POST /v1/admin/model/reload loads one once it is trained.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from models.registry import ModelLoadError, Registry
from service import errors
from service.api import admin, complaints, health, predict
from service.db import Database
from service.intake import Intake
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestContext
from service.model_holder import ModelHolder
from service.settings import Settings

log = logging.getLogger("xiaobao.service")

DESCRIPTION = """消保预警: complaint-risk early warning for the consumer-protection department.

Send `Authorization: Bearer <key>` (`xiaobao keys create`). Errors are JSON:
`{"error": {"code", "message", "field"}}`, naming the field at fault.
"""


def create_app(settings: Settings | None = None, *, database: Database | None = None,
               model: ModelHolder | None = None) -> FastAPI:
    """The app. `database` and `model` may be shared (tests); otherwise they come from `settings`."""
    settings = settings or Settings()
    own_database = database is None
    db = database or Database(settings.database_url)
    holder = model or ModelHolder(Registry(settings.registry) if settings.registry else Registry(),
                                  probe_channel=settings.channels[0])
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
        try:
            yield
        finally:
            if own_database:
                db.dispose()

    app = FastAPI(title="消保预警 API", version="1", description=DESCRIPTION, lifespan=lifespan)
    app.state.settings, app.state.db, app.state.model, app.state.metrics = settings, db, holder, metrics
    app.state.intake = Intake(db, settings, metrics)
    errors.install(app)
    for router in (predict.router, complaints.router, admin.router, health.router):
        app.include_router(router)
    # The last added runs first: ids and timing wrap everything, including a 413.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestContext, metrics=metrics)
    return app
