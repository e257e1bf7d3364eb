"""Bad input of every kind gets a 4xx JSON error naming the field; only real bugs give a 500, and
their log masks personal data."""

from __future__ import annotations

import logging

import pytest

from service.alerting import Alerting

GOOD = {"external_id": "E-1", "text": "信用卡年费多扣", "channel": "手机银行", "branch": "营业部",
        "received_at": "2026-05-01T09:00:00"}


def test_body_over_the_limit_is_413(db, holder, settings, h):
    from fastapi.testclient import TestClient

    from service.app import create_app

    small = settings.model_copy(update={"max_body_bytes": 2000})
    with TestClient(create_app(small, database=db, model=holder)) as c:
        r = c.post("/v1/predict", json={"text": "信" * 1000}, headers=h["intake"])
        assert r.status_code == 413 and r.json()["error"] == {
            "code": "body_too_large", "message": "body: the request body exceeds 2000 bytes", "field": "body"}

        def stream():  # no Content-Length: the limit still holds
            for _ in range(10):
                yield b"x" * 500

        r = c.post("/v1/complaints", content=stream(), headers={**h["intake"], "Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.post("/v1/predict", json={"text": "信用卡"}, headers=h["intake"]).status_code == 200


def test_unknown_routes_and_methods_are_json(client, h):
    r = client.get("/v1/nothing-here", headers=h["admin"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.delete("/v1/complaints", headers=h["admin"])
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_a_bug_is_a_500_with_a_request_id_and_a_masked_log(client, h, monkeypatch, caplog):
    def hook(alerting, session, complaint, owed):
        raise RuntimeError(f"cannot route {complaint.external_id}, customer phone 13812345678")

    monkeypatch.setattr(Alerting, "alert_for", hook)
    with caplog.at_level(logging.ERROR, logger="xiaobao.service"):
        r = client.post("/v1/complaints", json=GOOD, headers=h["intake"])
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "internal_error" and error["request_id"] in error["message"]
    assert "13812345678" not in r.text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "RuntimeError" in logged and error["request_id"] in logged
    assert "13812345678" not in logged and "138****5678" in logged


# Every endpoint × kinds of bad input; none may give a 500.
BAD_REQUESTS = [
    ("POST", "/v1/predict", b"", "application/json"),
    ("POST", "/v1/predict", b"null", "application/json"),
    ("POST", "/v1/predict", b"[]", "application/json"),
    ("POST", "/v1/predict", b'"text"', "application/json"),
    ("POST", "/v1/predict", b"{'text': 'single quotes'}", "application/json"),
    ("POST", "/v1/predict", b'{"text": "\xff\xfe"}', "application/json"),
    ("POST", "/v1/predict", b'{"text": "ok"}', "text/plain"),
    ("POST", "/v1/predict", b'{"text": "ok", "amount": 1e999}', "application/json"),
    ("POST", "/v1/predict", b'{"text": "\\u0000\\u0001"}', "application/json"),
    ("POST", "/v1/predict", b'{"items": [null]}', "application/json"),
    ("POST", "/v1/predict", b'{"items": {"text": "ok"}}', "application/json"),
    ("POST", "/v1/predict", b'{"text": "ok", "explain": "yes"}', "application/json"),
    ("POST", "/v1/complaints", b"{}", "application/json"),
    ("POST", "/v1/complaints", b'{"external_id": 5}', "application/json"),
    ("POST", "/v1/complaints", b'{"external_id": "x", "text": "t", "channel": "\xe6", "branch": "b", '
                               b'"received_at": "2026-01-01"}', "application/json"),
    ("POST", "/v1/complaints", b'{"external_id": "x", "text": "t", "channel": "\\u624b\\u673a\\u94f6\\u884c", '
                               b'"branch": "b", "received_at": "2026-01-01T25:61:00"}', "application/json"),
    ("POST", "/v1/complaints", b'{"external_id": "x", "text": "t", "channel": "\\u624b\\u673a\\u94f6\\u884c", '
                               b'"branch": "b", "received_at": 1e300}', "application/json"),
    ("POST", "/v1/complaints", b'{"external_id": "x", "text": "t", "channel": "\\u624b\\u673a\\u94f6\\u884c", '
                               b'"branch": "b", "received_at": "2026-01-01", "repeat_count": 99999999999999999999}',
     "application/json"),
    ("POST", "/v1/complaints/batch", b'{"items": null}', "application/json"),
    ("POST", "/v1/complaints/batch", b'{"items": [{}]}', "application/json"),
    ("POST", "/v1/complaints/batch", b"[1, 2]", "application/json"),
    ("GET", "/v1/complaints?limit=abc", None, None),
    ("GET", "/v1/complaints?received_from=2026-99-99", None, None),
    ("GET", "/v1/complaints?received_from=2026-05-01T10:00:00%2B25:00", None, None),
    ("GET", "/v1/complaints?needs_review=2", None, None),
    ("GET", "/v1/complaints/1.5", None, None),
    ("GET", "/v1/complaints/99999999999999999999999", None, None),
    ("POST", "/v1/complaints/1/outcome", b"not json", "application/json"),
    ("POST", "/v1/complaints/1/outcome", b'{"escalated": null}', "application/json"),
    ("POST", "/v1/complaints/99999999999999999999999/outcome", b'{"escalated": true}', "application/json"),
]


@pytest.mark.parametrize("method, path, content, ctype", BAD_REQUESTS)
def test_no_bad_input_gives_a_500(client, h, method, path, content, ctype):
    headers = {**h["admin"], **({"Content-Type": ctype} if ctype else {})}
    r = client.request(method, path, content=content, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    error = r.json()["error"]
    assert error["code"] and error["message"]


def test_undecodable_or_non_json_bodies_say_so(client, h):
    r = client.post("/v1/predict", content=b'{"text": "\xff\xfe"}', headers={**h["intake"], "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "body" and "UTF-8" in r.json()["error"]["message"]
    r = client.post("/v1/predict", content=b'{"text": "ok"}', headers={**h["intake"], "Content-Type": "text/plain"})
    assert r.status_code == 422 and "application/json" in r.json()["error"]["message"]


def test_json_nested_too_deeply_says_so(client, h):
    deep = b'{"text": "ok", "items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = client.post("/v1/predict", content=deep, headers={**h["intake"], "Content-Type": "application/json"})
    assert r.status_code == 400, r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "invalid_json" and error["field"] == "body"
    assert "nested too deeply" in error["message"] and "UTF-8" not in error["message"]


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("path, body", [
    ("/v1/predict", b'{"text": "ok", "amount": %s}'),
    ("/v1/predict", b'{"items": [{"text": "ok", "amount": %s}]}'),
    ("/v1/complaints", b'{"external_id": "x", "text": "t", "channel": "\\u624b\\u673a\\u94f6\\u884c", "branch": "b", '
                       b'"received_at": "2026-01-01T09:00:00", "amount": %s}'),
])
def test_amounts_that_are_not_finite_numbers_say_so(client, h, number, path, body):
    r = client.post(path, content=body % number, headers={**h["admin"], "Content-Type": "application/json"})
    assert r.status_code == 422, r.text[:300]
    error = r.json()["error"]
    assert error["field"].endswith("amount") and "not a finite number" in error["message"], error
