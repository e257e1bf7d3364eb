"""The console without a browser (TestClient, SQLite and PostgreSQL): sign-in and its cookies, CSRF,
sessions ending, scoping, and each page's success and failure paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from markupsafe import Markup
from sqlalchemy import update

from service.auth import create_key, revoke_key
from service.labels import label_rows
from service.tables import ConsoleSession, Letter
from service.web.documents import embed
from service.web.inbox import PAGE_SIZE
from tests.service.conftest import bearer
from tests.service.web.conftest import csrf_of, sign_in
from tests.service.web.seed import seed


@pytest.fixture
def settings(db, trained_registry):
    from service.settings import Settings

    registry, _ = trained_registry
    return Settings(database_url=db.engine.url.render_as_string(hide_password=False), registry=registry.root,
                    group_window_minutes=0)  # each alert lettered at intake


@pytest.fixture
def world(client, keys, corpus, db):
    """Seeded requests and letters; a key for the department with most letters and one for another."""
    def post(body: dict) -> dict:
        response = client.post("/v1/complaints", json=body, headers=bearer(keys["intake"]))
        assert response.status_code == 201, response.text
        return response.json()

    results = seed(post, corpus)
    letters = client.get("/v1/letters", params={"limit": 200}, headers=bearer(keys["admin"])).json()["items"]
    departments = sorted({x["department"] for x in letters}, key=lambda d: -sum(x["department"] == d for x in letters))
    mine = departments[0]
    other = next(d for d in ("办公室", "国际业务部", "信息科技部", "财富管理部") if d != mine)
    with db.transaction() as session:
        _, mine_key = create_key(session, "web-mine", f"department:{mine}")
        _, other_key = create_key(session, "web-other", f"department:{other}")
    own = [x for x in letters if x["department"] == mine]
    return {"results": results, "letters": letters, "mine": mine, "mine_key": mine_key, "other_key": other_key,
            "letter": own[0], "complaint_id": client.get(f"/v1/letters/{own[0]['id']}", headers=bearer(keys["admin"]))
            .json()["items"][0]["complaint_id"]}


# --- sign-in, cookies, sessions ---------------------------------------------------------------------
def test_pages_need_a_session_and_send_to_the_sign_in_form(client):
    for path in ("/console/", "/console/letters/1", "/console/complaints/1", "/console/digest", "/console/model"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole%2F")
    assert client.get("/", follow_redirects=False).headers["location"] == "/console/"


def test_sign_in_sets_a_strict_http_only_session_cookie(client, keys):
    form = client.get("/console/login")
    assert form.status_code == 200 and 'for="key"' in form.text
    login_cookie = form.headers["set-cookie"].lower()
    assert "httponly" in login_cookie and "samesite=strict" in login_cookie
    done = client.post("/console/login", data={"key": keys["protection"], "csrf_token": csrf_of(form.text),
                                               "next": "/console/model"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == "/console/model"
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("xb_console="))
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags and "samesite=lax" in flags and "path=/console" in flags
    assert "secure" not in flags  # plain http here; see the https test
    assert not any(f.startswith(("max-age", "expires")) for f in flags)  # ends with the browser
    token = cookie.split(";")[0].split("=", 1)[1]
    assert token not in client.get("/console/").text  # never echoed


def test_over_https_the_cookie_is_secure(app, keys):
    with TestClient(app, base_url="https://testserver") as client:
        form = client.get("/console/login")
        done = client.post("/console/login", data={"key": keys["protection"], "csrf_token": csrf_of(form.text)},
                           follow_redirects=False)
        cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("xb_console="))
        assert "secure" in [p.strip().lower() for p in cookie.split(";")]


@pytest.mark.parametrize("key, status, message", [
    ("xb_not-a-real-key", 401, "密钥无效"), ("", 401, "请粘贴"), ("intake", 401, "不能登录控制台")])
def test_sign_in_refuses_bad_and_intake_keys(client, keys, key, status, message):
    form = client.get("/console/login")
    response = client.post("/console/login", data={"key": keys.get(key, key), "csrf_token": csrf_of(form.text)})
    assert response.status_code == status and message in response.text
    assert "xb_console" not in response.headers.get("set-cookie", "")


def test_sign_in_needs_its_double_submit_token_and_a_safe_next(client, keys):
    form = client.get("/console/login")
    refused = client.post("/console/login", data={"key": keys["protection"], "csrf_token": "forged"})
    assert refused.status_code == 403 and "已过期" in refused.text
    client.cookies.clear()
    no_cookie = client.post("/console/login", data={"key": keys["protection"], "csrf_token": csrf_of(form.text)})
    assert no_cookie.status_code == 403
    form = client.get("/console/login")
    for target in ("https://evil.example/", "//evil.example/", "/v1/letters", "/console\\..\\x"):
        client.cookies.clear()
        form = client.get("/console/login")
        done = client.post("/console/login", data={"key": keys["protection"], "csrf_token": csrf_of(form.text),
                                                   "next": target}, follow_redirects=False)
        assert done.headers["location"] == "/console/"


def test_sign_out_ends_the_session_on_the_server(client, keys):
    csrf = sign_in(client, keys["protection"])
    token = client.cookies.get("xb_console")
    assert client.post("/console/logout", data={}).status_code == 403  # CSRF on sign-out too
    out = client.post("/console/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    client.cookies.set("xb_console", token, path="/console")  # a copy of the old cookie opens nothing
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_sessions_end_when_idle_expired_or_the_key_is_revoked(client, keys, db):
    sign_in(client, keys["protection"])
    assert client.get("/console/").status_code == 200
    with db.transaction() as session:
        session.execute(update(ConsoleSession).values(last_seen_at=datetime.now(UTC) - timedelta(hours=1)))
    assert client.get("/console/", follow_redirects=False).status_code == 303
    sign_in(client, keys["protection"])
    with db.transaction() as session:
        session.execute(update(ConsoleSession).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get("/console/", follow_redirects=False).status_code == 303
    sign_in(client, keys["protection"])
    with db.transaction() as session:
        revoke_key(session, name="protection")
    assert client.get("/console/", follow_redirects=False).status_code == 303


def test_pages_carry_protective_headers(client, keys):
    sign_in(client, keys["protection"])
    response = client.get("/console/")
    assert response.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    assert client.get("/console/static/console.css").status_code == 200


# --- CSRF and scoping on letters -------------------------------------------------------------------
def test_acknowledging_needs_the_session_token(client, keys, world):
    letter = world["letter"]
    csrf = sign_in(client, world["mine_key"])
    path = f"/console/letters/{letter['id']}/ack"
    for data, headers in (({}, {}), ({"csrf_token": "forged"}, {}),
                          ({"csrf_token": csrf}, {"Origin": "https://evil.example"})):
        refused = client.post(path, data=data, headers=headers)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert client.get(f"/v1/letters/{letter['id']}", headers=bearer(keys["admin"])).json()["status"] == "issued"
    done = client.post(path, data={"csrf_token": csrf, "note": "已联系客户"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].endswith("?done=acknowledged")
    after = client.get(f"/v1/letters/{letter['id']}", headers=bearer(keys["admin"])).json()
    assert after["status"] == "acknowledged" and after["ack_note"] == "已联系客户"
    again = client.post(path, data={"csrf_token": csrf})
    assert again.status_code == 409 and "操作未执行" in again.text


def test_a_letters_status_reads_the_same_in_the_inbox_the_page_and_the_letter(client, keys, world):
    """One label per status (service.vocab): the inbox filter, its rows, the page's badge and the
    letter document all say 已签收，处理中 once the department has acknowledged."""
    letter = world["letter"]
    csrf = sign_in(client, world["mine_key"])
    assert client.post(f"/console/letters/{letter['id']}/ack", data={"csrf_token": csrf},
                       follow_redirects=False).status_code == 303
    inbox = client.get("/console/", params={"status": "acknowledged"}).text
    assert '<option value="acknowledged" selected>已签收，处理中</option>' in inbox
    assert '<span class="badge status-acknowledged" data-status="acknowledged">已签收，处理中</span>' in inbox
    page = client.get(f"/console/letters/{letter['id']}").text
    assert 'data-status="acknowledged">已签收，处理中</span>' in page
    document = client.get(f"/console/letters/{letter['id']}/document").text
    assert '<span class="status">已签收，处理中' in document
    text = client.get(f"/v1/letters/{letter['id']}?format=text", headers=bearer(keys["admin"])).text
    assert f"{letter['number']}（已签收，处理中" in text


def test_resolving_needs_a_note_and_happens_once(client, keys, world):
    letter = world["letter"]
    csrf = sign_in(client, world["mine_key"])
    path = f"/console/letters/{letter['id']}/resolve"
    empty = client.post(path, data={"csrf_token": csrf, "note": "  "})
    assert empty.status_code == 422 and "办结须填写" in empty.text
    done = client.post(path, data={"csrf_token": csrf, "note": "已退还年费并致歉"}, follow_redirects=False)
    assert done.status_code == 303
    page = client.get(done.headers["location"])
    assert "已办结本函" in page.text and 'data-status="resolved"' in page.text and "已退还年费并致歉" in page.text
    assert 'id="resolve-button"' not in page.text
    assert client.post(path, data={"csrf_token": csrf, "note": "再办结"}).status_code == 409


def test_a_department_sees_only_its_own_letters_and_requests(client, keys, world):
    letter, complaint_id = world["letter"], world["complaint_id"]
    csrf = sign_in(client, world["other_key"])
    for path in (f"/console/letters/{letter['id']}", f"/console/letters/{letter['id']}/document",
                 f"/console/complaints/{complaint_id}"):
        page = client.get(path)
        assert page.status_code == 404 and "不属于您的部门" in page.text and letter["number"] not in page.text
    assert client.post(f"/console/letters/{letter['id']}/ack", data={"csrf_token": csrf}).status_code == 404
    assert client.post(f"/console/complaints/{complaint_id}/outcome",
                       data={"csrf_token": csrf, "category": "外汇"}).status_code == 404
    inbox = client.get("/console/")
    assert letter["number"] not in inbox.text
    for path in ("/console/digest", "/console/digest.xlsx", "/console/model"):
        assert client.get(path).status_code == 403
    sign_in(client, world["mine_key"])
    mine = client.get("/console/?view=letters")
    assert letter["number"] in mine.text and "周报" not in mine.text.split("<main", 1)[0]


def test_the_letter_page_shows_the_api_letter_unchanged(client, keys, world):
    letter = world["letter"]
    sign_in(client, world["mine_key"])
    api_html = client.get(f"/v1/letters/{letter['id']}", params={"format": "html"},
                          headers=bearer(keys["admin"])).text
    page = client.get(f"/console/letters/{letter['id']}")
    assert page.status_code == 200
    assert str(embed(Markup(api_html)).body) in page.text  # the API's rendering, taken as the markup it is
    assert client.get(f"/console/letters/{letter['id']}/document").text == api_html
    assert client.get("/console/letters/999999").status_code == 404
    assert client.get("/console/letters/abc").status_code == 422


# --- inbox ---------------------------------------------------------------------------------------------
def test_inbox_filters_sorts_counts_and_pages(client, keys, world, db):
    letters = world["letters"]
    sign_in(client, keys["protection"])
    page = client.get("/console/")
    assert page.status_code == 200
    assert f"共 {len(letters)} 条" in page.text
    if len(letters) > PAGE_SIZE:
        assert 'rel="next"' in page.text
        second = client.get("/console/", params={"page": 2})
        assert f"第 2 / {-(-len(letters) // PAGE_SIZE)} 页" in second.text
    overdue = [x for x in letters if x["overdue"]]
    listed = client.get("/console/", params={"status": "overdue"})
    assert f"共 {len(overdue)} 条" in listed.text
    assert f'id="count-overdue">{len(overdue)}<' in page.text
    high = [x for x in letters if x["risk_level"] == "高"]
    assert f"共 {len(high)} 条" in client.get("/console/", params={"risk_level": "高"}).text
    department = world["mine"]
    assert f"共 {sum(x['department'] == department for x in letters)} 条" in client.get(
        "/console/", params={"department": department}).text
    by_number = client.get("/console/", params={"sort": "number", "order": "asc"}).text
    numbers = [x["number"] for x in sorted(letters, key=lambda x: x["number"])][:3]
    assert by_number.index(numbers[0]) < by_number.index(numbers[1]) < by_number.index(numbers[2])
    today = datetime.now(UTC).date()
    none = client.get("/console/", params={"date_from": (today + timedelta(days=5)).isoformat()})
    assert "共 0 条" in none.text and "没有符合条件的提示函" in none.text
    alerts = client.get("/console/", params={"view": "alerts", "status": "open"})
    assert alerts.status_code == 200 and 'id="alerts"' in alerts.text
    # Values the inbox cannot use are named and dropped, not a failure.
    odd = client.get("/console/", params={"status": "nope", "date_from": "tomorrow", "page": "x", "sort": "drop"})
    assert odd.status_code == 200 and "无效" in odd.text and f"共 {len(letters)} 条" in odd.text


def test_inbox_category_and_branch_filters_match_the_letters_requests(client, keys, world):
    sign_in(client, keys["protection"])
    detail = client.get(f"/v1/letters/{world['letter']['id']}", headers=bearer(keys["admin"])).json()
    item = detail["items"][0]
    for name, value in (("category", item["category"]), ("branch", item["branch"])):
        page = client.get("/console/", params={name: value})
        assert world["letter"]["number"] in page.text


# --- complaints ---------------------------------------------------------------------------------------
def test_a_correction_becomes_the_exported_label(client, keys, world, db, settings):
    complaint_id = world["complaint_id"]
    csrf = sign_in(client, world["mine_key"])
    page = client.get(f"/console/complaints/{complaint_id}")
    assert page.status_code == 200 and '<mark class="hl hl-' in page.text and "模型预测" in page.text
    nothing = client.post(f"/console/complaints/{complaint_id}/outcome", data={"csrf_token": csrf})
    assert nothing.status_code == 422 and "请至少填写一项" in nothing.text
    unknown = client.post(f"/console/complaints/{complaint_id}/outcome", data={"csrf_token": csrf, "category": "股票"})
    assert unknown.status_code == 422 and "未保存" in unknown.text
    forged = client.post(f"/console/complaints/{complaint_id}/outcome", data={"csrf_token": "x", "category": "外汇"})
    assert forged.status_code == 403
    saved = client.post(f"/console/complaints/{complaint_id}/outcome",
                        data={"csrf_token": csrf, "category": "外汇", "cause": "定价收费", "escalated": "yes",
                              "closed": "on", "note": "客户已向监管投诉"}, follow_redirects=False)
    assert saved.status_code == 303
    assert "已保存更正" in client.get(saved.headers["location"]).text
    record = client.get(f"/v1/complaints/{complaint_id}", headers=bearer(keys["admin"])).json()
    assert record["labels"] == {"category": "外汇", "cause": "定价收费", "escalated": True}
    assert record["status"] == "closed"
    rows = {r["id"]: r for r in label_rows(db, settings.zone)}
    assert rows[record["external_id"]]["category"] == "外汇" and rows[record["external_id"]]["escalated"] == "1"


# --- digest and model -----------------------------------------------------------------------------
def test_digest_page_week_picker_and_download(client, keys, world):
    sign_in(client, keys["protection"])
    page = client.get("/console/digest")
    assert page.status_code == 200 and "data:image/png;base64," in page.text and 'type="week"' in page.text
    week = client.get("/console/digest", params={"week": "2026-W30"})
    assert week.status_code == 200 and "2026-W30" in week.text
    for bad in ("2026-53", "2026-W60", "2999-W01"):
        refused = client.get("/console/digest", params={"week": bad})
        assert refused.status_code == 422 and "周次无效" in refused.text
    xlsx = client.get("/console/digest.xlsx", params={"week": "2026-W30"})
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert 'filename="digest-2026-W30.xlsx"' in xlsx.headers["content-disposition"]
    assert client.get("/console/digest.xlsx", params={"week": "bad"}).status_code == 422


def test_model_page_shows_the_served_version_and_drift(client, keys, world, holder):
    sign_in(client, keys["admin"])
    page = client.get("/console/model")
    assert page.status_code == 200
    assert holder.version in page.text and "macro-F1" in page.text and "PSI" in page.text
    assert page.text.count("<tr><td data-label=\"周次\">") == 4


def test_letters_count_on_top_matches_the_database(client, keys, world, db):
    sign_in(client, world["mine_key"])
    page = client.get("/console/")
    with db.reading() as session:
        issued = session.query(Letter).filter(Letter.department == world["mine"], Letter.status == "issued").count()
    assert f'<span class="count-label">待签收</span><span class="count-value">{issued}</span>' in page.text


def test_control_characters_are_refused_not_stored(client, keys, world):
    csrf = sign_in(client, world["mine_key"])
    letter, complaint_id = world["letter"], world["complaint_id"]
    odd = client.get("/console/", params={"branch": "城东\x00支行", "department": "a\x01"})
    assert odd.status_code == 200 and "控制字符" in odd.text
    note = client.post(f"/console/complaints/{complaint_id}/outcome", data={"csrf_token": csrf, "note": "备注\x00"})
    assert note.status_code == 422 and "控制字符" in note.text
    ack = client.post(f"/console/letters/{letter['id']}/ack", data={"csrf_token": csrf, "note": "x\x00"})
    assert ack.status_code == 422
    assert client.get(f"/v1/letters/{letter['id']}", headers=bearer(keys["admin"])).json()["status"] == "issued"
