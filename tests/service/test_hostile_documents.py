"""Hostile text (tests/service/hostile.py) in every field, on SQLite and PostgreSQL: the letter as
HTML, as text and as e-mail, the notices and the weekly digest in HTML and text show it as text,
never as markup; the HTML and text answers carry nosniff and a CSP; intake strips bidirectional
controls. The console pages are checked in the browser (tests/service/web/test_console_hostile.py)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

import pytest

from service.clock import SystemClock
from service.outbox import Delivery
from service.settings import Settings
from tests.service.hostile import (
    BIDI,
    PAYLOADS,
    department,
    external_id,
    fields_of,
    letter_values,
    plant,
    scan,
    stored,
    this_week,
    write_routing,
)


@pytest.fixture
def settings(db, trained_registry, tmp_path):
    registry, _ = trained_registry
    return Settings(database_url=db.engine.url.render_as_string(hide_password=False), registry=registry.root,
                    group_window_minutes=0, routing_file=write_routing(tmp_path / "routing.yaml"),
                    mail_dir=tmp_path / "mail")


@pytest.fixture
def planted(client, h, corpus):
    return plant(client, h["admin"], h["intake"], corpus)


def assert_safe_headers(response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    csp = response.headers["content-security-policy"]
    assert "script-src" in csp or "default-src 'none'" in csp


def test_intake_strips_bidi_controls_and_keeps_the_rest(client, h, planted):
    k = PAYLOADS.index(next(p for p in PAYLOADS if BIDI[4] in p))
    record = client.get(f"/v1/complaints/{planted.complaints[k]}", headers=h["admin"]).json()
    f = fields_of(k)
    assert record["branch"] == stored(f["branch"]) and record["customer_ref"] == stored(f["customer_ref"])
    assert record["product"] == stored(f["product"]) and record["text"].startswith(stored(f["text_head"]))
    letter = client.get(f"/v1/letters/{planted.letters[k]}", headers=h["admin"]).json()
    assert letter["ack_note"] == stored(f["ack_note"])
    silences = client.get("/v1/silences", headers=h["admin"]).json()["items"]
    assert stored(f["silence_comment"]) in [s["comment"] for s in silences]
    for value in (record["branch"], record["text"], letter["ack_note"], *(e["note"] or "" for e in letter["events"])):
        assert not set(value) & set(BIDI)
    # The id is kept as sent, so one with a bidirectional control is refused rather than changed.
    body = {"external_id": f"X{BIDI[4]}1", "text": "信用卡年费问题", "channel": "电话客服", "branch": "营业部",
            "received_at": datetime.now(UTC).isoformat()}
    refused = client.post("/v1/complaints", json=body, headers=h["intake"])
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "external_id"


def test_letters_in_html_and_text_show_hostile_fields_as_text(client, h, planted):
    for k, letter in planted.letters.items():
        html = client.get(f"/v1/letters/{letter}?format=html", headers=h["admin"])
        assert html.headers["content-type"].startswith("text/html")
        assert_safe_headers(html)
        found, text = scan(html.text)
        assert found == [], (k, found)
        expected = letter_values(k, k in planted.resolved)
        assert [v for v in expected if v not in text] == [], k
        plain = client.get(f"/v1/letters/{letter}?format=text", headers=h["admin"])
        assert plain.headers["content-type"].startswith("text/plain")
        assert_safe_headers(plain)
        assert [v for v in expected if v not in plain.text] == [], k  # literally: not &lt;, not stripped


def test_letter_emails_and_notices_show_hostile_fields_as_text(client, h, planted, db, settings):
    assert client.post(f"/v1/digests/weekly/send?week={planted.week}", headers=h["admin"]).status_code == 201
    while Delivery(db, settings, SystemClock()).run_once().claimed:
        pass
    mails = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
             for p in sorted(settings.mail_dir.glob("*.eml"))]
    by_key = {m["X-Idempotency-Key"]: m for m in mails}
    assert len(mails) == 2 * len(PAYLOADS) + len(planted.resolved) + 1  # issued, repeat, resolved, the digest
    for mail in mails:
        html = mail.get_body(("html",))
        if html is not None:
            assert scan(html.get_content())[0] == [], mail["Subject"]
    for k in planted.letters:
        f = fields_of(k)
        [issued] = [m for key, m in by_key.items() if key.endswith("-issued-email") and m["To"] == f"h{k}@bank.example"]
        assert department(k) in str(issued["Subject"])
        _, html_text = scan(issued.get_body(("html",)).get_content())
        plain = issued.get_body(("plain",)).get_content()
        for value in (department(k), stored(f["branch"]), external_id(k), stored(f["text_head"])):
            assert value in html_text and value in plain, (k, value)
    notices = "\n".join(m.get_body(("plain",)).get_content() for key, m in by_key.items()
                        if "-repeat-" in key or "-resolved-" in key)
    for k in planted.letters:
        assert external_id(k, repeat=True) in notices
        if k in planted.resolved:
            assert stored(fields_of(k)["resolve_note"]) in notices


def test_the_digest_in_html_and_text_shows_hostile_fields_as_text(client, h, planted):
    # A calm request (no alert) that escalated after all: the digest lists it as 漏报, hostile fields and all.
    k = next(iter(planted.complaints))
    f, when = fields_of(k), client.get(f"/v1/complaints/{planted.complaints[k]}", headers=h["admin"]).json()
    calm = client.post("/v1/complaints", headers=h["intake"], json={
        "external_id": external_id(k) + "-calm", "text": f["text_head"] + "请问信用卡积分怎么兑换礼品", "channel": "手机银行",
        "branch": f["branch"], "received_at": when["received_at"]})
    assert calm.status_code == 201 and calm.json()["alert"] is None, calm.text[:300]
    assert client.post(f"/v1/complaints/{calm.json()['id']}/outcome", json={"escalated": True},
                       headers=h["admin"]).status_code in (200, 201)
    current = client.get("/v1/digests/weekly", params={"week": this_week(), "format": "json"},
                         headers=h["admin"]).json()
    received = client.get("/v1/digests/weekly", params={"week": planted.week, "format": "json"},
                          headers=h["admin"]).json()
    high = [r["external_id"] for r in received["high_risk"]["items"]]
    assert set(high) & {external_id(k) for k in planted.complaints}, "no hostile request ranked high risk"
    # Every planted request escalated: those without an alert are listed as 漏报 with their id and excerpt.
    missed = [v for r in received["alert_watch"]["missed"] for v in (r["external_id"], r["branch"])]
    assert missed, "no hostile request listed as 漏报"
    for week, expected in ((planted.week, [stored(fields_of(k)["branch"]) for k in planted.complaints] + high
                            + missed),
                           (this_week(), [r["department"] for r in current["letters"]["by_department"]])):
        assert expected
        html = client.get("/v1/digests/weekly", params={"week": week, "format": "html"}, headers=h["admin"])
        assert_safe_headers(html)
        found, text = scan(html.text)
        assert found == [], (week, found)
        assert [v for v in expected if v not in text] == [], week
        plain = client.get("/v1/digests/weekly", params={"week": week, "format": "text"}, headers=h["admin"])
        assert_safe_headers(plain)
        if week == planted.week:  # the text clips branch names to its columns; ids are whole
            assert [v for v in high if v not in plain.text] == []
    assert {department(k) for k in planted.letters} <= {r["department"] for r in current["letters"]["by_department"]}
