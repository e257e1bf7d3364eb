"""The outbox as operators see it: /v1/outbox… (admin and protection keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from service.api.deps import require
from service.auth import Principal
from service.outbox import OutboxAdmin
from service.schemas import MAX_OFFSET, ErrorResponse, OutboxOut, OutboxPage
from service.vocab import OutboxStatus

router = APIRouter(prefix="/v1/outbox", tags=["delivery"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 422)}
Operator = Annotated[Principal, Depends(require("operate"))]


async def outbox(request: Request) -> OutboxAdmin:
    return request.app.state.outbox


OutboxDep = Annotated[OutboxAdmin, Depends(outbox)]


@router.get("", response_model=OutboxPage, responses=ERRORS)
def list_messages(service: OutboxDep, _: Operator,
                  message_status: Annotated[OutboxStatus | None,
                                            Query(alias="status")] = None,
                  limit: Annotated[int | None, Query(ge=1)] = None,
                  offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> OutboxPage:
    """Newest first; `?status=dead` lists the dead letters (every attempt failed; see last_error)."""
    return service.list_page(message_status, limit, offset)


@router.post("/{message_id}/retry", response_model=OutboxOut, responses={
    **ERRORS, 409: {"model": ErrorResponse, "description": "the message is not dead or failed"}})
def retry_message(message_id: Annotated[int, Path(ge=1, le=2**63 - 1)], service: OutboxDep,
                  _: Operator) -> OutboxOut:
    """A dead (or failed) message goes back to the queue with a fresh attempt budget; it keeps its
    idempotency key, so a receiver that did get it after all drops the copy."""
    return service.retry(message_id)
