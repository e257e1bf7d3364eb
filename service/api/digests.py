"""The weekly digest: GET /v1/digests/weekly and POST /v1/digests/weekly/send.

The 投诉处理周报 covers every department and branch, so it is for the protection department and
admins; a department key is refused (403) rather than given a filtered digest whose branch ranking
and volumes would mislead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status

from service.api.deps import DOCUMENT_HEADERS, DatabaseDep, HolderDep, SettingsDep, require
from service.api.errors import ApiError
from service.auth import Principal
from service.digest import render as digest_render
from service.digest import service as digests
from service.digest.schema import DigestSendResult, WeeklyDigest
from service.digest.weeks import Week, WeekError
from service.errors import invalid
from service.schemas import ErrorResponse
from service.settings import Settings

router = APIRouter(prefix="/v1/digests", tags=["digests"])
ERRORS = {code: {"model": ErrorResponse} for code in (401, 403, 422)}
WeekParam = Annotated[str | None, Query(description="ISO week YYYY-Www in the bank's time zone; default: the "
                                                    "last complete week", examples=["2026-W47"])]
# The media types a browser or client may ask for, most specific first.
ACCEPT = (("spreadsheetml", "xlsx"), ("text/html", "html"), ("text/plain", "text"), ("application/json", "json"))


def protection_reader(principal: Annotated[Principal, Depends(require("read"))]) -> Principal:
    if principal.department is not None:
        raise ApiError(403, "forbidden", f"scope {principal.scope!r} may not read the weekly digest: it covers "
                                         "every department; use a protection or admin key")
    return principal


Reader = Annotated[Principal, Depends(protection_reader)]


def _week(text: str | None, settings: Settings) -> Week:
    try:
        return digests.requested_week(text, settings, datetime.now(UTC))
    except WeekError as exc:
        raise invalid("week", str(exc)) from None


def _format(fmt: str | None, accept: str) -> str:
    if fmt is not None:
        if fmt not in digest_render.FORMATS:
            raise invalid("format", f"{fmt!r} is not a format; use json, html, text or xlsx")
        return fmt
    for marker, name in ACCEPT:
        if marker in accept:
            return name
    return "json"


@router.get("/weekly", response_model=WeeklyDigest, responses={
    200: {"description": "the digest in the format asked for (`format`, else the Accept header; JSON by default)",
          "content": {t.split(";")[0]: {} for t in digest_render.FORMATS.values()}}, **ERRORS})
def weekly(request: Request, db: DatabaseDep, settings: SettingsDep, holder: HolderDep, _: Reader,
           week: WeekParam = None,
           fmt: Annotated[str | None, Query(alias="format", description="json, html, text or xlsx")] = None,
           ) -> Response:
    """投诉处理周报 of one ISO week: volume with week-on-week and year-on-year change, breakdowns,
    branch ranking, high-risk requests, letters, handling time, rising phrases, model health."""
    chosen = _week(week, settings)
    kind = _format(fmt, request.headers.get("accept", ""))
    digest = digests.make_digest(db, chosen, digests.reference_of(holder), datetime.now(UTC))
    body = digest_render.render(digest, kind)
    disposition = "attachment" if kind == "xlsx" else "inline"
    headers = {**DOCUMENT_HEADERS,
               "Content-Disposition": f'{disposition}; filename="{digest_render.filename(digest, kind)}"'}
    return Response(body, media_type=digest_render.FORMATS[kind], headers=headers)


@router.post("/weekly/send", response_model=DigestSendResult, status_code=status.HTTP_201_CREATED, responses={
    200: {"model": DigestSendResult, "description": "every recipient had this week's digest already"},
    409: {"model": ErrorResponse, "description": "no recipient is configured"}, **ERRORS})
def send(response: Response, db: DatabaseDep, settings: SettingsDep, holder: HolderDep, _: Reader,
         week: WeekParam = None,
         force: Annotated[bool, Query(description="send again to recipients who had it")] = False,
         ) -> DigestSendResult:
    """Generate the digest now and e-mail it (through the outbox) to the protection department.
    Once per week and recipient: a repeat answers 200 and sends nothing, unless `force=true`."""
    chosen = _week(week, settings)
    try:
        result = digests.send_now(db, settings, chosen, digests.reference_of(holder), datetime.now(UTC),
                                  force=force, source="api")
    except digests.NoRecipient as exc:
        raise ApiError(409, "no_recipient", str(exc)) from None
    if not result.sent_to:
        response.status_code = status.HTTP_200_OK
    return result
