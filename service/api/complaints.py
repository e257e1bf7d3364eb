"""Intake, reading and feedback: /v1/complaints…"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response, status

from service import complaints as store
from service.api.deps import BundleDep, DatabaseDep, IntakeDep, SettingsDep, require
from service.auth import Principal
from service.intake import check_batch
from service.schemas import (
    MAX_OFFSET,
    ComplaintBatchIn,
    ComplaintIn,
    ComplaintOut,
    ComplaintPage,
    ErrorResponse,
    IntakeBatchResult,
    IntakeResult,
    Moment,
    OutcomeIn,
    OutcomeOut,
)
from service.vocab import ComplaintStatus, RiskLevel

router = APIRouter(prefix="/v1/complaints", tags=["complaints"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 413, 422, 503)}
ComplaintId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the id the intake answered")]


@router.post("", response_model=IntakeResult, status_code=status.HTTP_201_CREATED, responses={
    200: {"model": IntakeResult, "description": "the external_id was known: the stored record, unchanged"}, **ERRORS})
def submit(body: ComplaintIn, response: Response, intake: IntakeDep, bundle: BundleDep,
           principal: Annotated[Principal, Depends(require("intake"))]) -> IntakeResult:
    """Store, score and route one request. Answers 201 once committed; the same `external_id` again
    answers 200 with the stored record and stores nothing."""
    result = intake.submit(bundle, body, principal)
    if not result.created:
        response.status_code = status.HTTP_200_OK
    return result


@router.post("/batch", response_model=IntakeBatchResult, status_code=status.HTTP_201_CREATED, responses={
    200: {"model": IntakeBatchResult, "description": "every external_id was known"}, **ERRORS})
def submit_batch(body: ComplaintBatchIn, response: Response, intake: IntakeDep, bundle: BundleDep,
                 settings: SettingsDep, principal: Annotated[Principal, Depends(require("intake"))]) -> IntakeBatchResult:
    """Up to `intake_batch_max` requests in one transaction. Any invalid item refuses the whole
    batch (422 naming `items[i].field`); known external_ids come back with `created: false`."""
    check_batch(len(body.items), settings.intake_batch_max, "items")
    results = intake.submit_many(bundle, body.items, principal)
    created = sum(r.created for r in results)
    if not created:
        response.status_code = status.HTTP_200_OK
    return IntakeBatchResult(items=results, created=created, existing=len(results) - created)


@router.get("", response_model=ComplaintPage, responses=ERRORS)
def list_complaints(
    db: DatabaseDep, settings: SettingsDep, principal: Annotated[Principal, Depends(require("read"))],
    channel: str | None = None, branch: str | None = None, category: str | None = None, cause: str | None = None,
    risk_level: RiskLevel | None = None, needs_review: bool | None = None,
    complaint_status: Annotated[ComplaintStatus | None, Query(alias="status")] = None,
    customer_ref: str | None = None,
    received_from: Annotated[Moment | None, Query(description="ISO date or time, inclusive")] = None,
    received_to: Annotated[Moment | None, Query(description="ISO date or time, exclusive")] = None,
    limit: Annotated[int | None, Query(ge=1, description="page size (default 50, at most page_limit_max)")] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ComplaintPage:
    """Newest first (by received_at, then id), with the total count matching the filters."""
    filters = store.Filters(channel=channel, branch=branch, category=category, cause=cause, risk_level=risk_level,
                            needs_review=needs_review, status=complaint_status, customer_ref=customer_ref,
                            received_from=received_from, received_to=received_to)
    return store.list_page(db, settings, principal, filters, limit, offset)


@router.get("/{complaint_id}", response_model=ComplaintOut, responses=ERRORS)
def get_complaint(complaint_id: ComplaintId, db: DatabaseDep,
                  principal: Annotated[Principal, Depends(require("read"))]) -> ComplaintOut:
    return store.get_one(db, principal, complaint_id)


@router.post("/{complaint_id}/outcome", response_model=OutcomeOut, status_code=status.HTTP_201_CREATED,
             responses=ERRORS)
def record_outcome(complaint_id: ComplaintId, body: OutcomeIn, db: DatabaseDep, settings: SettingsDep,
                   principal: Annotated[Principal, Depends(require("feedback"))]) -> OutcomeOut:
    """Feedback that becomes training labels (`xiaobao export-labels`): whether the request became a
    dispute, the right category/cause (or `confirmed` for the predicted ones), and closing the case."""
    return store.record_outcome(db, settings, principal, complaint_id, body)
