"""/healthz, /readyz and /metrics."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import text

from models.registry import Registry
from service.app import create_app
from service.db import Database, head_revision
from service.model_holder import ModelHolder


def test_healthz_needs_nothing(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])


def test_ready_with_model_and_database(client, holder):
    r = client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model_version": holder.version, "database": "ok",
                        "schema_revision": head_revision()}


def test_not_ready_without_a_model(db, settings, tmp_path, h):
    empty = ModelHolder(Registry(tmp_path / "empty-registry"))
    with TestClient(create_app(settings, database=db, model=empty), raise_server_exceptions=False) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["model_version"] is None and "no current model" in r.json()["reasons"][0]
        assert c.get("/healthz").status_code == 200
        r = c.post("/v1/predict", json={"text": "信用卡年费"}, headers=h["intake"])
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable"
        assert r.headers["retry-after"] == "30"


def test_not_ready_without_a_database(holder, settings):
    down = Database("postgresql://postgres@127.0.0.1:1/none")
    app = create_app(settings.model_copy(update={"migrate_on_start": False}), database=down, model=holder)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/readyz")
        assert r.status_code == 503
        assert r.json()["database"] == "unreachable" and "unreachable" in r.json()["reasons"][0]
    down.dispose()


def test_not_ready_on_an_old_schema(db, holder, settings):
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'old'"))
    try:
        app = create_app(settings.model_copy(update={"migrate_on_start": False}), database=db, model=holder)
        with TestClient(app) as c:
            r = c.get("/readyz")
            assert r.status_code == 503 and "xiaobao db upgrade" in r.json()["reasons"][0]
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()})


def test_startup_migrates_an_empty_database(tmp_path, holder, settings):
    fresh = Database(f"sqlite:///{tmp_path}/fresh.db")
    assert fresh.revision() is None
    with TestClient(create_app(settings, database=fresh, model=holder)) as c:
        assert c.get("/readyz").status_code == 200
    assert fresh.revision() == head_revision()
    fresh.dispose()


def _samples(text_: str, name: str) -> dict[str, float]:
    out = {}
    for line in text_.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_count_requests_predictions_and_the_model(client, h, holder):
    client.post("/v1/predict", json={"items": [{"text": "信用卡被盗刷，要求退款"}, {"text": "存款利息怎么算"}]},
                headers=h["intake"])
    client.post("/v1/complaints", json={"external_id": "M1", "text": "信用卡年费多扣", "channel": "手机银行",
                                        "branch": "营业部", "received_at": "2026-05-01T09:00:00"}, headers=h["intake"])
    client.post("/v1/complaints", json={"external_id": "M1", "text": "信用卡年费多扣", "channel": "手机银行",
                                        "branch": "营业部", "received_at": "2026-05-01T09:00:00"}, headers=h["intake"])
    client.get("/v1/complaints/12345", headers=h["admin"])
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    body = r.text
    predictions = _samples(body, "xiaobao_predictions_total")
    assert sum(v for k, v in predictions.items() if 'source="predict"' in k) == 2
    assert sum(v for k, v in predictions.items() if 'source="intake"' in k) == 1
    assert all(re.search(r'risk_level="(高|中|低)"', k) and 'category="' in k for k in predictions)
    assert _samples(body, "xiaobao_complaints_received_total") == {
        'xiaobao_complaints_received_total{result="created"}': 1.0,
        'xiaobao_complaints_received_total{result="existing"}': 1.0}
    assert _samples(body, "xiaobao_model_info") == {f'xiaobao_model_info{{version="{holder.version}"}}': 1.0}
    latency = _samples(body, "xiaobao_http_request_duration_seconds_count")
    # by route template, so ids do not become series of their own
    assert latency['xiaobao_http_request_duration_seconds_count{method="GET",route="/v1/complaints/{complaint_id}",status="404"}'] == 1
    assert latency['xiaobao_http_request_duration_seconds_count{method="POST",route="/v1/complaints",status="201"}'] == 1
    assert latency['xiaobao_http_request_duration_seconds_count{method="POST",route="/v1/complaints",status="200"}'] == 1


def test_metrics_watch_the_alert_rate_and_past_alerts(client, h, holder):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    texts = ["请问信用卡积分怎么兑换礼品", "第三次打电话了，盗刷的钱一个月没人答复，我会向金融监管部门投诉并找媒体曝光",
             "存款利息怎么算", "理财亏了一半，当初经理说保本，再不处理我就起诉"]
    ids = []
    for i, t in enumerate(texts):
        r = client.post("/v1/complaints", json={"external_id": f"W{i}", "text": t, "channel": "电话客服",
                                                "branch": "营业部", "received_at": (now - timedelta(hours=i + 1)).isoformat()},
                        headers=h["intake"])
        assert r.status_code == 201
        ids.append(r.json())
    calm = next(c for c in ids if c["alert"] is None)
    client.post(f"/v1/complaints/{calm['id']}/outcome", json={"escalated": True}, headers=h["admin"])
    body = client.get("/metrics").text
    levels = [c["prediction"]["risk"]["level"] for c in ids]
    rate = _samples(body, "xiaobao_risk_level_rate")
    assert rate['xiaobao_risk_level_rate{level="高"}'] == levels.count("高") / 4
    assert rate['xiaobao_risk_level_rate{level="中"}'] == (levels.count("高") + levels.count("中")) / 4
    expected = holder.get().meta["expected_alert_rates"]
    assert _samples(body, "xiaobao_risk_level_expected_rate") == {
        f'xiaobao_risk_level_expected_rate{{level="{k}"}}': v for k, v in expected.items()}
    assert _samples(body, "xiaobao_escalation_outcomes") == {"xiaobao_escalation_outcomes": 1.0}
    assert _samples(body, "xiaobao_alerts_missed") == {"xiaobao_alerts_missed": 1.0}
    assert _samples(body, "xiaobao_alert_recall")['xiaobao_alert_recall{level="高"}'] == (
        1.0 if calm["prediction"]["risk"]["level"] == "高" else 0.0)
