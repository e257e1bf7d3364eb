"""Letters: numbering (gapless under concurrent issuers), grouping windows, deadlines, escalation,
rendering and masking, and the /v1/letters endpoints with their permissions."""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.auth import create_key
from service.letters import format_number, mask_ref, take_number
from service.tables import Alert, Letter, LetterEvent, LetterItem, OutboxMessage
from tests.service.alerting_support import (
    PII_TEXT,
    RAW_SECRETS,
    T0,
    Desk,
    alerts,
    count,
    letters,
    messages,
    routing_file,
    settings_for,
)
from tests.service.conftest import bearer


@pytest.fixture
def desk(db) -> Desk:
    return Desk(db, settings_for(db))


@pytest.fixture
def desk0(db) -> Desk:
    return Desk(db, settings_for(db, group_window_minutes=0))


# --- numbering ---------------------------------------------------------------------------------------
def test_numbers_are_sequential_per_year_in_local_time(db):
    desk = Desk(db, settings_for(db, group_window_minutes=0), start=datetime(2026, 12, 31, 15, 0, tzinfo=UTC))
    desk.intake(customer="A")
    desk.intake(customer="B")
    desk.clock.set(datetime(2026, 12, 31, 16, 30, tzinfo=UTC))  # 1 January 00:30 in Shanghai
    desk.intake(customer="C")
    assert [(x.number, x.year, x.seq) for x in letters(db)] == [
        ("〔2026〕第0001号", 2026, 1), ("〔2026〕第0002号", 2026, 2), ("〔2027〕第0001号", 2027, 1)]
    assert format_number(2026, 123) == "〔2026〕第0123号"


def test_numbers_stay_gapless_under_concurrent_issuers_with_rollbacks(db):
    """Twelve workers take numbers at once; every third transaction fails after taking its number.
    The committed numbers are exactly 1..8: a rolled-back number is reused, none twice."""
    barrier = threading.Barrier(12)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            with db.transaction() as s:
                seq = take_number(s, 2026)
                s.add(Letter(year=2026, seq=seq, number=format_number(2026, seq), department="办公室",
                             issued_at=T0, group_key=f"t{i}"))
                s.flush()
                if i % 3 == 0:
                    raise KeyError("abandon")
        except KeyError:
            pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(x.seq for x in letters(db)) == list(range(1, 9))


def test_concurrent_flushers_list_each_alert_once(db):
    desk = Desk(db, settings_for(db, group_window_minutes=60))
    for i in range(30):
        desk.intake(customer=f"C{i:03d}", category=["信用卡", "个人贷款", "外汇"][i % 3])
    desk.clock.advance(hours=2)
    barrier = threading.Barrier(4)
    issued: list[str] = []
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            barrier.wait()
            issued.extend(desk.flush())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=flusher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(issued) == [format_number(2026, n) for n in (1, 2, 3)]
    assert all(a.letter_id is not None for a in alerts(db))
    with db.reading() as s:
        assert len(s.scalars(select(LetterItem.complaint_id)).all()) == 30


# --- grouping ----------------------------------------------------------------------------------------
def test_one_letter_per_department_per_window(desk, db):
    desk.clock.set(T0 + timedelta(minutes=5))  # 10:05 local; window 10:00-11:00
    desk.intake(customer="A")
    desk.clock.advance(minutes=20)
    desk.intake(customer="B", level="高", score=0.99)
    desk.intake(customer="C", category="个人贷款", cause="合同条款")
    assert desk.flush() == []  # the window is still open
    desk.clock.set(T0 + timedelta(hours=1, minutes=1))
    desk.intake(customer="D")  # the next window
    assert desk.flush() == ["〔2026〕第0001号", "〔2026〕第0002号"]
    card, loans = letters(db)
    assert (card.department, loans.department) == ("信用卡中心", "个人信贷部")
    with db.reading() as s:
        items = s.scalars(select(LetterItem).where(LetterItem.letter_id == card.id).order_by(LetterItem.id)).all()
    assert [i.snapshot["customer"] for i in items] == [mask_ref("A"), mask_ref("B")]
    assert card.risk_level == "高" and card.group_key.startswith("信用卡中心|20260506T0200Z|")
    desk.clock.set(T0 + timedelta(hours=2))
    assert desk.flush() == ["〔2026〕第0003号"]
    assert desk.flush() == []


def test_window_zero_issues_each_alert_at_intake(desk0, db):
    made = desk0.intake()
    assert made["letter"] is not None
    [letter] = letters(db)
    assert letter.group_key == f"信用卡中心|immediate|{made['alert']}"
    assert [m.kind for m in messages(db)] == ["email"] and messages(db)[0].event == "letter.issued"


def test_a_repeat_after_the_letter_is_noted_on_it(desk0, db):
    first = desk0.intake()
    desk0.clock.advance(days=2)
    desk0.intake(channel="监管转办")
    assert count(db, Letter) == 1
    with db.reading() as s:
        events = s.scalars(select(LetterEvent.kind).where(LetterEvent.letter_id == first["letter"])
                           .order_by(LetterEvent.id)).all()
    assert events == ["issued", "repeat"]
    assert [m.event for m in messages(db)] == ["letter.issued", "letter.repeat"]
    assert "再次" in messages(db)[1].payload["text"]


def test_an_alert_that_lapsed_before_its_letter_still_gets_one(desk, db):
    desk.intake()
    desk.clock.advance(days=31)  # no worker ran meanwhile; the repeat opens a new matter
    desk.intake()
    assert [a.status for a in alerts(db)] == ["lapsed", "open"]
    desk.clock.advance(hours=1)
    assert desk.flush() == ["〔2026〕第0001号", "〔2026〕第0002号"]
    assert all(a.letter_id for a in alerts(db))


def test_a_referral_in_the_matter_is_shown_on_its_other_requests(desk, db):
    desk.intake(channel="电话客服")
    desk.intake(channel="监管转办")
    desk.clock.advance(hours=1)
    desk.flush()
    [letter] = letters(db)
    text = desk.letters.renderer.text(_view(desk, db, letter.id))
    assert text.count("（同一事项有监管转办）") == 1 and "监管转办（" not in text


def test_force_flush_issues_all_pending_now(desk, db):
    desk.intake(customer="A")
    desk.intake(customer="B", category="外汇", cause="定价收费")
    assert len(desk.flush(force=True)) == 2 and desk.flush(force=True) == []


# --- deadlines -----------------------------------------------------------------------------------------
def test_letter_deadlines(db):
    friday = datetime(2026, 5, 8, 7, 0, tzinfo=UTC)  # Friday 15:00 in Shanghai
    desk = Desk(db, settings_for(db, group_window_minutes=0), start=friday)
    desk.intake(customer="A", received=friday - timedelta(days=3))  # received Tuesday 5 May
    [letter] = letters(db)
    zone = desk.settings.zone
    # Friday + 2 working days: Saturday 9 May is a 劳动节 调休 working day, so the end of Monday 11 May
    assert letter.ack_due_at.astimezone(zone) == datetime(2026, 5, 12, 0, 0, tzinfo=zone)
    assert letter.response_due_at.astimezone(zone) == datetime(2026, 5, 21, 0, 0, tzinfo=zone)  # 5 May + 15 days
    assert letter.response_days == 15
    view = _view(desk, db, letter.id)
    assert view.items[0].decision_due == date(2026, 5, 20)


def _issued_note(db, letter_id) -> str:
    with db.reading() as s:
        return s.scalar(select(LetterEvent.note).where(LetterEvent.letter_id == letter_id, LetterEvent.kind == "issued"))


def test_acknowledgement_over_national_day_follows_the_state_council(db):
    eve = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)  # Wednesday 30 September, 10:00 in Shanghai
    desk = Desk(db, settings_for(db, group_window_minutes=0), start=eve)
    first = desk.intake(customer="A")
    desk.clock.set(datetime(2026, 10, 9, 2, 0, tzinfo=UTC))  # Friday 9 October
    second = desk.intake(customer="B")
    zone = desk.settings.zone
    ack = {x.id: x.ack_due_at.astimezone(zone) for x in letters(db)}
    assert ack[first["letter"]] == datetime(2026, 10, 10, 0, 0, tzinfo=zone)  # 1-7 off: end of Fri 9 October
    assert ack[second["letter"]] == datetime(2026, 10, 13, 0, 0, tzinfo=zone)  # Sat 10 (调休), Mon 12
    assert "从严" not in _issued_note(db, first["letter"])


def test_a_deadline_running_into_an_uncovered_year_is_the_earliest_and_says_so(db, tmp_path):
    issued = datetime(2026, 12, 30, 2, 0, tzinfo=UTC)  # Wednesday 30 December in Shanghai; 2027 not in the package
    desk = Desk(db, settings_for(db, group_window_minutes=0), start=issued)
    first = desk.intake(customer="A")
    [letter] = letters(db)
    zone = desk.settings.zone
    # Thursday 31 December, then Friday 1 January 2027 counted as a working day: never later than the real one
    assert letter.ack_due_at.astimezone(zone) == datetime(2027, 1, 2, 0, 0, tzinfo=zone)
    assert "签收期限从严计算" in _issued_note(db, first["letter"]) and "2027" in _issued_note(db, first["letter"])
    # with the year covered by the routing file (a made-up 2027 with 1 January off) it is exact and unflagged
    covered = settings_for(db, group_window_minutes=0,
                           routing_file=routing_file(tmp_path, calendar={"years": [2027], "holidays": ["2027-01-01"]}))
    desk = Desk(db, covered, start=issued)
    second = desk.intake(customer="B", category="外汇", cause="定价收费")
    ack = {x.id: x.ack_due_at.astimezone(zone) for x in letters(db)}
    assert ack[second["letter"]] == datetime(2027, 1, 5, 0, 0, tzinfo=zone)  # end of Monday 4 January
    assert "从严" not in _issued_note(db, second["letter"])


def _view(desk, db, letter_id):
    with db.reading() as s:
        return desk.letters.view(s.get(Letter, letter_id))


# --- escalation ----------------------------------------------------------------------------------------
def test_unacknowledged_letter_is_reminded_once_per_interval_and_copied_to_protection(desk0, db):
    desk0.intake()
    [letter] = letters(db)
    desk0.clock.set(letter.ack_due_at - timedelta(minutes=1))
    assert desk0.worker.escalate() == []
    desk0.clock.set(letter.ack_due_at + timedelta(minutes=1))
    assert desk0.worker.escalate() == [letter.number]
    assert desk0.worker.escalate() == []  # within the reminder interval
    desk0.clock.advance(hours=23)
    assert desk0.worker.escalate() == []
    desk0.clock.advance(hours=1, minutes=1)
    assert desk0.worker.escalate() == [letter.number]
    reminders = [m for m in messages(db) if m.event == "letter.reminder"]
    assert [m.idempotency_key for m in reminders] == ["letter-2026-0001-reminder-1-email",
                                                      "letter-2026-0001-reminder-2-email"]
    assert reminders[0].payload["to"] == ["xykzx-fk@bank.example"]
    assert reminders[0].payload["cc"] == ["xiaobao-xbb@bank.example"]
    assert "逾期未签收" in reminders[0].payload["text"] and "第1次催办" in reminders[0].payload["text"]
    [letter] = letters(db)
    assert letter.reminders == 2
    with db.reading() as s:
        kinds = s.scalars(select(LetterEvent.kind).where(LetterEvent.letter_id == letter.id)).all()
    assert kinds.count("reminded") == 2


def test_acknowledged_letters_are_reminded_only_when_the_response_is_overdue(desk0, db, keys):
    desk0.intake()
    [letter] = letters(db)
    access = _access(db, keys, "protection")
    with db.transaction() as s:
        desk0.letters.acknowledge(s, access, letter.id, "收到")
    desk0.clock.set(letter.ack_due_at + timedelta(days=1))
    assert desk0.worker.escalate() == []
    desk0.clock.set(letter.response_due_at + timedelta(minutes=1))
    assert desk0.worker.escalate() == [letter.number]
    assert "逾期未反馈处理结果" in messages(db)[-1].payload["text"]
    with db.transaction() as s:
        desk0.letters.resolve(s, access, letter.id, "已退还年费并致歉")
    desk0.clock.advance(days=3)
    assert desk0.worker.escalate() == []


def _access(db, keys, scope):
    from service.auth import authenticate
    from service.letters import Access

    with db.reading() as s:
        return Access(authenticate(s, keys[scope]))


def test_a_letter_overdue_when_issued_is_reminded_only_after_its_ack_deadline(desk0, db):
    desk0.intake(received=desk0.clock.now() - timedelta(days=20))  # e.g. a replay of old requests
    [letter] = letters(db)
    assert letter.response_due_at < desk0.clock.now()
    assert desk0.worker.escalate() == []
    desk0.clock.set(letter.ack_due_at)
    assert desk0.worker.escalate() == [letter.number]


def test_resolving_closes_the_alerts_and_sends_a_resolved_notice(desk0, db, keys):
    desk0.intake()
    [letter] = letters(db)
    with db.transaction() as s:
        desk0.letters.resolve(s, _access(db, keys, "protection"), letter.id, "已退还年费")
    [a] = alerts(db)
    assert a.status == "resolved" and a.resolved_at is not None
    notice = messages(db)[-1]
    assert notice.event == "letter.resolved" and notice.payload["cc"] == ["xiaobao-xbb@bank.example"]
    assert "已退还年费" in notice.payload["text"]
    desk0.intake()  # the same matter again: a new alert and a new letter
    assert count(db, Alert) == 2 and count(db, Letter) == 2


# --- rendering ---------------------------------------------------------------------------------------
class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "br", "hr", "link"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_letter_renders_as_print_ready_html_and_text_with_personal_data_masked(desk0, db):
    desk0.intake(text=PII_TEXT, customer="C8EA5F248", branch="高新区支行")
    [letter] = letters(db)
    view = _view(desk0, db, letter.id)
    html, text = desk0.letters.renderer.html(view), desk0.letters.renderer.text(view)
    parser = _Tags()
    parser.feed(html)
    assert parser.errors == [] and parser.stack == []
    assert "@page { size: A4" in html and 'lang="zh-CN"' in html
    visible = "".join(parser.text)
    for doc in (visible, text):
        for expected in ("投诉风险提示函", "〔2026〕第0001号", "信用卡中心：", "C8*****48", "高新区支行", "电话客服",
                         "2026年5月6日 10:00", "信用卡", "定价收费", "高（90%）", "年费", "重复扣费", "投诉",
                         "2026年5月21日", "2026年5月8日", "15 日", "反馈回执", "处理情况", "消费者权益保护部"):
            assert expected in doc, expected
        assert "138****5678" in doc
    json_view = view.model_dump_json()
    payloads = json.dumps([m.payload for m in messages(db)], ensure_ascii=False)
    for doc in (html, text, json_view, payloads):
        for secret in RAW_SECRETS + ("C8EA5F248",):
            assert secret not in doc


def test_a_window_of_100_alerts_becomes_one_letter_listing_all_of_them(desk, db):
    # How long this takes is measured by bench/letters.py, not here.
    for i in range(100):
        desk.intake(customer=f"C{i:04d}", text=PII_TEXT + f"第{i}次")
    desk.clock.advance(hours=1)
    [number] = desk.flush()  # the letter, its 100 items, its rendering (HTML and text) and its message
    [letter] = letters(db)
    assert letter.number == number
    html = messages(db)[0].payload["html"]
    assert html.count('<td class="n"') == 100


# --- the API -----------------------------------------------------------------------------------------
@pytest.fixture
def api(db, holder, settings):
    """The app on a manual clock with window 0, plus the desk that shares that clock."""
    s = settings.model_copy(update={"group_window_minutes": 0})
    desk = Desk(db, s)
    app = create_app(s, database=db, model=holder, clock=desk.clock)
    desk.alerting = app.state.alerting
    desk.letters = app.state.letters
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, desk


@pytest.fixture
def two_letters(api, db):
    _, desk = api
    card = desk.intake(customer="A")
    loans = desk.intake(customer="B", category="个人贷款", cause="合同条款")
    return card["letter"], loans["letter"]


def test_list_letters_with_filters_and_pages(api, h, two_letters):
    c, _ = api
    r = c.get("/v1/letters", headers=h["protection"])
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == 2 and [i["department"] for i in body["items"]] == ["个人信贷部", "信用卡中心"]
    assert body["items"][0]["items_count"] == 1 and body["items"][0]["status"] == "issued"
    assert c.get("/v1/letters?department=信用卡中心", headers=h["admin"]).json()["total"] == 1
    assert c.get("/v1/letters?status=resolved", headers=h["admin"]).json()["total"] == 0
    page = c.get("/v1/letters?limit=1&offset=1", headers=h["admin"]).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["department"] == "信用卡中心"
    assert c.get("/v1/letters?limit=100000", headers=h["admin"]).status_code == 422
    assert c.get("/v1/letters?status=lost", headers=h["admin"]).status_code == 422
    assert c.get("/v1/letters?offset=-1", headers=h["admin"]).status_code == 422


def test_get_letter_as_json_html_or_text(api, h, two_letters):
    c, _ = api
    card, _ = two_letters
    r = c.get(f"/v1/letters/{card}", headers=h["protection"])
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["number"] == "〔2026〕第0001号" and body["department"] == "信用卡中心"
    assert body["items"][0]["summary"] and body["events"][0]["kind"] == "issued"
    html = c.get(f"/v1/letters/{card}", headers={**h["protection"], "Accept": "text/html,application/xhtml+xml"})
    assert html.headers["content-type"].startswith("text/html") and "<!DOCTYPE html>" in html.text
    text = c.get(f"/v1/letters/{card}?format=text", headers=h["protection"])
    assert text.headers["content-type"].startswith("text/plain") and "〔2026〕第0001号" in text.text
    assert c.get(f"/v1/letters/{card}", headers={**h["protection"], "Accept": "text/plain"}).text == text.text
    prefers_json = c.get(f"/v1/letters/{card}", headers={**h["protection"], "Accept": "text/html;q=0.5, application/json"})
    assert prefers_json.headers["content-type"] == "application/json"
    assert c.get(f"/v1/letters/{card}?format=json", headers={**h["protection"], "Accept": "text/html"}).json()["id"] == card
    assert c.get(f"/v1/letters/{card}?format=pdf", headers=h["protection"]).status_code == 422
    assert c.get("/v1/letters/999999", headers=h["protection"]).status_code == 404
    assert c.get("/v1/letters/0", headers=h["protection"]).status_code == 422


def test_departments_see_and_answer_only_their_own_letters(api, h, db, two_letters):
    c, _ = api
    card, loans = two_letters
    dept = h["department:信用卡中心"]
    listed = c.get("/v1/letters", headers=dept).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == card
    assert c.get("/v1/letters?department=个人信贷部", headers=dept).json()["total"] == 0
    assert c.get(f"/v1/letters/{loans}", headers=dept).status_code == 404
    assert c.get(f"/v1/letters/{loans}?format=html", headers=dept).status_code == 404
    assert c.post(f"/v1/letters/{loans}/ack", json={}, headers=dept).status_code == 404
    assert c.post(f"/v1/letters/{loans}/resolve", json={"note": "x"}, headers=dept).status_code == 404
    assert c.post(f"/v1/letters/{loans}/extend", json={"days": 30, "reason": "x"}, headers=dept).status_code == 404
    [_, loans_letter] = letters(db)
    assert loans_letter.status == "issued"
    r = c.post(f"/v1/letters/{card}/ack", json={"note": "已安排专人联系客户"}, headers=dept)
    assert r.status_code == 200 and r.json()["status"] == "acknowledged"
    assert r.json()["ack_note"] == "已安排专人联系客户"
    assert r.json()["events"][-1]["kind"] == "acknowledged"


def test_keys_without_the_right_scope_are_refused(api, h, two_letters):
    c, _ = api
    card, _ = two_letters
    assert c.get("/v1/letters").status_code == 401
    assert c.get(f"/v1/letters/{card}", headers={"Authorization": "Bearer xb_nope"}).status_code == 401
    assert c.get("/v1/letters", headers=h["intake"]).status_code == 403
    assert c.get(f"/v1/letters/{card}", headers=h["intake"]).status_code == 403
    assert c.post(f"/v1/letters/{card}/ack", json={}, headers=h["intake"]).status_code == 403
    assert c.post(f"/v1/letters/{card}/resolve", json={"note": "x"}, headers=h["intake"]).status_code == 403
    assert c.post("/v1/letters/flush", headers=h["department:信用卡中心"]).status_code == 403


def test_ack_resolve_and_their_conflicts(api, h, db, two_letters):
    c, desk = api
    card, _ = two_letters
    assert c.post(f"/v1/letters/{card}/ack", headers=h["protection"]).status_code == 200  # no body: no note
    again = c.post(f"/v1/letters/{card}/ack", json={"note": "again"}, headers=h["protection"])
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert c.post(f"/v1/letters/{card}/resolve", json={}, headers=h["protection"]).status_code == 422
    assert c.post(f"/v1/letters/{card}/resolve", json={"note": ""}, headers=h["protection"]).status_code == 422
    assert c.post(f"/v1/letters/{card}/ack", json={"note": 5}, headers=h["protection"]).status_code == 422
    assert c.post(f"/v1/letters/{card}/ack", json={"bad": 1}, headers=h["protection"]).status_code == 422
    r = c.post(f"/v1/letters/{card}/resolve", json={"note": "已退费，客户13812345678表示满意"},
               headers=h["department:信用卡中心"])
    assert r.status_code == 200 and r.json()["status"] == "resolved"
    assert r.json()["resolve_note"] == "已退费，客户138****5678表示满意"
    assert c.post(f"/v1/letters/{card}/resolve", json={"note": "x"}, headers=h["protection"]).status_code == 409
    assert c.post(f"/v1/letters/{card}/ack", json={}, headers=h["protection"]).status_code == 409
    assert c.post("/v1/letters/999999/ack", json={}, headers=h["protection"]).status_code == 404
    assert c.post("/v1/letters/999999/resolve", json={"note": "x"}, headers=h["admin"]).status_code == 404
    assert c.post(f"/v1/letters/{card}/ack", content=b"{", headers={**h["protection"],
                                                                   "Content-Type": "application/json"}).status_code == 400
    html = c.get(f"/v1/letters/{card}?format=html", headers=h["protection"]).text
    assert "已退费" in html and "已办结" in html


def test_resolving_without_ack_counts_as_both(api, h, two_letters):
    c, _ = api
    _, loans = two_letters
    r = c.post(f"/v1/letters/{loans}/resolve", json={"note": "已处理"}, headers=h["admin"])
    assert r.status_code == 200 and r.json()["acknowledged_at"] is not None


def test_extend_for_complex_cases(api, h, db, two_letters):
    c, desk = api
    card, _ = two_letters
    before = c.get(f"/v1/letters/{card}", headers=h["admin"]).json()
    r = c.post(f"/v1/letters/{card}/extend", json={"days": 30, "reason": "需调取三个月交易流水"}, headers=h["department:信用卡中心"])
    assert r.status_code == 200, r.text
    after = r.json()
    assert after["response_days"] == 30
    moved = datetime.fromisoformat(after["response_due_at"]) - datetime.fromisoformat(before["response_due_at"])
    assert moved == timedelta(days=15)
    assert date.fromisoformat(after["items"][0]["decision_due"]) - date.fromisoformat(
        before["items"][0]["decision_due"]) == timedelta(days=15)
    assert "30日" in after["events"][-1]["note"]
    assert c.post(f"/v1/letters/{card}/extend", json={"days": 60, "reason": "x"}, headers=h["admin"]).status_code == 422
    assert c.post(f"/v1/letters/{card}/extend", json={"days": 45, "reason": "x"}, headers=h["admin"]).status_code == 422
    assert c.post(f"/v1/letters/{card}/extend", json={"days": 30, "reason": "x"}, headers=h["admin"]).status_code == 409
    r = c.post(f"/v1/letters/{card}/extend", json={"days": 60, "reason": "涉及司法冻结", "approved_by": "总行消保委"},
               headers=h["admin"])
    assert r.status_code == 200 and r.json()["response_days"] == 60 and "总行消保委批准" in r.json()["events"][-1]["note"]
    html = c.get(f"/v1/letters/{card}?format=html", headers=h["admin"]).text
    assert "本函处理期限为 <b>60</b> 日" in html


def test_flush_endpoint_issues_pending_letters(db, holder, settings, h):
    app = create_app(settings, database=db, model=holder)  # the default 60-minute window
    desk = Desk(db, settings)
    desk.intake()
    with TestClient(app) as c:
        r = c.post("/v1/letters/flush", headers=h["protection"])
        assert r.status_code == 200 and r.json() == {"letters": ["〔2026〕第0001号"]}
        assert c.post("/v1/letters/flush", headers=h["admin"]).json() == {"letters": []}


def test_metrics_count_letters_and_outbox(api, h, two_letters):
    c, _ = api
    card, _ = two_letters
    c.post(f"/v1/letters/{card}/ack", json={}, headers=h["admin"])
    text = c.get("/metrics").text
    assert re.search(r'^xiaobao_letters\{status="issued"\} 1\.0$', text, re.M)
    assert re.search(r'^xiaobao_letters\{status="acknowledged"\} 1\.0$', text, re.M)
    assert re.search(r'^xiaobao_outbox_messages\{status="pending"\} 2\.0$', text, re.M)
    assert re.search(r"^xiaobao_outbox_dead 0\.0$", text, re.M)
    assert re.search(r'^xiaobao_alerts\{status="open"\} 2\.0$', text, re.M)


def test_intake_answers_with_the_letter_reference(api, h):
    c, _ = api
    body = {"external_id": "API-1", "text": PII_TEXT, "channel": "监管转办", "branch": "城东支行",
            "received_at": "2026-05-06T10:00:00", "customer_ref": "C-API"}
    r = c.post("/v1/complaints", json=body, headers=h["intake"])
    assert r.status_code == 201
    alert = r.json()["alert"]
    assert alert["reason"] == "referral" and alert["letter"]["number"] == "〔2026〕第0001号"
    again = c.post("/v1/complaints", json=body, headers=h["intake"])
    assert again.status_code == 200 and again.json()["alert"] == alert
    assert count(c.app.state.db, Letter) == 1


def test_a_department_key_for_an_unknown_department_sees_nothing(api, db, two_letters):
    c, _ = api
    with db.transaction() as s:
        _, key = create_key(s, "ghost", "department:不存在部")
    assert c.get("/v1/letters", headers=bearer(key)).json()["total"] == 0


def test_outbox_messages_carry_the_letter_id(api, two_letters, db):
    card, loans = two_letters
    assert {m.letter_id for m in messages(db)} == {card, loans}
    assert count(db, OutboxMessage) == 2


# Every letters, silences and outbox endpoint × kinds of bad input; none may give a 500.
BAD_REQUESTS = [
    ("POST", "/v1/letters/1/ack", b"null"), ("POST", "/v1/letters/1/ack", b"[]"),
    ("POST", "/v1/letters/1/ack", b'{"note": 5}'), ("POST", "/v1/letters/1/ack", b'{"note": "\xff"}'),
    ("POST", "/v1/letters/1/resolve", b"{}"), ("POST", "/v1/letters/1/resolve", b'{"note": null}'),
    ("POST", "/v1/letters/1/resolve", b'{"note": "' + b"x" * 5000 + b'"}'),
    ("POST", "/v1/letters/1/extend", b'{"days": "30", "reason": "x"}'),
    ("POST", "/v1/letters/1/extend", b'{"days": 30}'), ("POST", "/v1/letters/1/extend", b'{"days": 15, "reason": "x"}'),
    ("POST", "/v1/letters/abc/ack", b"{}"), ("POST", "/v1/letters/99999999999999999999/resolve", b'{"note": "x"}'),
    ("GET", "/v1/letters/abc", None), ("GET", "/v1/letters?limit=0", None), ("GET", "/v1/letters?limit=x", None),
    ("GET", "/v1/letters/99999999999999999999", None), ("GET", "/v1/letters/1?format=docx", None),
    ("POST", "/v1/silences", b'{"branch": "x", "ends_at": 5e300}'),
    ("POST", "/v1/silences", b'{"branch": "x", "ends_at": "0001-01-01T00:00:00"}'),
    ("POST", "/v1/silences", b'{"branch": "x", "starts_at": "0001-01-01T00:00:00", "ends_at": "2026-06-01T00:00:00"}'),
    ("POST", "/v1/silences", b'{"branch": "x", "ends_at": "2026-06-01T00:00:00+25:00"}'),
    ("POST", "/v1/silences", b'{"branch": ["x"], "ends_at": "2026-06-01T00:00:00"}'),
    ("POST", "/v1/silences", b"not json"), ("GET", "/v1/silences?active=maybe", None),
    ("GET", "/v1/silences/abc", None), ("DELETE", "/v1/silences/99999999999999999999", None),
    ("GET", "/v1/outbox?offset=x", None), ("GET", "/v1/outbox?status=lost", None),
    ("POST", "/v1/outbox/abc/retry", None), ("POST", "/v1/outbox/1/retry", None),
]


@pytest.mark.parametrize("method, path, content", BAD_REQUESTS)
def test_no_bad_input_gives_a_500(api, h, method, path, content):
    c, _ = api
    headers = {**h["admin"], **({"Content-Type": "application/json"} if content is not None else {})}
    r = c.request(method, path, content=content, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.json()["error"]["code"] and r.json()["error"]["message"]


def test_a_silence_may_last_practically_forever(api, h):
    c, _ = api
    r = c.post("/v1/silences", json={"branch": "x", "ends_at": "9999-12-31T23:59:59"}, headers=h["admin"])
    assert r.status_code == 201 and r.json()["active"] is True
