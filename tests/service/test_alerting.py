"""Raising alerts in the intake hook: thresholds, referrals, dedup (also under concurrent intake),
silences, and the one transaction that stores a complaint with all it causes."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import service.letters.notify
from service.app import create_app
from service.tables import Alert, Complaint, Letter, LetterSequence, OutboxMessage, Silence
from tests.service.alerting_support import Desk, alerts, count, letters, messages, settings_for
from tests.service.conftest import complaint_body


@pytest.fixture
def desk(db) -> Desk:
    return Desk(db, settings_for(db))


def test_high_risk_raises_an_alert_routed_by_the_routing_file(desk, db):
    made = desk.intake(category="个人贷款", cause="合同条款", level="高", score=0.93, branch="港口支行")
    [a] = alerts(db)
    assert made["alert"] == a.id and made["status"] == "open"
    assert (a.department, a.reason, a.risk_level, a.occurrences, a.branch) == ("个人信贷部", "risk_level", "高", 1, "港口支行")
    assert a.dedup_key == "C0001|个人贷款|合同条款" and a.letter_id is None  # waits for its grouping window
    with db.reading() as s:
        assert s.get(Complaint, made["complaint"]).alert_id == a.id


def test_below_the_alert_level_nothing_is_raised(desk, db):
    assert desk.intake(level="中", score=0.5)["alert"] is None
    assert desk.intake(level="低", score=0.1, customer="C0002")["alert"] is None
    assert desk.intake(level=None, score=None, customer="C0003")["alert"] is None  # a model without a risk head
    assert count(db, Alert) == 0


def test_the_alert_level_is_configurable(db):
    desk = Desk(db, settings_for(db, alert_min_level="中"))
    assert desk.intake(level="中", score=0.5)["alert"] is not None
    assert desk.intake(level="低", score=0.1, customer="C0002")["alert"] is None


def test_every_regulator_referral_raises_an_alert(desk, db):
    made = desk.intake(channel="监管转办", level="低", score=0.05)
    assert made["alert"] is not None and alerts(db)[0].reason == "referral"
    other = Desk(db, settings_for(db, alert_channels=["媒体"]))
    assert other.intake(channel="监管转办", level="低", score=0.05, customer="C0009")["alert"] is None
    assert other.intake(channel="媒体", level="低", score=0.05, customer="C0010")["alert"] is not None


def test_a_repeat_updates_the_open_alert(desk, db):
    first = desk.intake(level="高", score=0.81)
    desk.clock.advance(days=3)
    second = desk.intake(level="高", score=0.95, channel="监管转办")
    desk.clock.advance(days=1)
    third = desk.intake(level="低", score=0.2)  # low on its own, but the same matter
    [a] = alerts(db)
    assert first["alert"] == second["alert"] == third["alert"] == a.id
    assert a.occurrences == 3 and a.risk_score == 0.95 and a.risk_level == "高" and a.reason == "referral"
    assert a.last_seen_at == desk.clock.now()
    with db.reading() as s:
        linked = s.scalars(select(Complaint.id).where(Complaint.alert_id == a.id).order_by(Complaint.id)).all()
    assert linked == [first["complaint"], second["complaint"], third["complaint"]]


def test_other_customer_category_or_cause_is_another_alert(desk, db):
    desk.intake()
    desk.intake(customer="C0002")
    desk.intake(category="借记卡")
    desk.intake(cause="合同条款")
    assert count(db, Alert) == 4


def test_without_a_customer_reference_there_is_no_dedup(desk, db):
    desk.intake(customer=None)
    desk.intake(customer=None)
    assert [a.occurrences for a in alerts(db)] == [1, 1]


def test_after_the_dedup_window_a_repeat_opens_a_new_alert(desk, db):
    desk.intake()
    desk.clock.advance(days=31)  # window 30 days from the last request
    desk.intake()
    old, new = alerts(db)
    assert (old.status, new.status, new.occurrences) == ("lapsed", "open", 1)
    desk.clock.advance(days=29)
    desk.intake()
    assert alerts(db)[1].occurrences == 2


def test_the_dedup_window_runs_on_received_times(desk, db):
    """A late-delivered older request still joins its matter."""
    desk.intake(received=desk.clock.now())
    desk.intake(received=desk.clock.now() - timedelta(days=10))
    [a] = alerts(db)
    assert a.occurrences == 2 and a.last_seen_at == desk.clock.now()


def test_concurrent_repeats_of_one_customer_make_one_alert(db):
    """Eight intakes of the same matter at once: one alert, eight occurrences (the partial unique
    index plus the row lock; on PostgreSQL the racers really overlap)."""
    desk = Desk(db, settings_for(db, group_window_minutes=0))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def send(i: int) -> None:
        try:
            barrier.wait()
            desk.intake(f"RACE-{i}", score=0.8 + i / 100)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    [a] = alerts(db)
    assert a.occurrences == 8 and a.risk_score == pytest.approx(0.87)
    assert count(db, Letter) == 1  # window 0: the first one's letter; the others are repeats on it
    with db.reading() as s:
        assert s.scalar(select(LetterSequence.last_seq)) == 1
        assert {e.kind for e in s.get(Letter, a.letter_id).events} >= {"issued", "repeat"}


def test_concurrent_intake_over_http_joins_one_alert(client, h, db, corpus):
    row = corpus[corpus["text"].str.contains("年费")].iloc[0]
    bodies = [complaint_body(row, external_id=f"HTTP-RACE-{i}", customer_ref="C-RACE", channel="监管转办")
              for i in range(6)]
    barrier = threading.Barrier(6)
    answers: list = []

    def send(body) -> None:
        barrier.wait()
        answers.append(client.post("/v1/complaints", json=body, headers=h["intake"]))

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [201] * 6, [r.text[:200] for r in answers]
    assert len({r.json()["alert"]["id"] for r in answers}) == 1
    [a] = alerts(db)
    assert a.occurrences == 6 and a.reason == "referral"


# --- silences --------------------------------------------------------------------------------------
def _silence(db, desk, hours: float = 24, **match) -> int:
    with db.transaction() as s:
        row = Silence(starts_at=desk.clock.now(), ends_at=desk.clock.now() + timedelta(hours=hours), **match)
        s.add(row)
        s.flush()
        return row.id


def test_a_silenced_alert_is_recorded_without_a_letter(db):
    desk = Desk(db, settings_for(db, group_window_minutes=0))
    sid = _silence(db, desk, department="信用卡中心")
    made = desk.intake()
    [a] = alerts(db)
    assert made["status"] == "silenced" and a.silence_id == sid and a.letter_id is None
    assert count(db, Letter) == 0 and count(db, OutboxMessage) == 0
    desk.intake()  # repeats still collect on it while muted
    assert alerts(db)[0].occurrences == 2 and alerts(db)[0].status == "silenced"
    assert desk.intake(category="个人贷款", cause="合同条款")["letter"] is not None  # another department


@pytest.mark.parametrize("match, muted", [
    ({"category": "信用卡"}, True), ({"cause": "定价收费"}, True), ({"branch": "城东支行"}, True),
    ({"category": "信用卡", "branch": "港口支行"}, False), ({"department": "个人信贷部"}, False),
])
def test_silences_match_on_every_field_given(db, match, muted):
    desk = Desk(db, settings_for(db, group_window_minutes=0))
    _silence(db, desk, **match)
    assert (desk.intake()["status"] == "silenced") is muted


def test_referrals_are_never_silenced(db):
    desk = Desk(db, settings_for(db, group_window_minutes=0))
    _silence(db, desk, department="信用卡中心")
    made = desk.intake(channel="监管转办")
    assert made["status"] == "open" and made["letter"] is not None


def test_after_a_silence_ends_a_repeat_reaches_the_department(db):
    desk = Desk(db, settings_for(db, group_window_minutes=0))
    _silence(db, desk, hours=2, category="信用卡")
    desk.intake()
    desk.clock.advance(hours=3)
    made = desk.intake()
    [a] = alerts(db)
    assert made["status"] == "open" and a.silence_id is None and a.occurrences == 2
    [letter] = letters(db)
    assert a.letter_id == letter.id
    with db.reading() as s:
        assert len(s.get(Letter, letter.id).items) == 2  # both requests of the matter are listed


def test_a_silence_created_while_an_alert_waits_for_its_window_mutes_it(desk, db):
    desk.intake()
    _silence(db, desk, department="信用卡中心")
    desk.clock.advance(hours=2)
    assert desk.flush() == []
    assert alerts(db)[0].status == "silenced"


# --- one transaction ---------------------------------------------------------------------------------
@pytest.fixture
def client0(db, holder, settings):
    """The app with a grouping window of 0: each alert's letter goes out with its intake."""
    app = create_app(settings.model_copy(update={"group_window_minutes": 0}), database=db, model=holder)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_complaint_alert_letter_and_messages_commit_together(client0, h, db, monkeypatch):
    """With window 0 the letter and its messages are written by the intake transaction; when a
    part fails, nothing of it is stored and the letter number is not used up."""
    client = client0
    body = {"external_id": "TX-1", "text": "信用卡年费重复扣了两次，客服推诿，要向银保监会投诉", "channel": "监管转办",
            "branch": "城东支行", "received_at": "2026-05-06T10:00:00", "customer_ref": "C-TX"}

    def broken(*args, **kwargs):
        raise RuntimeError("mail queue unavailable")

    monkeypatch.setattr(service.letters.notify, "enqueue_email", broken)
    r = client.post("/v1/complaints", json=body, headers=h["intake"])
    assert r.status_code == 500
    for table in (Complaint, Alert, Letter, OutboxMessage):
        assert count(db, table) == 0, table
    with db.reading() as s:
        assert (s.scalar(select(LetterSequence.last_seq)) or 0) == 0
    monkeypatch.undo()
    r = client.post("/v1/complaints", json=body, headers=h["intake"])
    assert r.status_code == 201, r.text
    letter = r.json()["alert"]["letter"]
    assert letter["number"].endswith("第0001号")
    assert [m.letter_id for m in messages(db)] == [letter["id"]]


# --- the silences API --------------------------------------------------------------------------------
@pytest.fixture
def api0(db, holder, settings):
    s = settings.model_copy(update={"group_window_minutes": 0})
    desk = Desk(db, s)
    app = create_app(s, database=db, model=holder, clock=desk.clock)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c, desk


def test_silences_are_created_listed_and_expired_through_the_api(api0, h, db):
    c, desk = api0
    r = c.post("/v1/silences", json={"department": "信用卡中心", "ends_at": "2026-05-07T10:00:00",
                                     "comment": "系统升级期间，客户13812345678的来电另行处理"}, headers=h["protection"])
    assert r.status_code == 201, r.text
    silence = r.json()
    assert silence["active"] is True and silence["department"] == "信用卡中心" and silence["category"] is None
    assert silence["ends_at"] == "2026-05-07T02:00:00Z" and "138****5678" in silence["comment"]
    assert desk.intake()["status"] == "silenced"
    assert c.get(f"/v1/silences/{silence['id']}", headers=h["admin"]).json() == silence
    listed = c.get("/v1/silences?active=true", headers=h["admin"]).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == silence["id"]
    assert c.get("/v1/silences?active=false", headers=h["admin"]).json()["total"] == 0
    r = c.delete(f"/v1/silences/{silence['id']}", headers=h["admin"])
    assert r.status_code == 200 and r.json()["active"] is False
    assert c.get("/v1/silences?active=false", headers=h["admin"]).json()["total"] == 1
    assert c.get("/v1/silences", headers=h["admin"]).json()["total"] == 1
    assert desk.intake(customer="C0002")["letter"] is not None


@pytest.mark.parametrize("body, field", [
    ({"ends_at": "2026-05-07T10:00:00"}, "body"),
    ({"category": "信用卡中心", "ends_at": "2026-05-07T10:00:00"}, "category"),
    ({"cause": "态度", "ends_at": "2026-05-07T10:00:00"}, "cause"),
    ({"department": "风险部", "ends_at": "2026-05-07T10:00:00"}, "department"),
    ({"branch": "城东支行", "ends_at": "2026-05-01T10:00:00"}, "ends_at"),
    ({"branch": "城东支行", "starts_at": "2026-05-09T10:00:00", "ends_at": "2026-05-08T10:00:00"}, "ends_at"),
    ({"branch": "城东支行", "ends_at": "tomorrow"}, "ends_at"),
    ({"branch": "城东支行"}, "ends_at"),
    ({"branch": "城东支行", "ends_at": "2026-05-07T10:00:00", "owner": "x"}, "owner"),
])
def test_bad_silences_are_refused_naming_the_field(api0, h, body, field):
    c, _ = api0
    r = c.post("/v1/silences", json=body, headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text


def test_silences_need_an_admin_or_protection_key(api0, h):
    c, _ = api0
    body = {"branch": "城东支行", "ends_at": "2026-05-07T10:00:00"}
    assert c.post("/v1/silences", json=body).status_code == 401
    assert c.post("/v1/silences", json=body, headers=h["intake"]).status_code == 403
    assert c.post("/v1/silences", json=body, headers=h["department:信用卡中心"]).status_code == 403
    assert c.get("/v1/silences", headers=h["department:信用卡中心"]).status_code == 403
    assert c.get("/v1/silences/999999", headers=h["admin"]).status_code == 404
    assert c.delete("/v1/silences/999999", headers=h["admin"]).status_code == 404
    assert c.delete("/v1/silences/1", headers=h["intake"]).status_code == 403


def test_a_future_silence_starts_later(api0, h):
    c, desk = api0
    r = c.post("/v1/silences", json={"category": "信用卡", "starts_at": "2026-05-06T12:00:00",
                                     "ends_at": "2026-05-06T18:00:00"}, headers=h["admin"])
    assert r.status_code == 201 and r.json()["active"] is False
    assert desk.intake()["status"] == "open"
    desk.clock.advance(hours=3)
    assert desk.intake(customer="C0002")["status"] == "silenced"
