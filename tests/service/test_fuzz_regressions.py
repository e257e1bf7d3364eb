"""Inputs the schema fuzzer (test_fuzz.py) turned into 500s or silently accepted, kept as plain
regression tests on both databases."""

from __future__ import annotations

import json

import pytest

from tests.service.conftest import complaint_body


@pytest.mark.parametrize("query", ["branch=a%00b", "customer_ref=%00", "channel=%00", "category=x%00"])
def test_a_nul_character_in_a_filter_is_a_422_naming_it(client, h, query):
    # PostgreSQL refuses NUL in text: it was a 500 there
    r = client.get(f"/v1/complaints?{query}", headers=h["admin"])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == query.split("=")[0]


@pytest.mark.parametrize("field", ["external_id", "customer_ref", "branch", "text", "product"])
def test_a_nul_character_in_a_stored_field_is_a_422_naming_it(client, h, corpus, field):
    body = complaint_body(corpus.iloc[0], external_id=f"nul-{field}", product="信用卡")
    body[field] = (body[field] or "x") + "\u0000z"
    r = client.post("/v1/complaints", json=body, headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == field, r.text
    assert "\u0000" not in r.text


def test_an_unpaired_surrogate_is_a_422_not_an_encoding_error(client, h, corpus):
    body = complaint_body(corpus.iloc[0], external_id="surrogate")
    fields = {k: body[k] for k in ("text", "channel", "received_at")}
    raw = json.dumps({**fields, "external_id": "a-SURROGATE", "branch": "b"}).replace("-SURROGATE", "\\ud800")
    r = client.post("/v1/complaints", content=raw.encode(), headers={**h["admin"], "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "external_id", r.text
    r = client.post("/v1/silences", json={"branch": "a\u0000", "ends_at": "2999-01-01T00:00:00"}, headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "branch"


@pytest.mark.parametrize("path", ["/v1/complaints", "/v1/letters", "/v1/outbox"])
def test_an_offset_past_64_bits_is_a_422(client, h, path):
    # it overflowed the databases' OFFSET: a 500 on both
    r = client.get(f"{path}?offset=9223372036854775808", headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "offset"
    assert client.get(f"{path}?offset=9223372036854775807", headers=h["admin"]).status_code == 200


@pytest.mark.parametrize("query", ["received_from=0001-01-01T00:00:00", "received_to=9999-12-31T23:59:59-10:00",
                                   "received_from=0001-01-01T00:00:00%2B14:00"])
def test_a_filter_time_that_cannot_shift_to_utc_is_a_422(client, h, query):
    r = client.get(f"/v1/complaints?{query}", headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == query.split("=")[0], r.text


def test_a_bare_number_is_not_taken_for_a_time(client, h):
    r = client.get("/v1/complaints?received_to=8.2e-261", headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "received_to"
    assert client.get("/v1/complaints?received_to=2026-05-01", headers=h["admin"]).status_code == 200


@pytest.mark.parametrize("closed_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-12:00",
                                       "2999-01-01T00:00:00"])
def test_an_impossible_closing_time_is_a_422(client, h, corpus, closed_at):
    r = client.post("/v1/complaints", json=complaint_body(corpus.iloc[0]), headers=h["intake"])
    cid = r.json()["id"]
    r = client.post(f"/v1/complaints/{cid}/outcome", json={"closed_at": closed_at}, headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "closed_at", r.text


@pytest.mark.parametrize("path", ["/v1/complaints?stauts=open", "/v1/letters?=0", "/v1/outbox?limit=1&x=null",
                                  "/v1/digests/weekly/send?force=false&zz=1"])
def test_an_unknown_query_parameter_is_refused_not_ignored(client, h, path):
    # `?stauts=open` used to answer every complaint, as if unfiltered
    method = client.post if "send" in path else client.get
    r = method(path, headers=h["admin"])
    assert r.status_code == 422, r.text
    assert "unknown query parameter" in r.json()["error"]["message"]


def test_the_schema_states_the_deployments_limits(client, settings):
    doc = client.get("/openapi.json").json()
    comp = doc["components"]["schemas"]
    channel = comp["ComplaintIn"]["properties"]["channel"]
    assert channel["enum"] == settings.channels
    assert comp["ComplaintBatchIn"]["properties"]["items"]["maxItems"] == settings.intake_batch_max
    assert "oneOf" in comp["PredictRequest"]
    for path, item in doc["paths"].items():
        if path.startswith("/v1"):
            for method, op in item.items():
                assert {"401", "403", "422", "429"} <= set(op["responses"]), (method, path)


def test_a_whole_number_written_as_a_float_is_an_integer_as_json_schema_says(client, h, corpus):
    body = complaint_body(corpus.iloc[0], external_id="float-count", repeat_count=3.0)
    assert client.post("/v1/complaints", json=body, headers=h["intake"]).status_code == 201
    for bad in (3.5, "3", True):
        body = complaint_body(corpus.iloc[1], external_id=f"bad-count-{bad}", repeat_count=bad)
        r = client.post("/v1/complaints", json=body, headers=h["intake"])
        assert r.status_code == 422 and r.json()["error"]["field"] == "repeat_count"


def test_a_query_parameter_given_twice_is_refused(client, h):
    # the last value used to win silently
    r = client.get("/v1/complaints?category=信用卡&category=外汇", headers=h["admin"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "category"
