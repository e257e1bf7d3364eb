"""Intake (one and batch), reading, listing and feedback: /v1/complaints…"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text

import service.intake
from service.alerting import Alerting
from service.tables import Alert, Complaint
from tests.service.conftest import complaint_body

PII_TEXT = ("客户张先生来电，手机13812345678，身份证110101199003071234，反映信用卡6222021234567890123"
            "被连续扣了两次年费，多次联系客服无果，情绪激动，表示要向银保监会投诉。")


def _body(**changes) -> dict:
    body = {"external_id": "CC-0001", "text": PII_TEXT, "channel": "电话客服", "branch": "高新区支行",
            "received_at": "2026-05-06T10:15:00", "customer_ref": "C0001", "product": "白金信用卡",
            "amount": 600.0, "repeat_count": 2}
    body.update(changes)
    return body


def _count(db) -> int:
    with db.reading() as s:
        return s.scalar(select(func.count()).select_from(Complaint))


# --- intake ------------------------------------------------------------------------------------
def test_intake_stores_masked_text_and_answers_201(client, h, db, holder):
    r = client.post("/v1/complaints", json=_body(), headers=h["intake"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] is True and body["external_id"] == "CC-0001"
    # a high-risk card complaint: alerted to the card centre, its letter waits for the grouping window
    assert body["alert"]["department"] == "信用卡中心" and body["alert"]["letter"] is None
    assert body["prediction"]["model_version"] == holder.version
    assert body["prediction"]["category"]["label"] == "信用卡"
    with db.engine.connect() as conn:
        dump = " ".join(str(v) for row in conn.execute(text("SELECT * FROM complaints")) for v in row)
    for secret in ("13812345678", "110101199003071234", "6222021234567890123"):
        assert secret not in dump
    with db.reading() as s:
        c = s.get(Complaint, body["id"])
    assert "138****5678" in c.text_masked
    assert c.received_at == datetime(2026, 5, 6, 2, 15, tzinfo=UTC)  # no offset given: Asia/Shanghai
    assert (c.channel, c.branch, c.customer_ref, c.product, float(c.amount), c.repeat_count) == (
        "电话客服", "高新区支行", "C0001", "白金信用卡", 600.0, 2)
    assert c.prediction == body["prediction"]
    assert (c.category, c.cause, c.risk_level, c.risk_score) == (
        body["prediction"]["category"]["label"], body["prediction"]["cause"]["label"],
        body["prediction"]["risk"]["level"], body["prediction"]["risk"]["score"])
    assert c.status == "open" and c.closed_at is None


def test_structured_fields_reach_the_model(client, h, holder):
    """The same text scores the same as the bundle given the same fields."""
    r = client.post("/v1/complaints", json=_body(channel="监管转办", repeat_count=5), headers=h["intake"])
    direct = holder.get().predict([PII_TEXT], [{"channel": "监管转办", "repeat_count": 5, "amount": 600.0}])[0]
    assert r.json()["prediction"]["risk"] == direct["risk"]


def test_same_external_id_answers_200_with_the_stored_record(client, h, db):
    first = client.post("/v1/complaints", json=_body(), headers=h["intake"]).json()
    again = client.post("/v1/complaints", json=_body(text="完全不同的内容：存款利息咨询", channel="手机银行"),
                        headers=h["intake"])
    assert again.status_code == 200
    # The stored record, unchanged; `differs` says which of the fields sent this time were not what it holds.
    assert again.json() == {**first, "created": False, "differs": ["text", "channel"]}
    assert _count(db) == 1


def test_a_repeat_says_whether_its_content_differed_from_the_stored_record(client, h, db):
    first = client.post("/v1/complaints", json=_body(), headers=h["intake"]).json()
    assert first["differs"] == []
    same = client.post("/v1/complaints", json=_body(branch=" 高新区支行 ", text=PII_TEXT + "\u200b"),
                       headers=h["intake"])  # the same once cleaned: no difference
    assert same.status_code == 200 and same.json()["differs"] == []
    other = client.post("/v1/complaints", json=_body(amount=601.0, received_at="2026-05-06T10:15:00+00:00",
                                                     customer_ref="C0002", product=None, repeat_count=3),
                        headers=h["intake"])
    assert other.status_code == 200
    assert other.json()["differs"] == ["received_at", "customer_ref", "product", "amount", "repeat_count"]
    batch = client.post("/v1/complaints/batch", json={"items": [_body(external_id="B-1"), _body(external_id="B-1",
                                                                                               branch="营业部")]},
                        headers=h["intake"]).json()
    assert [(i["created"], i["differs"]) for i in batch["items"]] == [(True, []), (False, ["branch"])]
    assert _count(db) == 2


def test_bidi_controls_are_stripped_from_text_and_refused_in_ids(client, h, db):
    bidi = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    r = client.post("/v1/complaints", json=_body(text=f"信用卡{bidi}年费\u202e0001\u202c多扣", branch=f"高新{bidi}区支行",
                                                 customer_ref=f"C{bidi}1", product=f"白金{bidi}卡"),
                    headers=h["intake"])
    assert r.status_code == 201, r.text[:300]
    record = client.get(f"/v1/complaints/{r.json()['id']}", headers=h["admin"]).json()
    assert record["text"] == "信用卡年费0001多扣"  # nothing else changed
    assert (record["branch"], record["customer_ref"], record["product"]) == ("高新区支行", "C1", "白金卡")
    for i, c in enumerate(bidi + "\u200b\ufeff\x07"):
        refused = client.post("/v1/complaints", json=_body(external_id=f"ID{c}{i}"), headers=h["intake"])
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "external_id", repr(c)
        assert f"U+{ord(c):04X}" in refused.json()["error"]["message"]
    assert _count(db) == 1
    only_bidi = client.post("/v1/complaints", json=_body(external_id="BIDI-ONLY", text=bidi), headers=h["intake"])
    assert only_bidi.status_code == 422 and only_bidi.json()["error"]["field"] == "text"


def test_what_ids_refuse_is_what_cleaning_drops():
    from models.text import clean
    from service.schemas import INVISIBLE

    chars = "".join(chr(c) for c in range(0x10000) if re.fullmatch(f"[{INVISIBLE}]", chr(c)))
    assert len(chars) == 29 + 1 + 5 + 9 + 1  # C0 but tab, newline and CR; DEL; zero-width; bidi; BOM
    assert clean(f"甲{chars}乙") == "甲乙"


def test_concurrent_duplicates_store_one_record(client, h, db):
    answers: list = []
    barrier = threading.Barrier(8)

    def send() -> None:
        barrier.wait()
        answers.append(client.post("/v1/complaints", json=_body(external_id="RACE-1"), headers=h["intake"]))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in answers}) == 1
    assert _count(db) == 1


def test_a_race_past_the_lookup_is_settled_by_the_unique_constraint(client, h, db, monkeypatch):
    """Every request misses the pre-check, as when all arrive at once: the UNIQUE external_id
    refuses all but one insert, and the losers answer with the winner's record."""
    monkeypatch.setattr(service.intake.Intake, "find", lambda self, ids: {})
    answers: list = []
    barrier = threading.Barrier(6)

    def send() -> None:
        barrier.wait()
        answers.append(client.post("/v1/complaints", json=_body(external_id="RACE-2"), headers=h["intake"]))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in answers) == [200] * 5 + [201], [r.text[:200] for r in answers]
    assert len({r.json()["id"] for r in answers}) == 1
    assert _count(db) == 1


def test_hook_runs_in_the_intake_transaction(client, h, db, monkeypatch):
    seen = {}

    def hook(alerting, session, complaint, owed):
        seen["id"] = complaint.id
        seen["visible"] = session.scalar(select(Complaint.external_id).where(Complaint.id == complaint.id))
        seen["level"] = complaint.prediction["risk"]["level"]
        return None

    monkeypatch.setattr(Alerting, "alert_for", hook)
    r = client.post("/v1/complaints", json=_body(), headers=h["intake"])
    assert r.status_code == 201
    assert seen == {"id": r.json()["id"], "visible": "CC-0001", "level": r.json()["prediction"]["risk"]["level"]}
    client.post("/v1/complaints", json=_body(), headers=h["intake"])
    assert len(seen) == 3  # a duplicate does not call the hook again


def test_a_failing_hook_stores_nothing(client, h, db, monkeypatch):
    def hook(alerting, session, complaint, owed):
        raise RuntimeError("routing table broken for 13812345678")

    monkeypatch.setattr(Alerting, "alert_for", hook)
    r = client.post("/v1/complaints", json=_body(), headers=h["intake"])
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    assert "13812345678" not in r.text
    assert _count(db) == 0


def _alerting_hook(alerting, session, complaint, owed):
    alert = Alert(dedup_key=f"{complaint.customer_ref}|{complaint.category}|{complaint.cause}", reason="risk_level",
                  department="信用卡中心", risk_level="高", risk_score=0.9, customer_ref=complaint.customer_ref)
    session.add(alert)
    complaint.alert = alert
    session.flush()
    return alert


def test_an_alert_from_the_hook_is_answered_and_scopes_department_reads(client, h, db, monkeypatch):
    monkeypatch.setattr(Alerting, "alert_for", _alerting_hook)
    r = client.post("/v1/complaints", json=_body(), headers=h["intake"])
    alert = r.json()["alert"]
    assert r.status_code == 201 and alert["department"] == "信用卡中心" and alert["letter"] is None
    assert client.post("/v1/complaints", json=_body(), headers=h["intake"]).json()["alert"] == alert
    monkeypatch.setattr(Alerting, "alert_for", lambda *a: None)
    other = client.post("/v1/complaints", json=_body(external_id="CC-0002"), headers=h["intake"]).json()
    dept = h["department:信用卡中心"]
    assert client.get(f"/v1/complaints/{r.json()['id']}", headers=dept).json()["alert"]["id"] == alert["id"]
    assert client.get(f"/v1/complaints/{other['id']}", headers=dept).status_code == 404
    listed = client.get("/v1/complaints", headers=dept).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == r.json()["id"]
    assert client.get("/v1/complaints", headers=h["protection"]).json()["total"] == 2
    r = client.post(f"/v1/complaints/{r.json()['id']}/outcome", json={"escalated": True}, headers=dept)
    assert r.status_code == 201 and r.json()["labels"]["escalated"] is True


def test_intake_needs_an_intake_or_admin_key(client, h):
    assert client.post("/v1/complaints", json=_body()).status_code == 401
    assert client.post("/v1/complaints", json=_body(), headers={"Authorization": "Bearer xb_nope"}).status_code == 401
    assert client.post("/v1/complaints", json=_body(), headers={"Authorization": "Basic abc"}).status_code == 401
    assert client.post("/v1/complaints", json=_body(), headers=h["protection"]).status_code == 403
    assert client.post("/v1/complaints", json=_body(), headers=h["admin"]).status_code == 201


@pytest.mark.parametrize("changes, field", [
    ({"text": " \n\t "}, "text"),
    ({"text": "x" * 20001}, "text"),
    ({"text": None}, "text"),
    ({"text": ["a"]}, "text"),
    ({"channel": "柜台"}, "channel"),
    ({"channel": ""}, "channel"),
    ({"external_id": ""}, "external_id"),
    ({"external_id": "x" * 129}, "external_id"),
    ({"branch": " "}, "branch"),
    ({"received_at": "2026-13-45T25:00:00"}, "received_at"),
    ({"received_at": "yesterday"}, "received_at"),
    ({"received_at": "2999-01-01T00:00:00"}, "received_at"),
    ({"received_at": "0001-01-01T00:00:00"}, "received_at"),
    ({"received_at": "1900-06-01T08:00:00+08:00"}, "received_at"),
    ({"amount": -1}, "amount"),
    ({"amount": "600"}, "amount"),
    ({"repeat_count": 1.5}, "repeat_count"),
    ({"repeat_count": True}, "repeat_count"),
    ({"unknown_field": 1}, "unknown_field"),
])
def test_bad_intake_names_the_field_and_stores_nothing(client, h, db, changes, field):
    r = client.post("/v1/complaints", json=_body(**changes), headers=h["intake"])
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error"]["field"] == field
    assert _count(db) == 0


def test_missing_fields_are_named(client, h):
    body = _body()
    del body["received_at"]
    r = client.post("/v1/complaints", json=body, headers=h["intake"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "received_at"


# --- batch -------------------------------------------------------------------------------------
def test_batch_stores_new_returns_known_and_merges_repeats(client, h, db, corpus):
    client.post("/v1/complaints", json=complaint_body(corpus.iloc[0]), headers=h["intake"])
    items = [complaint_body(corpus.iloc[i]) for i in range(5)] + [complaint_body(corpus.iloc[3])]
    r = client.post("/v1/complaints/batch", json={"items": items}, headers=h["intake"])
    assert r.status_code == 201, r.text[:300]
    body = r.json()
    assert (body["created"], body["existing"]) == (4, 2)
    assert [i["created"] for i in body["items"]] == [False, True, True, True, True, False]
    assert body["items"][3]["id"] == body["items"][5]["id"]
    assert [i["external_id"] for i in body["items"]] == [row["external_id"] for row in items]
    assert _count(db) == 5
    again = client.post("/v1/complaints/batch", json={"items": items[:3]}, headers=h["intake"])
    assert again.status_code == 200 and again.json()["created"] == 0


def test_batch_with_one_bad_item_stores_nothing(client, h, db, corpus):
    items = [complaint_body(corpus.iloc[i]) for i in range(3)]
    items[2]["channel"] = "飞鸽传书"
    r = client.post("/v1/complaints/batch", json={"items": items}, headers=h["intake"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "items[2].channel"
    assert _count(db) == 0


def test_batch_limits(client, h, settings, corpus):
    r = client.post("/v1/complaints/batch", json={"items": []}, headers=h["intake"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "items"
    too_many = [complaint_body(corpus.iloc[0], external_id=f"B{i}") for i in range(settings.intake_batch_max + 1)]
    r = client.post("/v1/complaints/batch", json={"items": too_many}, headers=h["intake"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "batch_too_large"
    assert client.post("/v1/complaints/batch", json={"items": []}, headers=h["protection"]).status_code == 403


def test_a_race_inside_a_batch_keeps_the_other_items(client, h, db, corpus, monkeypatch):
    """One item was stored by someone else between the lookup and the insert: its savepoint rolls
    back, the rest of the batch commits."""
    client.post("/v1/complaints", json=complaint_body(corpus.iloc[1]), headers=h["intake"])
    monkeypatch.setattr(service.intake.Intake, "find", lambda self, ids: {})
    items = [complaint_body(corpus.iloc[i]) for i in range(3)]
    r = client.post("/v1/complaints/batch", json={"items": items}, headers=h["intake"])
    assert r.status_code == 201, r.text[:300]
    assert [i["created"] for i in r.json()["items"]] == [True, False, True]
    assert _count(db) == 3


# --- reading -----------------------------------------------------------------------------------
@pytest.fixture
def stored(client, h, corpus):
    """40 demo requests, stored through the batch endpoint."""
    items = [complaint_body(corpus.iloc[i]) for i in range(40)]
    r = client.post("/v1/complaints/batch", json={"items": items}, headers=h["intake"])
    assert r.status_code == 201
    return items, r.json()["items"]


def test_get_one_returns_the_record(client, h, stored):
    items, results = stored
    r = client.get(f"/v1/complaints/{results[0]['id']}", headers=h["protection"])
    assert r.status_code == 200
    c = r.json()
    assert c["external_id"] == items[0]["external_id"] and c["channel"] == items[0]["channel"]
    assert c["prediction"] == results[0]["prediction"] and c["labels"] is None and c["alert"] is None


def test_get_unknown_or_malformed_ids(client, h):
    r = client.get("/v1/complaints/999999", headers=h["admin"])
    assert r.status_code == 404 and r.json()["error"]["field"] == "complaint_id"
    for bad in ("abc", "0", "-1", str(2**70)):
        r = client.get(f"/v1/complaints/{bad}", headers=h["admin"])
        assert r.status_code == 422 and r.json()["error"]["field"] == "complaint_id", bad
    assert client.get("/v1/complaints/1", headers=h["intake"]).status_code == 403
    assert client.get("/v1/complaints/1").status_code == 401


def test_list_filters_and_counts(client, h, stored, corpus):
    items, results = stored
    everything = client.get("/v1/complaints", params={"limit": 500}, headers=h["admin"]).json()
    assert everything["total"] == 40 and len(everything["items"]) == 40
    times = [i["received_at"] for i in everything["items"]]
    assert times == sorted(times, reverse=True)  # newest first
    channel = items[0]["channel"]
    by_channel = client.get("/v1/complaints", params={"channel": channel, "limit": 500}, headers=h["admin"]).json()
    assert by_channel["total"] == sum(i["channel"] == channel for i in items)
    assert all(i["channel"] == channel for i in by_channel["items"])
    category = results[0]["prediction"]["category"]["label"]
    by_cat = client.get("/v1/complaints", params={"category": category}, headers=h["admin"]).json()
    assert by_cat["total"] == sum(r["prediction"]["category"]["label"] == category for r in results)
    cause = results[0]["prediction"]["cause"]["label"]
    by_cause = client.get("/v1/complaints", params={"cause": cause}, headers=h["admin"]).json()
    assert by_cause["total"] == sum(r["prediction"]["cause"]["label"] == cause for r in results)
    for level in ("高", "中", "低"):
        n = client.get("/v1/complaints", params={"risk_level": level}, headers=h["admin"]).json()["total"]
        assert n == sum(r["prediction"]["risk"]["level"] == level for r in results)
    for flag in (True, False):
        n = client.get("/v1/complaints", params={"needs_review": flag}, headers=h["admin"]).json()["total"]
        assert n == sum(r["prediction"]["needs_review"] == flag for r in results)
    branch = items[5]["branch"]
    n = client.get("/v1/complaints", params={"branch": branch}, headers=h["admin"]).json()["total"]
    assert n == sum(i["branch"] == branch for i in items)


def test_list_by_received_time_in_local_time(client, h, stored):
    items, _ = stored
    stamps = sorted(i["received_at"] for i in items)
    cut = stamps[20]
    later = client.get("/v1/complaints", params={"received_from": cut}, headers=h["admin"]).json()["total"]
    earlier = client.get("/v1/complaints", params={"received_to": cut}, headers=h["admin"]).json()["total"]
    assert later == sum(s >= cut for s in stamps) and earlier == sum(s < cut for s in stamps)
    assert later + earlier == 40
    day = stamps[0][:10]
    n = client.get("/v1/complaints", params={"received_from": day, "received_to": "2100-01-01"},
                   headers=h["admin"]).json()["total"]
    assert n == 40


def test_list_pages_do_not_overlap(client, h, stored):
    seen = []
    for offset in range(0, 40, 15):
        page = client.get("/v1/complaints", params={"limit": 15, "offset": offset}, headers=h["admin"]).json()
        assert page["total"] == 40 and page["limit"] == 15 and page["offset"] == offset
        seen += [i["id"] for i in page["items"]]
    assert len(seen) == 40 and len(set(seen)) == 40
    assert client.get("/v1/complaints", headers=h["admin"]).json()["limit"] == 50


@pytest.mark.parametrize("params, field", [
    ({"risk_level": "极高"}, "risk_level"),
    ({"needs_review": "maybe"}, "needs_review"),
    ({"received_from": "not-a-date"}, "received_from"),
    ({"received_to": "2026-02-30"}, "received_to"),
    ({"received_from": "2026-06-01", "received_to": "2026-05-01"}, "received_to"),
    ({"limit": 0}, "limit"),
    ({"limit": 100000}, "limit"),
    ({"offset": -1}, "offset"),
    ({"status": "lost"}, "status"),
])
def test_bad_list_queries_name_the_parameter(client, h, params, field):
    r = client.get("/v1/complaints", params=params, headers=h["admin"])
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error"]["field"] == field


# --- outcomes ----------------------------------------------------------------------------------
def test_outcomes_record_labels_and_close_the_case(client, h, db, stored):
    _, results = stored
    cid = results[0]["id"]
    predicted = results[0]["prediction"]
    r = client.post(f"/v1/complaints/{cid}/outcome", json={"escalated": True, "note": "客户已致电 13812345678"},
                    headers=h["protection"])
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["labels"] == {"escalated": True, "category": None, "cause": None}
    assert "13812345678" not in out["note"] and out["complaint_status"] == "open"
    r = client.post(f"/v1/complaints/{cid}/outcome", json={"confirmed": True, "cause": "定价收费", "closed": True},
                    headers=h["admin"])
    out = r.json()
    assert out["labels"] == {"escalated": True, "category": predicted["category"]["label"], "cause": "定价收费"}
    assert out["complaint_status"] == "closed" and out["closed_at"] is not None
    detail = client.get(f"/v1/complaints/{cid}", headers=h["admin"]).json()
    assert detail["labels"] == out["labels"] and detail["status"] == "closed"
    closed = client.get("/v1/complaints", params={"status": "closed"}, headers=h["admin"]).json()
    assert closed["total"] == 1 and closed["items"][0]["id"] == cid


def test_outcome_with_an_explicit_closing_time(client, h, stored):
    items, results = stored
    r = client.post(f"/v1/complaints/{results[1]['id']}/outcome", json={"closed_at": "2026-12-01T10:00:00+08:00"},
                    headers=h["admin"])
    assert r.status_code == 201 and r.json()["closed_at"].startswith("2026-12-01T02:00:00")
    r = client.post(f"/v1/complaints/{results[1]['id']}/outcome", json={"closed_at": "2000-01-01T00:00:00"},
                    headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "closed_at"


@pytest.mark.parametrize("body, field", [
    ({}, "body"),
    ({"category": "火星业务"}, "category"),
    ({"cause": "态度不好"}, "cause"),
    ({"escalated": "yes"}, "escalated"),
    ({"confirmed": 1}, "confirmed"),
    ({"note": "x" * 4001}, "note"),
    ({"closed_at": "soon"}, "closed_at"),
])
def test_bad_outcomes_name_the_field(client, h, stored, body, field):
    _, results = stored
    r = client.post(f"/v1/complaints/{results[0]['id']}/outcome", json=body, headers=h["admin"])
    assert r.status_code == 422, r.text[:300]
    assert r.json()["error"]["field"] == field


def test_outcome_permissions_and_unknown_ids(client, h, stored):
    _, results = stored
    cid = results[0]["id"]
    assert client.post(f"/v1/complaints/{cid}/outcome", json={"escalated": True}, headers=h["intake"]).status_code == 403
    # a department only gives feedback on what was routed to it
    r = client.post(f"/v1/complaints/{cid}/outcome", json={"escalated": True}, headers=h["department:信用卡中心"])
    assert r.status_code == 404
    r = client.post("/v1/complaints/999999/outcome", json={"escalated": True}, headers=h["admin"])
    assert r.status_code == 404 and r.json()["error"]["field"] == "complaint_id"
