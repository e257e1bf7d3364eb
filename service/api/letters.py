"""Letters (投诉风险提示函): /v1/letters… A department key sees and answers only its own letters
(another department's answers 404, so ids reveal nothing)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse

from service.api.deps import DOCUMENT_HEADERS, DatabaseDep, require
from service.auth import Principal
from service.letters import Access, Letters
from service.letters.schemas import AckIn, ExtendIn, FlushOut, LetterOut, LetterPage, ResolveIn
from service.schemas import MAX_OFFSET, ErrorResponse
from service.vocab import LetterStatus

router = APIRouter(prefix="/v1/letters", tags=["letters"])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 422)}
CHANGE_ERRORS = {**ERRORS, 409: {"model": ErrorResponse, "description": "the letter is past that step"}}
LetterId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Format = Literal["json", "html", "text"]
MEDIA = {"application/json": "json", "text/html": "html", "text/plain": "text", "*/*": "json",
         "application/*": "json"}


async def letters(request: Request) -> Letters:
    return request.app.state.letters


LettersDep = Annotated[Letters, Depends(letters)]
Reader = Annotated[Principal, Depends(require("read"))]
Answerer = Annotated[Principal, Depends(require("feedback"))]


def negotiate(request: Request, explicit: str | None) -> str:
    """?format= wins; otherwise the most preferred of the Accept header's JSON, HTML and plain
    text (by q, then order); JSON when it names none of them."""
    if explicit:
        return explicit
    ranked = []
    for i, part in enumerate(request.headers.get("accept", "").split(",")):
        media, *params = [p.strip() for p in part.split(";")]
        q = next((p[2:] for p in params if p.startswith("q=")), "1")
        try:
            ranked.append((-float(q), i, media.lower()))
        except ValueError:
            continue
    for _, _, media in sorted(ranked):
        fmt = MEDIA.get(media)
        if fmt:
            return fmt
    return "json"


@router.get("", response_model=LetterPage, responses=ERRORS)
def list_letters(db: DatabaseDep, service: LettersDep, principal: Reader,
                 department: str | None = None,
                 letter_status: Annotated[LetterStatus | None,
                                          Query(alias="status")] = None,
                 limit: Annotated[int | None, Query(ge=1, description="page size (default 50)")] = None,
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> LetterPage:
    """Newest first, with the number of requests in each and the deadlines missed so far."""
    return service.list_page(db, Access(principal), department=department, status=letter_status,
                             limit=limit, offset=offset)


@router.post("/flush", response_model=FlushOut, responses=ERRORS)
def flush_now(db: DatabaseDep, service: LettersDep, _: Annotated[Principal, Depends(require("operate"))]) -> FlushOut:
    """Issue the letters of every pending alert now, without waiting for the grouping window to
    close (the worker does this by itself when windows close; `xiaobao demo` calls this)."""
    return FlushOut(letters=service.flush_now(db))


@router.get("/{letter_id}", response_model=LetterOut, responses={
    **ERRORS, 200: {"content": {"application/json": {}, "text/html": {}, "text/plain": {}},
                    "description": "JSON, print-ready HTML (A4) or plain text: ?format= or the Accept header"}})
def get_letter(letter_id: LetterId, request: Request, db: DatabaseDep, service: LettersDep,
               principal: Reader, fmt: Annotated[Format | None, Query(alias="format")] = None) -> Response:
    view = service.get(db, Access(principal), letter_id)
    chosen = negotiate(request, fmt)
    if chosen == "html":
        return HTMLResponse(service.renderer.html(view), headers=DOCUMENT_HEADERS)
    if chosen == "text":
        return PlainTextResponse(service.renderer.text(view), headers=DOCUMENT_HEADERS)
    return Response(view.model_dump_json(), media_type="application/json")


@router.post("/{letter_id}/ack", response_model=LetterOut, responses=CHANGE_ERRORS)
def acknowledge(letter_id: LetterId, db: DatabaseDep, service: LettersDep, principal: Answerer,
                body: AckIn | None = None) -> LetterOut:
    """签收: the department has the letter and is on it (409 once acknowledged or resolved)."""
    return service.change(db, Access(principal), letter_id, "acknowledge", note=body.note if body else None)


@router.post("/{letter_id}/resolve", response_model=LetterOut, responses=CHANGE_ERRORS)
def resolve(letter_id: LetterId, body: ResolveIn, db: DatabaseDep, service: LettersDep,
            principal: Answerer) -> LetterOut:
    """办结 with what was done (the feedback section); its alerts close and a resolved notice goes
    to the department and the protection department."""
    return service.change(db, Access(principal), letter_id, "resolve", note=body.note)


@router.post("/{letter_id}/extend", response_model=LetterOut, responses=CHANGE_ERRORS)
def extend(letter_id: LetterId, body: ExtendIn, db: DatabaseDep, service: LettersDep,
           principal: Answerer) -> LetterOut:
    """A complex case: the decision period becomes 30 days, or 60 with the superior institution's
    approval (`approved_by`); the response deadline moves accordingly."""
    return service.change(db, Access(principal), letter_id, "extend", days=body.days, reason=body.reason,
                          approved_by=body.approved_by)
