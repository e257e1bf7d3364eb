"""Security: the authorisation matrix generated from the app's route table, the body limit, per-key
rate limiting, secrets only from the environment or hashed in the key store, and the reference
webhook receiver (signature and replay)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select

from service import webhook_receiver
from service.app import create_app
from service.auth import create_key, hash_key
from service.clock import SystemClock
from service.outbox import Claimed, WebhookSender, sign
from service.ratelimit import RateLimiter
from service.tables import ApiKey
from tests.service.conftest import bearer

ROOT = Path(__file__).resolve().parents[2]
OWN, OTHER = "department:信用卡中心", "department:外汇"
CARD_TEXT = "客户反映信用卡年费被重复扣取两次，多次致电信用卡中心客服无人处理，要求退还年费并赔偿，称将向监管部门投诉。"

# Who may call what, written out here and not read from service.auth, so that a change of the code's
# permissions must be made twice to pass. "dept" means: department keys, for objects routed to them
# (another department's answers 404, so ids reveal nothing).
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("POST", "/v1/predict"): {"intake", "admin"},
    ("POST", "/v1/complaints"): {"intake", "admin"},
    ("POST", "/v1/complaints/batch"): {"intake", "admin"},
    ("GET", "/v1/complaints"): {"admin", "protection", "dept"},
    ("GET", "/v1/complaints/{complaint_id}"): {"admin", "protection", "dept"},
    ("POST", "/v1/complaints/{complaint_id}/outcome"): {"admin", "protection", "dept"},
    ("GET", "/v1/letters"): {"admin", "protection", "dept"},
    ("POST", "/v1/letters/flush"): {"admin", "protection"},
    ("GET", "/v1/letters/{letter_id}"): {"admin", "protection", "dept"},
    ("POST", "/v1/letters/{letter_id}/ack"): {"admin", "protection", "dept"},
    ("POST", "/v1/letters/{letter_id}/resolve"): {"admin", "protection", "dept"},
    ("POST", "/v1/letters/{letter_id}/extend"): {"admin", "protection", "dept"},
    ("POST", "/v1/silences"): {"admin", "protection"},
    ("GET", "/v1/silences"): {"admin", "protection"},
    ("GET", "/v1/silences/{silence_id}"): {"admin", "protection"},
    ("DELETE", "/v1/silences/{silence_id}"): {"admin", "protection"},
    ("GET", "/v1/outbox"): {"admin", "protection"},
    ("POST", "/v1/outbox/{message_id}/retry"): {"admin", "protection"},
    ("POST", "/v1/admin/model/reload"): {"admin"},
    ("GET", "/v1/digests/weekly"): {"admin", "protection"},
    ("POST", "/v1/digests/weekly/send"): {"admin", "protection"},
}
# Routes of another object (another department's id) where a department key gets 404.
SCOPED = {path for (_, path) in ALLOWED if "{complaint_id}" in path or "{letter_id}" in path}
PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
          ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc")}
CONSOLE_OPEN = {("GET", "/console/login"), ("POST", "/console/login"), ("GET", "/console"), ("GET", "/")}


def route_table(app) -> set[tuple[str, str]]:
    out = set()
    for rc in iter_route_contexts(app.routes):
        for method in getattr(rc, "methods", None) or ():
            if method != "HEAD":
                out.add((method, rc.path))
    return out


@pytest.fixture
def world(db, holder, settings, tmp_path):
    """An app with one complaint routed to 信用卡中心 and its letter issued at once, plus keys of
    every scope, a second department, an unknown and a revoked key."""
    app = create_app(settings.model_copy(update={"group_window_minutes": 0, "alert_channels": ["监管转办"]}),
                     database=db, model=holder)
    keys = {}
    with db.transaction() as session:
        for scope in ("intake", "admin", "protection", OWN, OTHER):
            _, keys[scope] = create_key(session, scope.replace(":", "-"), scope)
        row, keys["revoked"] = create_key(session, "revoked", "admin")
        row.revoked_at = datetime.now(UTC)
    keys["wrong"] = "xb_" + "A" * 43
    with TestClient(app, raise_server_exceptions=False) as client:
        body = {"external_id": "sec-1", "text": CARD_TEXT, "channel": "监管转办", "branch": "测试支行",
                "received_at": (datetime.now(UTC) - timedelta(hours=2)).isoformat(), "customer_ref": "C1"}
        r = client.post("/v1/complaints", json=body, headers=bearer(keys["admin"]))
        assert r.status_code == 201 and r.json()["alert"]["department"] == "信用卡中心", r.text
        assert r.json()["alert"]["letter"] is not None
        yield app, client, keys


def _request(client: TestClient, method: str, path: str, key: str | None, n: int) -> httpx.Response:
    ids = {"complaint_id": "1", "letter_id": "1", "silence_id": "1", "message_id": "1"}
    url = re.sub(r"\{(\w+)\}", lambda m: ids[m.group(1)], path)
    now = datetime.now(UTC)
    bodies = {
        "/v1/predict": {"text": CARD_TEXT},
        "/v1/complaints": {"external_id": f"m-{n}", "text": CARD_TEXT, "channel": "电话客服", "branch": "b",
                           "received_at": now.isoformat()},
        "/v1/complaints/batch": {"items": [{"external_id": f"mb-{n}", "text": CARD_TEXT, "channel": "电话客服",
                                           "branch": "b", "received_at": now.isoformat()}]},
        "/v1/complaints/{complaint_id}/outcome": {"note": "核实中"},
        "/v1/letters/{letter_id}/ack": {"note": "已签收"},
        "/v1/letters/{letter_id}/resolve": {"note": "已退还年费"},
        "/v1/letters/{letter_id}/extend": {"days": 30, "reason": "情况复杂"},
        "/v1/silences": {"branch": "某支行", "ends_at": (now + timedelta(days=1)).isoformat()},
    }
    headers = bearer(key) if key else {}
    kwargs = {"json": bodies[path]} if path in bodies else {}
    return client.request(method, url, headers=headers, **kwargs)


def test_every_route_is_in_the_matrix(world):
    app, _, _ = world
    routes = route_table(app)
    api = {r for r in routes if r[1].startswith("/v1")}
    assert api == set(ALLOWED), f"routes without an expected answer: {api ^ set(ALLOWED)}"
    other = routes - api - PUBLIC
    assert all(path.startswith("/console") or path == "/" for _, path in other), other


def test_authorisation_matrix(world):
    app, client, keys = world
    principals = ["none", "wrong", "revoked", "intake", "protection", OWN, OTHER, "admin"]  # admin last: it resolves
    seen = []
    # Letter-changing routes last and resolve at the very end, so earlier ones still find it open.
    order = sorted(ALLOWED, key=lambda r: ("/resolve" in r[1], "/letters/{letter_id}/" in r[1], r[1], r[0]))
    n = 0
    for method, path in order:
        for who in principals:
            n += 1
            r = _request(client, method, path, None if who == "none" else keys[who], n)
            allowed = ALLOWED[(method, path)]
            scope = "dept" if who in (OWN, OTHER) else who
            if who in ("none", "wrong", "revoked"):
                expected = {401}
            elif scope not in allowed:
                expected = {403}
            elif who == OTHER and path in SCOPED:
                expected = {404}
            else:  # allowed: a success, or 409 where the letter or message is past that step
                expected = {200, 201, 409} if method == "POST" and path != "/v1/predict" else {200, 201}
            assert r.status_code in expected, f"{who} {method} {path}: {r.status_code} {r.text[:300]}"
            if r.status_code == 401:
                assert r.headers.get("www-authenticate") == "Bearer"
            seen.append((who, method, path, r.status_code))
    assert len(seen) == len(ALLOWED) * len(principals)
    # a department lists only its own: the other department sees neither the complaint nor the letter
    other = bearer(keys[OTHER])
    assert client.get("/v1/complaints", headers=other).json()["total"] == 0
    assert client.get("/v1/letters", headers=other).json()["total"] == 0
    assert client.get("/v1/letters", headers=bearer(keys[OWN])).json()["total"] >= 1


def test_public_routes_answer_without_a_key_and_show_no_request_data(world):
    _, client, _ = world
    for method, path in PUBLIC:
        r = client.request(method, path)
        assert r.status_code in (200, 503), (path, r.status_code)
        assert CARD_TEXT[:10] not in r.text and "sec-1" not in r.text


def test_an_api_key_does_not_open_the_console(world):
    app, client, keys = world
    for method, path in route_table(app):
        if not path.startswith("/console") or (method, path) in CONSOLE_OPEN:
            continue
        url = re.sub(r"\{\w+\}", "1", path)
        r = client.request(method, url, headers=bearer(keys["admin"]), follow_redirects=False)
        assert r.status_code in (302, 303, 307, 401, 403, 404, 405), f"{method} {path}: {r.status_code}"


def test_a_body_over_the_limit_is_a_413_announced_or_streamed(db, holder, settings, keys):
    app = create_app(settings.model_copy(update={"max_body_bytes": 4096}), database=db, model=holder)
    with TestClient(app, raise_server_exceptions=False) as client:
        big = {"text": "信用卡" * 3000}
        r = client.post("/v1/predict", json=big, headers=bearer(keys["intake"]))
        assert r.status_code == 413 and r.json()["error"]["field"] == "body"

        def chunks():
            for _ in range(10):
                yield b'{"text": "' + "年费".encode() * 300

        r = client.post("/v1/predict", content=chunks(), headers={**bearer(keys["intake"]),
                                                                   "Content-Type": "application/json"})
        assert r.status_code == 413
        assert client.post("/v1/predict", json={"text": "信用卡年费"}, headers=bearer(keys["intake"])).status_code == 200


def test_the_token_bucket_refills_at_its_rate():
    now = [100.0]
    limiter = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    assert [limiter.acquire(1) for _ in range(3)] == [None, None, None]
    wait = limiter.acquire(1)
    assert wait == pytest.approx(0.5)
    assert limiter.acquire(2) is None  # another key has its own bucket
    now[0] += 0.5
    assert limiter.acquire(1) is None and limiter.acquire(1) is not None
    now[0] += 100
    assert [limiter.acquire(1) for _ in range(4)][:3] == [None, None, None]  # refills to the burst, no more
    assert RateLimiter(rate=0, burst=1).acquire(1) is None  # 0 turns it off


def test_a_key_over_its_rate_gets_429_with_retry_after(db, holder, settings, keys):
    app = create_app(settings.model_copy(update={"rate_limit_per_second": 1, "rate_limit_burst": 5}),
                     database=db, model=holder)
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = [client.get("/v1/complaints", headers=bearer(keys["admin"])) for _ in range(8)]
        codes = [r.status_code for r in answers]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
        limited = next(r for r in answers if r.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1 and limited.json()["error"]["code"] == "rate_limited"
        assert client.get("/v1/complaints", headers=bearer(keys["protection"])).status_code == 200  # own bucket
        assert client.get("/healthz").status_code == 200  # no key, no bucket
        time.sleep(1.05)
        assert client.get("/v1/complaints", headers=bearer(keys["admin"])).status_code == 200


# --- secrets -----------------------------------------------------------------------------------------
SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "API key of this service": re.compile(r"\bxb_[A-Za-z0-9_-]{43}\b"),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "password or secret with a value": re.compile(
        r"(?i)\b(password|passwd|secret|token)\b[\"']?\s*[:=]\s*[\"'][^\"'\s]{6,}[\"']"),
    "URL with a password": re.compile(r"\b[a-z+]+://[^/\s:@]+:[^/\s@]{3,}@"),
}
# Test fixtures sign with made-up secrets on purpose; none of them is a credential of anything.
FIXTURE_FILES = re.compile(r"^tests/")


def test_no_secret_is_committed():
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if FIXTURE_FILES.match(name) or not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for what, pattern in SECRET_PATTERNS.items():
            for m in pattern.finditer(text):
                found.append(f"{name}: {what}: {m.group(0)[:60]}")
    assert not found, "\n".join(found)
    assert "var/" in (ROOT / ".gitignore").read_text(), "var/ (the demo key, the database) must stay untracked"


def test_settings_take_secrets_from_the_environment_only(monkeypatch):
    from service.settings import Settings

    assert Settings().smtp_password is None  # no default secret
    monkeypatch.setenv("XIAOBAO_SMTP_PASSWORD", "from-the-environment")
    assert Settings().smtp_password == "from-the-environment"
    routing = (ROOT / "service/resources/routing.yaml").read_text(encoding="utf-8")
    assert re.search(r"(?m)^\s*secret\s*:", routing) is None, "webhook secrets are named by secret_env, never written"


def test_keys_are_stored_hashed_only(db):
    with db.transaction() as session:
        _, plaintext = create_key(session, "hash-check", "admin")
    with db.reading() as session:
        row = session.scalar(select(ApiKey).where(ApiKey.name == "hash-check"))
        assert row.key_hash == hashlib.sha256(plaintext.encode()).hexdigest() == hash_key(plaintext)
        stored = " ".join(str(getattr(row, c.key)) for c in ApiKey.__table__.columns)
    assert plaintext not in stored and plaintext[10:] not in stored  # only a 10-character prefix is visible
    assert row.prefix == plaintext[:10]


# --- the reference webhook receiver ------------------------------------------------------------------
def test_the_reference_receiver_verifies_and_refuses_replays(tmp_path, monkeypatch):
    secret = "s3cret-for-this-test"
    monkeypatch.setenv("XB_SEC_TEST", secret)
    got = []
    server = webhook_receiver.serve(secret, seen=webhook_receiver.SeenKeys(tmp_path / "seen.db"),
                                    on_message=lambda key, event, body: got.append((key, body)),
                                    log_path=tmp_path / "log.jsonl", tolerance=300)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        from service.settings import Settings

        sender = WebhookSender(Settings(), SystemClock())
        message = Claimed(1, "letter:1:issued", "webhook", url, "issued",
                          {"body": '{"letter":"〔2026〕第0001号"}', "secret_env": "XB_SEC_TEST"}, "issued", 1, 1, "w")
        sender(message)
        sender(message)  # at-least-once: the copy is answered 200 and not acted on
        assert got == [("letter:1:issued", {"letter": "〔2026〕第0001号"})]
        body = b'{"letter":"x"}'
        old = str(int(time.time()) - 301)
        replay = {"X-Xiaobao-Timestamp": old, "X-Xiaobao-Signature": sign(secret, old, body),
                  "X-Idempotency-Key": "k-replay", "Content-Type": "application/json"}
        assert httpx.post(url, content=body, headers=replay).status_code == 401  # right signature, too old
        now = str(int(time.time()))
        forged = {**replay, "X-Xiaobao-Timestamp": now, "X-Xiaobao-Signature": sign("wrong", now, body)}
        assert httpx.post(url, content=body, headers=forged).status_code == 401
        tampered = {**replay, "X-Xiaobao-Timestamp": now, "X-Xiaobao-Signature": sign(secret, now, body)}
        assert httpx.post(url, content=b'{"letter":"y"}', headers=tampered).status_code == 401
        assert httpx.post(url, content=body, headers=tampered).status_code == 200
        assert len(got) == 2
    finally:
        server.shutdown()
    with pytest.raises(webhook_receiver.Rejected, match="replay"):
        ts = "1000"
        webhook_receiver.verify(secret, {"x-xiaobao-timestamp": ts, "x-xiaobao-signature": sign(secret, ts, b"{}")},
                                b"{}", now=1000 + 301)
    webhook_receiver.verify(secret, {"X-Xiaobao-Timestamp": "1000", "X-Xiaobao-Signature": sign(secret, "1000", b"{}")},
                            b"{}", now=1000 + 299)
