"""One JSON shape for every error the API returns, and the handlers that produce it: the domain's
refusals (service.errors: `NotFound` 404, `Conflict` 409, `Invalid` 422) are mapped here, in one
handler; `ApiError` is for what only the API refuses (keys, scopes, rate limits, no model).

    {"error": {"code": "invalid_field", "message": "channel: '柜台' is not a known channel …",
               "field": "channel", "details": [{"field": …, "message": …, "type": …}]}}

Validation errors never echo the submitted value: it may be a complaint text with personal data.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from models.text import mask_pii
from service.errors import Conflict, DomainError, Invalid, NotFound

log = logging.getLogger("xiaobao.service")


class ApiError(Exception):
    """An error the caller can act on; becomes a JSON error response with `status`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers, self.extra = headers, extra or {}


DOMAIN_STATUS: dict[type[DomainError], int] = {NotFound: 404, Conflict: 409, Invalid: 422}


def domain_status(exc: DomainError) -> int:
    """The HTTP status of a domain refusal (the console shows its pages with the same one)."""
    return next(status for kind, status in DOMAIN_STATUS.items() if isinstance(exc, kind))


def error_body(code: str, message: str, field: str | None = None,
               details: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    if details:
        error["details"] = details
    error.update(extra)
    return {"error": error}


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'items', 3, 'text') → 'items[3].text'; a whole body → 'body'."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header") and len(parts) > 1:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "body"


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for err in exc.errors():
        field = field_path(err.get("loc", ()))
        kind = err.get("type", "value_error")
        message = err.get("msg", "invalid value")
        if kind == "json_invalid":
            field, message = "body", f"invalid JSON ({err.get('ctx', {}).get('error', 'cannot be parsed')})"
        elif kind == "finite_number":
            message = "not a finite number (NaN and Infinity are not accepted)"
        elif kind == "missing" and field == "body":
            message = "a JSON body is required"
        details.append({"field": field, "message": message, "type": kind})
    return details


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", "-")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field, **exc.extra), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.field), status_code=domain_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _validation_details(exc)
        first = details[0] if details else {"field": "body", "message": "invalid request"}
        ctype = request.headers.get("content-type", "")
        if first["field"] == "body" and first.get("type") == "model_attributes_type" and "json" not in ctype:
            first = {**first, "message": "send a JSON object with Content-Type: application/json"}
        code = "invalid_json" if first.get("type") == "json_invalid" else "invalid_field"
        status = 400 if code == "invalid_json" else 422
        return JSONResponse(error_body(code, f"{first['field']}: {first['message']}", first["field"], details),
                            status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 401: "unauthorized",
                 403: "forbidden"}
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        code, field = codes.get(exc.status_code, "http_error"), None
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 400 and isinstance(exc.__cause__, RecursionError):  # the JSON decoder gave up
            code, field = "invalid_json", "body"
            message = "body: the JSON is nested too deeply to read (no request of this API nests more than a few levels)"
        elif exc.status_code == 400:  # FastAPI's "error parsing the body": undecodable bytes
            field, message = "body", "body: cannot be read as UTF-8 JSON"
        return JSONResponse(error_body(code, message, field),
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input. The log gets the traceback with personal data masked; the caller
        # gets the request id to quote.
        rid = request_id(request)
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        log.error("internal error, request %s, %s %s\n%s", rid, request.method, request.url.path, mask_pii(trace))
        return JSONResponse(error_body("internal_error", f"internal error (request {rid}); see the service log",
                                       request_id=rid), status_code=500)
