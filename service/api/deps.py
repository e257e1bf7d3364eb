"""What routes need from the app (settings, database, model, metrics) and the caller's key.

The accessors are `async` so FastAPI calls them on the event loop: a sync dependency costs a trip
through the thread pool, and under load those trips, not the work, made the latency."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from models.bundle import ModelBundle
from service.api.errors import ApiError
from service.auth import Principal, authenticate
from service.db import Database
from service.intake import Intake
from service.metrics import Metrics
from service.model_holder import ModelHolder, ModelUnavailable
from service.ratelimit import RateLimiter
from service.settings import Settings

# On the API's HTML and text answers (letters, digests, metrics): never sniffed into another type;
# nothing loads from elsewhere and nothing runs; inline styles (the documents carry their own) and
# data: images (the digest's charts) only.
DOCUMENT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
}

_bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer xb_…`")


async def settings(request: Request) -> Settings:
    return request.app.state.settings


async def database(request: Request) -> Database:
    return request.app.state.db


async def holder(request: Request) -> ModelHolder:
    return request.app.state.model


async def metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def intake(request: Request) -> Intake:
    return request.app.state.intake


async def bundle(request: Request) -> ModelBundle:
    """The model for this request; a reload meanwhile does not change it."""
    try:
        return request.app.state.model.get()
    except ModelUnavailable as exc:
        raise ApiError(503, "model_unavailable", f"no model is being served: {exc}",
                       headers={"Retry-After": "30"}) from None


def require(permission: str) -> Callable[..., Principal]:
    """A dependency: the caller's key must be valid (401), within its rate (429) and hold
    `permission` (403)."""

    def check(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
            raise ApiError(401, "unauthorized", "send an API key as `Authorization: Bearer <key>`", headers=challenge)
        db: Database = request.app.state.db
        with db.reading() as session:
            principal = authenticate(session, credentials.credentials)
        if principal is None:
            raise ApiError(401, "unauthorized", "the API key is unknown or revoked", headers=challenge)
        limiter: RateLimiter = request.app.state.rate_limiter
        wait = limiter.acquire(principal.key_id)
        if wait is not None:
            raise ApiError(429, "rate_limited", f"key {principal.name!r} exceeds {limiter.rate:g} requests a second; "
                           f"retry after {limiter.retry_after(wait)} s", headers={"Retry-After": limiter.retry_after(wait)})
        if not principal.can(permission):
            raise ApiError(403, "forbidden", f"scope {principal.scope!r} may not {permission}")
        return principal

    return check


SettingsDep = Annotated[Settings, Depends(settings)]
DatabaseDep = Annotated[Database, Depends(database)]
HolderDep = Annotated[ModelHolder, Depends(holder)]
MetricsDep = Annotated[Metrics, Depends(metrics)]
IntakeDep = Annotated[Intake, Depends(intake)]
BundleDep = Annotated[ModelBundle, Depends(bundle)]
