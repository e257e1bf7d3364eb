"""POST /v1/predict: one text or a batch, the model's whole answer, nothing stored."""

from __future__ import annotations

from sqlalchemy import func, select

from service.tables import Complaint

TEXT = "客户来电反映其信用卡近三个月每天接到催收电话，对方还打给他单位领导，客户情绪激动，称再这样就去银保监投诉。"


def test_one_text_gets_every_head_with_explanations(client, h, holder):
    r = client.post("/v1/predict", json={"text": TEXT, "channel": "电话客服", "repeat_count": 2}, headers=h["intake"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == holder.version
    p = body["prediction"]
    assert p["category"]["label"] == "信用卡" and p["cause"]["label"] == "债务催收方式和手段"
    assert len(p["category"]["top_k"]) == 3 and p["category"]["phrases"]
    assert p["risk"]["level"] in ("高", "中", "低") and 0 <= p["risk"]["score"] <= 1 and p["risk"]["phrases"]
    assert isinstance(p["needs_review"], bool) and isinstance(p["review_reasons"], list)


def test_prediction_equals_the_bundle_and_is_scored_on_the_masked_text(client, h, holder):
    raw = TEXT + "客户手机13812345678，身份证110101199003071234。"
    r = client.post("/v1/predict", json={"text": raw, "channel": "电话客服"}, headers=h["admin"])
    direct = holder.get().predict([raw], [{"channel": "电话客服"}])[0]
    assert r.json()["prediction"] == direct
    phrases = " ".join(x["phrase"] for head in ("category", "cause", "risk") for x in r.json()["prediction"][head]["phrases"])
    assert "13812345678" not in r.text and "110101199003071234" not in phrases


def test_batch_answers_in_order_and_explain_can_be_switched_off(client, h):
    items = [{"text": TEXT, "channel": "电话客服"}, {"text": "请问定期存款提前支取利息怎么算？"},
             {"text": "I was charged a late fee although I paid on time.", "amount": 35.5}]
    r = client.post("/v1/predict", json={"items": items, "explain": False}, headers=h["intake"])
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3 and preds[0]["category"]["label"] == "信用卡"
    assert all(p["category"]["phrases"] == [] for p in preds)


def test_batch_of_the_limit_is_served(client, h, settings):
    items = [{"text": f"信用卡年费问题第{i}次咨询"} for i in range(settings.predict_batch_max)]
    r = client.post("/v1/predict", json={"items": items, "explain": False}, headers=h["intake"])
    assert r.status_code == 200 and len(r.json()["predictions"]) == settings.predict_batch_max


def test_predict_stores_nothing(client, h, db):
    client.post("/v1/predict", json={"text": TEXT}, headers=h["intake"])
    with db.reading() as s:
        assert s.scalar(select(func.count()).select_from(Complaint)) == 0


def test_predict_needs_a_key_with_the_right_scope(client, h):
    assert client.post("/v1/predict", json={"text": TEXT}).status_code == 401
    assert client.post("/v1/predict", json={"text": TEXT}, headers=h["protection"]).status_code == 403
    assert client.post("/v1/predict", json={"text": TEXT}, headers=h["department:信用卡中心"]).status_code == 403


def test_bad_predict_requests_name_the_field(client, h, settings):
    cases = [
        ({"text": "   "}, 422, "text"),
        ({"text": ""}, 422, "text"),
        ({"text": "x" * (settings.max_text_chars + 1)}, 422, "text"),
        ({"text": 123}, 422, "text"),
        ({"text": "ok", "channel": "柜台"}, 422, "channel"),
        ({"text": "ok", "repeat_count": "2"}, 422, "repeat_count"),
        ({"text": "ok", "repeat_count": -1}, 422, "repeat_count"),
        ({"text": "ok", "amount": "many"}, 422, "amount"),
        ({"text": "ok", "colour": "red"}, 422, "colour"),
        ({}, 422, "body"),
        ({"text": "ok", "items": [{"text": "ok"}]}, 422, "body"),
        ({"items": []}, 422, "items"),
        ({"items": [{"text": "ok"}, {"text": " "}]}, 422, "items[1].text"),
        ({"items": [{"text": "ok", "channel": "柜台"}]}, 422, "items[0].channel"),
        ({"items": [{"text": "ok"}] * (settings.predict_batch_max + 1)}, 422, "items"),
        ({"items": "ok"}, 422, "items"),
        (["ok"], 422, "body"),
    ]
    for body, status, field in cases:
        r = client.post("/v1/predict", json=body, headers=h["intake"])
        assert r.status_code == status, (body if len(str(body)) < 200 else field, r.text[:300])
        assert r.json()["error"]["field"] == field, r.text[:300]


def test_invalid_json_is_a_400_naming_the_body(client, h):
    r = client.post("/v1/predict", content=b'{"text": "oops', headers={**h["intake"], "Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"] == {**r.json()["error"], "code": "invalid_json", "field": "body"}


def test_validation_errors_do_not_echo_the_text(client, h):
    secret = "客户手机13812345678"
    r = client.post("/v1/predict", json={"text": secret, "repeat_count": "x"}, headers=h["intake"])
    assert r.status_code == 422 and secret not in r.text and "13812345678" not in r.text
