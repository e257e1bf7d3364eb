"""The console's routes (/console/…): thin handlers over the same service functions as the API.

Scoping is the API's: letters through `service.letters.Access`, complaints through
`service.complaints` (another department's answers 404 here as there). Every POST form carries the
session's CSRF token; the sign-in form, which has no session yet, a double-submit cookie. The
service's refusals (service.errors: NotFound, Conflict, Invalid) become HTML pages with the API's
status (`ConsoleRoute`, the one place that maps them), or a notice on the form they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import FileSystemLoader, Undefined
from pydantic import ValidationError
from starlette.datastructures import FormData

from service import complaints as store
from service.api.errors import domain_status
from service.db import Database
from service.digest import render as digest_render
from service.digest import service as digests
from service.digest.weeks import Week, WeekError, week_of
from service.errors import Conflict, DomainError, Invalid, NotFound
from service.letters import Access, Letters, mask_ref
from service.letters.deadlines import last_day
from service.letters.render import EVENT_NAMES, OVERDUE_NAMES
from service.letters.schemas import AckIn, ResolveIn
from service.schemas import OutcomeIn
from service.settings import Settings
from service.templating import environment
from service.web import inbox, sessions
from service.web.complaint_view import HEADS, head_views, highlight, phrases_by_head
from service.web.documents import embed
from service.web.model_status import model_status
from service.web.sessions import ConsoleUser

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
ERROR_TITLES = {400: "请求无效", 403: "无权访问", 404: "未找到", 409: "操作冲突", 422: "输入有误", 500: "系统错误"}
DONE = {"acknowledged": "已签收本函。", "resolved": "已办结本函，办结通知已发送。", "saved": "已保存更正，将用于模型再训练。"}
# Why these headers: pages hold complaint data (no caching, no framing); scripts only from here;
# inline <style> is allowed because the embedded letter and digest carry their own styles.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class NotSignedIn(Exception):
    """No valid session: the browser goes to the sign-in page."""


class Refused(Exception):
    """A page or action the signed-in user may not use, or a form without a valid CSRF token."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _now() -> datetime:
    return datetime.now(UTC)


# --- templates ------------------------------------------------------------------------------------
def _templates(settings: Settings) -> Jinja2Templates:
    # Lenient undefined: pages test optional values (`form.note`, `c.alert.letter`) that may be absent.
    env = environment(FileSystemLoader(HERE / "templates"), undefined=Undefined)
    templates = Jinja2Templates(env=env)
    zone = settings.zone

    def local(moment: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return "—" if moment is None else moment.astimezone(zone).strftime(fmt)

    def due(deadline: datetime | None) -> str:
        """A deadline is the end of its last day (service.letters.deadlines): show that day, not the next."""
        return "—" if deadline is None else last_day(deadline, zone).isoformat()

    env.filters.update(local=local, day=lambda m: local(m, "%Y-%m-%d"), due=due,
                       pct=lambda p, digits=0: "—" if p is None else f"{p * 100:.{digits}f}%",
                       num=lambda x, digits=3: "—" if x is None else f"{x:.{digits}f}",
                       mask_ref=mask_ref)
    # Status labels come from the `label` filter (service.vocab), not from a dict of the console's own.
    env.globals.update(event_names=EVENT_NAMES, overdue_names=OVERDUE_NAMES, risk_levels=inbox.RISK_LEVELS,
                       heads=dict(HEADS), urlencode=urlencode, protection_department=settings.protection_department)
    return templates


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    user: ConsoleUser | None = getattr(request.state, "console_user", None)
    settings: Settings = request.app.state.settings
    base = {"user": user, "user_name": user.display_name(settings) if user else None,
            "csrf_token": user.csrf_token if user else None, "path": request.url.path}
    response = request.app.state.console_templates.TemplateResponse(request, name, {**base, **context},
                                                                     status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return _page(request, "error.html.j2", {"title": ERROR_TITLES.get(status, "出错了"), "message": message,
                                           "status": status}, status)


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never another site (open redirect)."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


def _login_redirect(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?{urlencode({'next': here})}", status_code=303)


class ConsoleRoute(APIRoute):
    """Console handlers answer in HTML: sign-in redirects, refusals and service errors as pages."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)
            except NotSignedIn:
                return _login_redirect(request)
            except Refused as exc:
                return _error_page(request, exc.status, exc.message)
            except DomainError as exc:
                message = "未找到该记录，或它不属于您的部门。" if isinstance(exc, NotFound) else exc.message
                return _error_page(request, domain_status(exc), message)
            except RequestValidationError:
                return _error_page(request, 422, "地址中的参数无效。")
            response.headers.update(SECURITY_HEADERS)
            return response

        return run


router = APIRouter(prefix=PREFIX, include_in_schema=False, route_class=ConsoleRoute)


# --- dependencies -----------------------------------------------------------------------------------
def current_user(request: Request) -> ConsoleUser:
    user = sessions.load(request.app.state.db, request.app.state.settings, request.cookies.get(sessions.COOKIE),
                         _now())
    if user is None:
        raise NotSignedIn()
    request.state.console_user = user
    return user


User = Annotated[ConsoleUser, Depends(current_user)]


def protection_user(user: User) -> ConsoleUser:
    if not user.sees_all:
        raise Refused(403, "此页面涵盖全行各部门与网点，仅消费者权益保护部可以查看。")
    return user


ProtectionUser = Annotated[ConsoleUser, Depends(protection_user)]


def _same_origin(request: Request) -> bool:
    """A browser's Origin header, when sent, must name this site (defence in depth beside the token)."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


async def checked_form(request: Request, user: User) -> FormData:
    """The POSTed form, once its CSRF token matches the session's."""
    form = await request.form()
    token = form.get("csrf_token")
    if not _same_origin(request) or not sessions.csrf_matches(user.csrf_token, token if isinstance(token, str) else None):
        raise Refused(403, "表单已过期或来源不明（CSRF 校验未通过）。请返回上一页刷新后重试。")
    return form


Form = Annotated[FormData, Depends(checked_form)]


def _db(request: Request) -> Database:
    return request.app.state.db


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _letters(request: Request) -> Letters:
    return request.app.state.letters


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _controls(*values: str) -> bool:
    """Control characters other than line breaks and tabs: no note needs them and PostgreSQL refuses NUL."""
    return any(ord(c) < 32 and c not in "\n\r\t" for v in values for c in v)


# --- sign-in ------------------------------------------------------------------------------------------
def _login_page(request: Request, error: str | None = None, status: int = 200, next_path: str | None = None
                ) -> HTMLResponse:
    token = sessions.new_token()
    settings = _settings(request)
    response = _page(request, "login.html.j2", {
        "error": error, "login_csrf": token, "next": _safe_next(next_path or request.query_params.get("next")),
        "session_hours": f"{settings.console_session_hours:g}", "idle_minutes": f"{settings.console_idle_minutes:g}"},
        status)
    response.set_cookie(sessions.LOGIN_CSRF_COOKIE, token, max_age=3600, path=f"{PREFIX}/login", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    if sessions.load(_db(request), _settings(request), request.cookies.get(sessions.COOKIE), _now()) is not None:
        return RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303)
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await request.form()
    next_path = _safe_next(_text(form, "next"))
    if not _same_origin(request) or not sessions.csrf_matches(request.cookies.get(sessions.LOGIN_CSRF_COOKIE),
                                                              _text(form, "csrf_token")):
        return _login_page(request, "登录表单已过期，请重新提交。", 403, next_path)
    try:
        token, _ = sessions.sign_in(_db(request), _settings(request), _text(form, "key"), _now())
    except sessions.SignInError as exc:
        return _login_page(request, str(exc), 401, next_path)
    response = RedirectResponse(next_path, status_code=303)
    # No Max-Age: the cookie ends with the browser; the server ends the session after
    # console_session_hours, or console_idle_minutes unused.
    response.set_cookie(sessions.COOKIE, token, path=PREFIX, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
    response.delete_cookie(sessions.LOGIN_CSRF_COOKIE, path=f"{PREFIX}/login")
    return response


@router.post("/logout")
def logout(request: Request, _: Form) -> Response:
    sessions.sign_out(_db(request), request.cookies.get(sessions.COOKIE))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(sessions.COOKIE, path=PREFIX, httponly=True, samesite="lax",
                           secure=request.url.scheme == "https")
    return response


# --- inbox --------------------------------------------------------------------------------------------
@router.get("/", response_class=HTMLResponse)
def inbox_page(request: Request, user: User) -> Response:
    settings, db = _settings(request), _db(request)
    q = inbox.InboxQuery.parse(dict(request.query_params), settings.categories)
    access, now = Access(user.principal), _now()
    page = (inbox.letters_page(db, access, q, now, settings.zone) if q.view == "letters"
            else inbox.alerts_page(db, access, q, settings.zone))
    return _page(request, "inbox.html.j2", {
        "q": q, "page": page, "counts": inbox.counts(db, access, now), "choices": inbox.filter_choices(db, access),
        "categories": settings.categories, "sorts": inbox.LETTER_SORTS if q.view == "letters" else inbox.ALERT_SORTS,
        "statuses": inbox.LETTER_STATUSES if q.view == "letters" else inbox.ALERT_STATUSES,
        "due_soon_days": inbox.DUE_SOON_DAYS, "ack_soon_days": inbox.ACK_SOON_DAYS})


# --- letters ------------------------------------------------------------------------------------------
def _letter_page(request: Request, user: ConsoleUser, letter_id: int, error: str | None = None,
                 status: int = 200) -> HTMLResponse:
    service = _letters(request)
    view = service.get(_db(request), Access(user.principal), letter_id)
    document = embed(service.renderer.html(view))
    done = DONE.get(request.query_params.get("done", ""))
    return _page(request, "letter.html.j2", {"letter": view, "document": document, "error": error,
                                             "done": None if error else done}, status)


@router.get("/letters/{letter_id}", response_class=HTMLResponse)
def letter_page(request: Request, letter_id: int, user: User) -> Response:
    return _letter_page(request, user, letter_id)


@router.get("/letters/{letter_id}/document", response_class=HTMLResponse)
def letter_document(request: Request, letter_id: int, user: User) -> Response:
    """The letter exactly as the API's ?format=html gives it: for printing or saving on its own."""
    service = _letters(request)
    return HTMLResponse(service.renderer.html(service.get(_db(request), Access(user.principal), letter_id)))


def _change_letter(request: Request, user: ConsoleUser, letter_id: int, action: str, note: str | None) -> Response:
    try:
        _letters(request).change(_db(request), Access(user.principal), letter_id, action, note=note)
    except Conflict as exc:
        return _letter_page(request, user, letter_id, f"操作未执行：{exc.message}", 409)
    done = "acknowledged" if action == "acknowledge" else "resolved"
    return RedirectResponse(f"{PREFIX}/letters/{letter_id}?done={done}", status_code=303)


@router.post("/letters/{letter_id}/ack")
def acknowledge(request: Request, letter_id: int, user: User, form: Form) -> Response:
    try:
        if _controls(_text(form, "note")):
            raise ValueError("control characters")
        body = AckIn(note=_text(form, "note") or None)
    except (ValidationError, ValueError):
        return _letter_page(request, user, letter_id, "签收说明无效（最多 4000 字，不能含控制字符）。", 422)
    return _change_letter(request, user, letter_id, "acknowledge", body.note)


@router.post("/letters/{letter_id}/resolve")
def resolve(request: Request, letter_id: int, user: User, form: Form) -> Response:
    try:
        if _controls(_text(form, "note")):
            raise ValueError("control characters")
        body = ResolveIn(note=_text(form, "note"))
    except (ValidationError, ValueError):
        return _letter_page(request, user, letter_id, "办结须填写处理情况及整改措施（1 至 4000 字，不能含控制字符）。", 422)
    return _change_letter(request, user, letter_id, "resolve", body.note)


# --- complaints ---------------------------------------------------------------------------------------
def _complaint_page(request: Request, user: ConsoleUser, complaint_id: int, error: str | None = None,
                    status: int = 200, form: dict[str, str] | None = None) -> HTMLResponse:
    settings = _settings(request)
    complaint = store.get_one(_db(request), user.principal, complaint_id)
    by_head = phrases_by_head(complaint.prediction)
    done = DONE.get(request.query_params.get("done", ""))
    return _page(request, "complaint.html.j2", {
        "c": complaint, "marked": highlight(complaint.text, by_head), "by_head": by_head,
        "heads_view": head_views(complaint.prediction), "categories": settings.categories,
        "causes": settings.causes, "error": error, "done": None if error else done, "form": form or {}}, status)


@router.get("/complaints/{complaint_id}", response_class=HTMLResponse)
def complaint_page(request: Request, complaint_id: int, user: User) -> Response:
    return _complaint_page(request, user, complaint_id)


@router.post("/complaints/{complaint_id}/outcome")
def record_outcome(request: Request, complaint_id: int, user: User, form: Form) -> Response:
    fields = {name: _text(form, name) for name in ("category", "cause", "escalated", "note")}
    escalated = {"yes": True, "no": False}.get(fields["escalated"])
    try:
        if _controls(*fields.values()):
            raise ValueError("control characters")
        body = OutcomeIn(category=fields["category"] or None, cause=fields["cause"] or None, escalated=escalated,
                         confirmed=form.get("confirmed") == "on", closed=form.get("closed") == "on",
                         note=fields["note"] or None)
    except (ValidationError, ValueError):
        said = any(fields.values()) or "confirmed" in form or "closed" in form
        message = ("说明无效（最多 4000 字，不能含控制字符）。" if said
                   else "请至少填写一项：更正类别或原因、确认预测、实际结果、说明或办结。")
        return _complaint_page(request, user, complaint_id, message, 422, fields)
    try:
        store.record_outcome(_db(request), _settings(request), user.principal, complaint_id, body)
    except Invalid as exc:
        return _complaint_page(request, user, complaint_id, f"未保存：{exc.message}", 422, fields)
    return RedirectResponse(f"{PREFIX}/complaints/{complaint_id}?done=saved", status_code=303)


# --- weekly digest --------------------------------------------------------------------------------
def _week(request: Request) -> tuple[Week | None, str | None]:
    text = request.query_params.get("week")
    try:
        return digests.requested_week(text, _settings(request), _now()), None
    except WeekError as exc:
        return None, f"周次无效：{exc}"


@router.get("/digest", response_class=HTMLResponse)
def digest_page(request: Request, _: ProtectionUser) -> Response:
    settings = _settings(request)
    week, error = _week(request)
    current = week_of(_now(), settings.zone)
    if week is None:
        return _page(request, "digest.html.j2", {"error": error, "week": None, "current": current}, 422)
    digest = digests.make_digest(_db(request), week, digests.reference_of(request.app.state.model), _now())
    return _page(request, "digest.html.j2", {
        "week": week, "current": current, "previous": week.shift(-1), "following": week.shift(1),
        "has_following": week.shift(1).start <= _now(), "title": digest_render.title(digest),
        "document": embed(digest_render.to_html(digest)), "error": None})


@router.get("/digest.xlsx")
def digest_xlsx(request: Request, _: ProtectionUser) -> Response:
    week, error = _week(request)
    if week is None:
        raise Refused(422, error or "周次无效")
    digest = digests.make_digest(_db(request), week, digests.reference_of(request.app.state.model), _now())
    return Response(digest_render.to_xlsx(digest), media_type=digest_render.FORMATS["xlsx"], headers={
        "Content-Disposition": f'attachment; filename="{digest_render.filename(digest, "xlsx")}"'})


# --- model status -----------------------------------------------------------------------------------
@router.get("/model", response_class=HTMLResponse)
def model_page(request: Request, _: ProtectionUser) -> Response:
    status = model_status(_db(request), request.app.state.model, _settings(request), _now())
    return _page(request, "model.html.j2", {"m": status})


def install(app: FastAPI) -> None:
    """Mounts the console on `app`: its pages, its static files, and / leading to it."""
    app.state.console_templates = _templates(app.state.settings)
    app.include_router(router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @app.get(PREFIX, include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)
