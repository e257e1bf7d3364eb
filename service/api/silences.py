"""Silences: /v1/silences… (admin and protection keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status

from service.api.deps import require
from service.auth import Principal
from service.schemas import ErrorResponse, SilenceIn, SilenceOut, SilencePage
from service.silences import Silences

router = APIRouter(prefix="/v1/silences", tags=["silences"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 422)}
SilenceId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Operator = Annotated[Principal, Depends(require("operate"))]


async def silences(request: Request) -> Silences:
    return request.app.state.silences


SilencesDep = Annotated[Silences, Depends(silences)]


@router.post("", response_model=SilenceOut, status_code=status.HTTP_201_CREATED, responses=ERRORS)
def create_silence(body: SilenceIn, service: SilencesDep, principal: Operator) -> SilenceOut:
    """Mute alerts matching every field given (department, category, cause, branch) until `ends_at`:
    they are recorded as `silenced` and get no letter. Regulator referrals are never muted."""
    return service.create(principal, body)


@router.get("", response_model=SilencePage, responses=ERRORS)
def list_silences(service: SilencesDep, _: Operator, active: bool | None = None) -> SilencePage:
    return service.list(active)


@router.get("/{silence_id}", response_model=SilenceOut, responses=ERRORS)
def get_silence(silence_id: SilenceId, service: SilencesDep, _: Operator) -> SilenceOut:
    return service.get(silence_id)


@router.delete("/{silence_id}", response_model=SilenceOut, responses=ERRORS)
def expire_silence(silence_id: SilenceId, service: SilencesDep, _: Operator) -> SilenceOut:
    """Ends the silence now (the record stays, as alerts it muted point to it)."""
    return service.expire(silence_id)
