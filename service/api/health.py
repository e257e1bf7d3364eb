"""Liveness, readiness and Prometheus metrics (no key needed; they show no request data)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from service.api.deps import DOCUMENT_HEADERS, DatabaseDep, HolderDep, MetricsDep
from service.db import head_revision

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="A model is loaded and the database answers at the current schema",
            responses={503: {"description": "not ready; `reasons` says why"}})
def readyz(holder: HolderDep, db: DatabaseDep) -> JSONResponse:
    reasons = []
    if holder.version is None:
        reasons.append(f"model not loaded: {holder.last_error or 'not loaded yet'}")
    problem = db.ping()
    revision = None
    if problem:
        reasons.append(problem)
    else:
        revision, head = db.revision(), head_revision()
        if revision != head:
            reasons.append(f"database schema at revision {revision}, the service needs {head}; "
                           "run `xiaobao db upgrade`")
    body = {"status": "not ready" if reasons else "ready", "model_version": holder.version,
            "database": "unreachable" if problem else "ok", "schema_revision": revision}
    if reasons:
        body["reasons"] = reasons
    return JSONResponse(body, status_code=503 if reasons else 200)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=m.content_type, headers=DOCUMENT_HEADERS)
