"""GET /v1/digests/weekly and POST /v1/digests/weekly/send, the schedule the worker runs, the CLI,
and what reaches the outbox: success and failure paths on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import openpyxl
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.clock import SystemClock
from service.digest import service as digest_service
from service.digest.build import Reference
from service.digest.weeks import last_complete_week
from service.outbox import Delivery, EmailSender
from service.settings import Settings
from service.tables import Digest, OutboxMessage
from tests.service.conftest import complaint_body
from tests.service.digest_data import ZONE, at, complaint
from xiaobao.cli import main

PROTECTION_EMAIL = "xiaobao-xbb@bank.example"  # the shipped routing file's 消费者权益保护部
PII_TEXT = ("客户张先生来电，手机13812345678，身份证110101199003071234，反映信用卡6222021234567890123"
            "被连续扣了两次年费，多次联系客服无果，表示要向监管投诉。")


def _seed(db, n: int = 5) -> None:
    with db.transaction() as s:
        s.add_all([complaint(f"2026-05-{11 + i:02d} 10:00", level="高" if i == 0 else "低", score=0.9 if i == 0 else 0.1)
                   for i in range(n)])


def _count(db, table) -> int:
    with db.reading() as s:
        return s.scalar(select(func.count()).select_from(table))


# --- GET --------------------------------------------------------------------------------------
def test_default_week_is_the_last_complete_one(client, h):
    r = client.get("/v1/digests/weekly", headers=h["protection"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["week"] == last_complete_week(datetime.now(UTC), ZONE).label and r.json()["complete"] is True


def test_a_chosen_week_in_each_format(client, h, db):
    _seed(db)
    r = client.get("/v1/digests/weekly", params={"week": "2026-W20"}, headers=h["admin"])
    assert r.status_code == 200 and r.json()["volume"]["this_week"] == 5 and r.json()["high_risk"]["total"] == 1
    r = client.get("/v1/digests/weekly", params={"week": "2026-W20", "format": "html"}, headers=h["protection"])
    assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.text.count('src="data:image/png;base64,') == 5 and "投诉处理周报 2026-W20" in r.text
    r = client.get("/v1/digests/weekly", params={"week": "2026-W20", "format": "text"}, headers=h["protection"])
    assert r.headers["content-type"] == "text/plain; charset=utf-8" and "本周投诉量  5 件" in r.text
    r = client.get("/v1/digests/weekly", params={"week": "2026-W20", "format": "xlsx"}, headers=h["protection"])
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats-officedocument.spreadsheetml")
    assert r.headers["content-disposition"] == 'attachment; filename="digest-2026-W20.xlsx"'
    assert "网点排名" in openpyxl.load_workbook(io.BytesIO(r.content)).sheetnames


@pytest.mark.parametrize("accept, expected", [
    ("text/html,application/xhtml+xml,*/*;q=0.8", "text/html"), ("text/plain", "text/plain"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/vnd.openxmlformats"),
    ("*/*", "application/json"), ("application/json", "application/json"),
])
def test_accept_header_chooses_the_format(client, h, accept, expected):
    r = client.get("/v1/digests/weekly?week=2026-W20", headers={**h["protection"], "Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"].startswith(expected)
    r = client.get("/v1/digests/weekly?week=2026-W20&format=json", headers={**h["protection"], "Accept": accept})
    assert r.headers["content-type"].startswith("application/json")  # format= wins


@pytest.mark.parametrize("params, field, words", [
    ({"week": "2026-20"}, "week", "ISO week"), ({"week": "2026-W54"}, "week", "W01 to W53"),
    ({"week": "last"}, "week", "ISO week"), ({"week": "2099-W01"}, "week", "future"),
    ({"week": "\x0c"}, "week", "ISO week"), ({"week": " 2026-W20"}, "week", "ISO week"),
    ({"week": "2026-W20", "format": "pdf"}, "format", "json, html, text or xlsx"),
])
def test_bad_week_or_format_is_a_422_naming_the_field(client, h, params, field, words):
    r = client.get("/v1/digests/weekly", params=params, headers=h["protection"])
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field and words in error["message"]
    if field == "week":
        r = client.post("/v1/digests/weekly/send", params={"week": params["week"]}, headers=h["protection"])
        assert r.status_code == 422 and r.json()["error"]["field"] == "week"


def test_keys_and_scopes(client, h):
    for method, path in (("get", "/v1/digests/weekly"), ("post", "/v1/digests/weekly/send")):
        assert getattr(client, method)(path).status_code == 401
        assert getattr(client, method)(path, headers={"Authorization": "Bearer xb_nope"}).status_code == 401
        r = getattr(client, method)(path, headers=h["intake"])
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        r = getattr(client, method)(path, headers=h["department:信用卡中心"])
        assert r.status_code == 403 and "every department" in r.json()["error"]["message"]
    assert client.get("/v1/digests/weekly", headers=h["protection"]).status_code == 200
    assert client.get("/v1/digests/weekly", headers=h["admin"]).status_code == 200


def test_the_digest_shows_masked_text_only(client, h, db):
    body = complaint_body({"id": "PII-1", "text": PII_TEXT, "channel": "监管转办", "branch": "城东支行",
                           "received_at": "2026-05-12T10:00:00", "customer_ref": "", "repeat_count": "3",
                           "amount": ""})
    assert client.post("/v1/complaints", json=body, headers=h["intake"]).status_code == 201
    outputs = []
    for fmt in ("json", "html", "text"):
        r = client.get("/v1/digests/weekly", params={"week": "2026-W20", "format": fmt}, headers=h["protection"])
        outputs.append(r.text)
    r = client.get("/v1/digests/weekly", params={"week": "2026-W20", "format": "xlsx"}, headers=h["protection"])
    wb = openpyxl.load_workbook(io.BytesIO(r.content))
    outputs.append(" ".join(str(c) for ws in wb for row in ws.iter_rows(values_only=True) for c in row))
    assert any("138****5678" in o for o in outputs[:3])  # the excerpt, masked, is there
    for out in outputs:
        for secret in ("13812345678", "110101199003071234", "6222021234567890123"):
            assert secret not in out


# --- POST send --------------------------------------------------------------------------------
def test_send_is_idempotent_per_week_and_recipient_unless_forced(client, h, db):
    _seed(db)
    r = client.post("/v1/digests/weekly/send", params={"week": "2026-W20"}, headers=h["protection"])
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["sent_to"] == [PROTECTION_EMAIL] and first["already_sent"] == [] and first["digest_id"]
    with db.reading() as s:
        msg = s.scalar(select(OutboxMessage))
    assert msg.idempotency_key == f"digest:2026-W20:{PROTECTION_EMAIL}" and msg.kind == "email"
    assert msg.event == "digest.weekly" and msg.payload["to"] == [PROTECTION_EMAIL]
    assert msg.payload["subject"].startswith("投诉处理周报 2026-W20")
    assert "data:image/png;base64," in msg.payload["html"] and "一、总体情况" in msg.payload["text"]

    r = client.post("/v1/digests/weekly/send", params={"week": "2026-W20"}, headers=h["admin"])
    assert r.status_code == 200 and r.json()["sent_to"] == [] and r.json()["already_sent"] == [PROTECTION_EMAIL]
    assert r.json()["content_hash"] == first["content_hash"]
    assert (_count(db, OutboxMessage), _count(db, Digest)) == (1, 1)

    r = client.post("/v1/digests/weekly/send", params={"week": "2026-W20", "force": "true"}, headers=h["protection"])
    assert r.status_code == 201 and r.json()["sent_to"] == [PROTECTION_EMAIL]
    assert (_count(db, OutboxMessage), _count(db, Digest)) == (2, 2)
    with db.reading() as s:
        keys = sorted(s.scalars(select(OutboxMessage.idempotency_key)))
        records = s.execute(select(Digest.week, Digest.source, Digest.forced, Digest.recipients)
                            .order_by(Digest.id)).all()
    assert keys[0] == f"digest:2026-W20:{PROTECTION_EMAIL}" and keys[1].startswith(keys[0] + ":")
    assert [tuple(r) for r in records] == [("2026-W20", "api", False, [PROTECTION_EMAIL]),
                                           ("2026-W20", "api", True, [PROTECTION_EMAIL])]


def test_send_without_a_recipient_is_a_409(client, h, db, monkeypatch):
    monkeypatch.setattr(digest_service, "recipients", lambda settings: [])
    r = client.post("/v1/digests/weekly/send", params={"week": "2026-W20"}, headers=h["protection"])
    assert r.status_code == 409 and r.json()["error"]["code"] == "no_recipient"
    assert _count(db, OutboxMessage) == 0 and _count(db, Digest) == 0


def test_configured_recipients_each_get_one_message(db, settings):
    settings = settings.model_copy(update={"digest_recipients": ["a@bank.example", "b@bank.example"]})
    week, now = last_complete_week(at("2026-05-18 09:00"), ZONE), at("2026-05-18 09:00")
    first = digest_service.send_now(db, settings, week, Reference(None, None), now)
    assert first.sent_to == ["a@bank.example", "b@bank.example"]
    grown = settings.model_copy(update={"digest_recipients": ["a@bank.example", "c@bank.example"]})
    second = digest_service.send_now(db, grown, week, Reference(None, None), now)
    assert (second.sent_to, second.already_sent) == (["c@bank.example"], ["a@bank.example"])
    assert _count(db, OutboxMessage) == 3


def test_the_outbox_worker_delivers_the_digest_as_html_mail(db, settings):
    _seed(db)
    digest_service.send_now(db, settings, last_complete_week(at("2026-05-18 09:00"), ZONE), Reference(None, None),
                            at("2026-05-18 09:00"))
    delivered = []
    report = Delivery(db, settings, SystemClock(), senders={"email": delivered.append}).run_once()
    assert report.sent == 1 and len(delivered) == 1
    mail = EmailSender(settings).build(delivered[0])
    assert mail["To"] == PROTECTION_EMAIL and mail["Subject"].startswith("投诉处理周报 2026-W20")
    assert mail.get_body(("html",)).get_content().count("data:image/png;base64,") == 5
    assert "八、模型健康" in mail.get_body(("plain",)).get_content()


# --- the schedule -----------------------------------------------------------------------------
def _tick(db, now: datetime, settings: Settings):
    with db.transaction() as s:
        return digest_service.run_due_digests(s, now, settings)


def test_the_scheduler_fires_once_per_week_at_monday_eight(db, settings):
    _seed(db)
    assert settings.digest_schedule == "MON 08:00"
    assert _tick(db, at("2026-05-18 07:59"), settings) is None  # W20 ended, not yet 08:00
    sent = _tick(db, at("2026-05-18 08:00"), settings)
    assert sent is not None and sent.week == "2026-W20" and sent.sent_to == [PROTECTION_EMAIL]
    for later in ("2026-05-18 08:00", "2026-05-18 08:01", "2026-05-20 12:00", "2026-05-24 23:59"):
        assert _tick(db, at(later), settings) is None  # a restart, another worker, the rest of the week
    assert _count(db, OutboxMessage) == 1
    nxt = _tick(db, at("2026-05-25 08:30"), settings)
    assert nxt is not None and nxt.week == "2026-W21"
    with db.reading() as s:
        assert sorted(s.scalars(select(Digest.week).where(Digest.source == "schedule"))) == ["2026-W20", "2026-W21"]
        record = s.scalar(select(Digest).where(Digest.week == "2026-W20"))
    assert record.recipients == [PROTECTION_EMAIL] and len(record.content_hash) == 64


def test_the_worker_runs_the_digest_job_and_delivers_the_mail(db, settings):
    from service.alerting import Alerting
    from service.clock import ManualClock
    from service.routing import load_routing
    from service.worker import Worker

    # Later than the wall clock: the outbox stamps messages with the real time, the worker claims by its clock.
    monday = at("2027-05-17 07:59")
    clock = ManualClock(monday)
    delivered: list = []
    job = digest_service.DigestJob(settings)
    worker = Worker(db, settings, Alerting(settings, load_routing(settings), clock), clock,
                    delivery=Delivery(db, settings, clock, senders={"email": delivered.append}), jobs=[job.job()])
    assert worker.tick().errors == [] and delivered == []
    clock.set(monday + timedelta(minutes=1))
    assert worker.tick().errors == []
    week = last_complete_week(clock.now(), ZONE).label
    assert [m.key for m in delivered] == [f"digest:{week}:{PROTECTION_EMAIL}"]
    for minutes in (2, 60, 60 * 24 * 3):
        clock.set(monday + timedelta(minutes=minutes))
        assert worker.tick().errors == []
    assert len(delivered) == 1 and job._recorded == week
    assert _count(db, Digest) == 1


def test_the_scheduled_digest_uses_the_registry_of_the_settings_it_was_given(db, settings, trained_registry,
                                                                           tmp_path, monkeypatch):
    """Its reference model is that of the settings' registry, not of XIAOBAO_REGISTRY (read at start-up)."""
    registry, _ = trained_registry
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(tmp_path / "another-registry"))
    _seed(db)
    assert _tick(db, at("2026-05-18 08:00"), settings).sent_to == [PROTECTION_EMAIL]
    delivered: list = []
    Delivery(db, settings, SystemClock(), senders={"email": delivered.append}).run_once()
    text = EmailSender(settings).build(delivered[0]).get_body(("plain",)).get_content()
    assert f"参考分布：{registry.current()}" in text
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(registry.root))
    empty = settings.model_copy(update={"registry": tmp_path / "empty-registry"})
    assert digest_service.registry_reference(empty).version is None
    assert digest_service.registry_reference(settings).version == registry.current()


def test_a_manual_send_does_not_stop_the_schedule_nor_double_the_mail(client, h, db, settings):
    assert client.post("/v1/digests/weekly/send?week=2026-W20", headers=h["protection"]).status_code == 201
    sent = _tick(db, at("2026-05-18 08:00"), settings)
    assert sent is not None and sent.sent_to == [] and sent.already_sent == [PROTECTION_EMAIL]
    assert _count(db, OutboxMessage) == 1 and _tick(db, at("2026-05-18 09:00"), settings) is None


def test_a_late_worker_catches_up_and_the_schedule_is_configurable(db, settings):
    late = _tick(db, at("2026-05-21 15:00"), settings)  # down on Monday, back on Thursday
    assert late is not None and late.week == "2026-W20"
    custom = settings.model_copy(update={"digest_schedule": "WED 18:30"})
    assert _tick(db, at("2026-05-27 18:29"), custom) is None
    assert _tick(db, at("2026-05-27 18:30"), custom).week == "2026-W21"
    off = settings.model_copy(update={"digest_schedule": "off"})
    assert _tick(db, at("2026-06-01 08:00"), off) is None


def test_one_scheduled_record_per_week_even_when_workers_race(db):
    with db.transaction() as s:
        s.add(Digest(week="2026-W20", source="schedule", recipients=[], content_hash="0" * 64))
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(Digest(week="2026-W20", source="schedule", recipients=[], content_hash="1" * 64))
    with db.transaction() as s:  # on-demand sends are not limited by it
        s.add(Digest(week="2026-W20", source="api", recipients=[], content_hash="1" * 64))


@pytest.mark.parametrize("value, ok", [("MON 08:00", True), ("fri 17:45", True), ("7 23:59", True), ("off", True),
                                       ("MON 8", False), ("XYZ 08:00", False), ("MON 24:00", False), ("8 08:00", False)])
def test_schedule_setting_is_checked(value, ok):
    if ok:
        assert Settings(digest_schedule=value).digest_schedule == value
    else:
        with pytest.raises(ValidationError, match="digest_schedule"):
            Settings(digest_schedule=value)


# --- command line -----------------------------------------------------------------------------
def test_cli_render_and_send(capsys, tmp_path, db, settings):
    _seed(db)
    url = settings.database_url
    out = tmp_path / "w20.html"
    assert main(["digest", "render", "--week", "2026-W20", "--out", str(out), "--database-url", url]) == 0
    assert out.read_text(encoding="utf-8").count("data:image/png;base64,") == 5
    assert main(["digest", "render", "--week", "2026-W20", "--format", "json", "--database-url", url]) == 0
    assert json.loads(capsys.readouterr().out)["volume"]["this_week"] == 5
    assert main(["digest", "send", "--week", "2026-W20", "--database-url", url]) == 0
    assert "queued for " + PROTECTION_EMAIL in capsys.readouterr().out
    assert main(["digest", "send", "--week", "2026-W20", "--database-url", url]) == 0
    assert "sent already" in capsys.readouterr().out
    assert _count(db, OutboxMessage) == 1
    assert main(["digest", "render", "--week", "2026-W99", "--database-url", url]) == 2
    assert "--week" in capsys.readouterr().err
    assert main(["digest", "render", "--week", "2026-W20", "--format", "xlsx", "--database-url", url]) == 2


def test_reference_comes_from_the_served_model(holder):
    ref = digest_service.reference_of(holder)
    assert ref.version == holder.version and len(ref.histogram) == 10
    assert abs(sum(ref.histogram) - 1) < 1e-3
    assert digest_service.reference_of(object()) == Reference(None, None)


def test_week_end_is_exclusive(db, client, h):
    with db.transaction() as s:
        s.add(complaint("2026-05-18 00:00"))
        s.add(complaint("2026-05-17 23:59"))
    body = client.get("/v1/digests/weekly?week=2026-W20", headers=h["protection"]).json()
    assert body["volume"]["this_week"] == 1 and body["end"] == (at("2026-05-18 00:00")
                                                                .astimezone(UTC).isoformat().replace("+00:00", "Z"))
    assert timedelta(days=7) == datetime.fromisoformat(body["end"]) - datetime.fromisoformat(body["start"])
