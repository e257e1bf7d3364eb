"""POST /v1/admin/model/reload: serve the registry's current model, if it passes verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from models.registry import ModelLoadError
from service.api.deps import HolderDep, MetricsDep, require
from service.api.errors import ApiError
from service.auth import Principal
from service.model_holder import NoCurrentModel
from service.schemas import ErrorResponse, ReloadOut

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/model/reload", response_model=ReloadOut, responses={
    409: {"model": ErrorResponse, "description": "the registry names no current model"},
    422: {"model": ErrorResponse, "description": "the current model fails verification; the old one keeps serving"},
    401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}})
async def reload_model(holder: HolderDep, metrics: MetricsDep,
                       _: Annotated[Principal, Depends(require("admin"))]) -> ReloadOut:
    try:
        result = await run_in_threadpool(holder.reload)
    except NoCurrentModel as exc:
        metrics.model_reloads.labels("refused").inc()
        raise ApiError(409, "no_current_model", str(exc), extra={"serving": holder.version}) from None
    except ModelLoadError as exc:
        metrics.model_reloads.labels("refused").inc()
        raise ApiError(422, "model_refused", str(exc), extra={"serving": holder.version}) from None
    metrics.model_reloads.labels("ok").inc()
    metrics.set_model(result.version)
    return ReloadOut(previous_version=result.previous, version=result.version, changed=result.changed)
