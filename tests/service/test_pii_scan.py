"""After a run of `xiaobao demo` (a real CLI process) plus one request full of personal data, no raw
ID-card, mobile or bank-card number is found in the stored text (every column of every table),
the letters (JSON, HTML, text), the digest (JSON, HTML, text), the e-mails and webhook bodies the
worker delivered, or the logs. The patterns are this test's own, not models.text's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.app import create_app
from service.clock import SystemClock
from service.db import Database
from service.outbox import Delivery
from service.settings import Settings
from service.tables import Base
from service.worker import Worker
from tests.service.alerting_support import PII_TEXT
from tests.service.conftest import bearer
from tests.service.test_proof import SECRET, SECRET_ENV, Hook, Mailbox, routing_with

PATTERNS = {
    "id card": re.compile(r"(?<![0-9A-Za-z])[1-9]\d{16}[\dXx](?![0-9A-Za-z])"),
    "mobile": re.compile(r"(?<![0-9A-Za-z])(?:\+?86[ -]?)?1[3-9]\d{9}(?![0-9A-Za-z])"),
    "bank card": re.compile(r"(?<![0-9A-Za-z])(?:\d{16,19}|\d{4}(?: \d{4}){3,4})(?![0-9A-Za-z])"),
}


def findings(where: str, text: str) -> list[str]:
    return [f"{where}: {kind} {m.group(0)}" for kind, pattern in PATTERNS.items() for m in pattern.finditer(text)]


@pytest.mark.timeout(600)
def test_no_raw_personal_number_anywhere_after_the_demo(trained_registry, tmp_path, monkeypatch, caplog):
    registry, _ = trained_registry
    monkeypatch.setenv(SECRET_ENV, SECRET)
    mailbox, hook = Mailbox().start(), Hook(tmp_path, "all").start()
    url = f"sqlite:///{tmp_path}/demo.db"
    routing = routing_with(tmp_path, {}, others=hook.url)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("XIAOBAO_")},
           "XIAOBAO_DATABASE_URL": url, "XIAOBAO_REGISTRY": str(registry.root), "XIAOBAO_LOG_LEVEL": "DEBUG",
           "XIAOBAO_ROUTING_FILE": str(routing), "XIAOBAO_GROUP_WINDOW_MINUTES": "0", SECRET_ENV: SECRET}
    xiaobao = str(Path(sys.executable).parent / "xiaobao")
    demo = subprocess.run([xiaobao, "demo", "--weeks", "2"], env=env, capture_output=True, text=True, timeout=500,
                          cwd=Path(__file__).resolve().parents[2])
    assert demo.returncode == 0, demo.stderr[-2000:]
    logs = demo.stdout + demo.stderr
    settings = Settings(database_url=url, registry=registry.root, routing_file=routing, group_window_minutes=0,
                        smtp_port=mailbox.port, outbox_backoff_seconds=0.1, rate_limit_per_second=0)
    db = Database(url)
    raw_inputs = PII_TEXT
    try:
        app = create_app(settings, database=db)
        with TestClient(app, raise_server_exceptions=False) as client:
            from service.auth import create_key

            with db.transaction() as session:
                _, key = create_key(session, "scan", "admin")
            admin = bearer(key)
            r = client.post("/v1/complaints", headers=admin, json={
                "external_id": "pii-1", "text": PII_TEXT, "channel": "监管转办", "branch": "手机13812345678支行",
                "received_at": "2026-11-20T10:00:00+08:00", "customer_ref": "110101199003071234"})
            assert r.status_code == 201, r.text
            client.post(f"/v1/complaints/{r.json()['id']}/outcome", headers=admin,
                        json={"note": "已联系客户，卡号6222021234567890123，手机13812345678"})
            worker = Worker(db, settings, app.state.alerting, SystemClock(), delivery=Delivery(db, settings, SystemClock()))
            worker.drain()
            letters = client.get("/v1/letters?limit=500", headers=admin).json()["items"]
            assert letters, "the demo issues letters"
            rendered = []
            for letter in letters:
                for fmt in ("json", "html", "text"):
                    rendered.append(client.get(f"/v1/letters/{letter['id']}?format={fmt}", headers=admin).text)
            digests = [client.get(f"/v1/digests/weekly?week=2026-W47&format={fmt}", headers=admin).text
                       for fmt in ("json", "html", "text")]
            listing = client.get("/v1/complaints?limit=500", headers=admin).text
    finally:
        mailbox.stop()
        hook.stop()
    assert findings("input", raw_inputs), "the scan's patterns must see the raw numbers that went in"
    with db.reading() as session:
        stored = []
        for table in Base.metadata.sorted_tables:
            if table.name == "api_keys":
                continue  # hashes and prefixes of random keys, no text from requests
            for row in session.execute(select(table)):
                stored.append(f"{table.name}: " + " | ".join(str(v) for v in row))
    db.dispose()
    # decoded parts and headers (the raw MIME has 19-digit multipart boundaries, not card numbers)
    mails = [" ".join(f"{k}: {v}" for k, v in m.items() if k.lower() != "content-type") + " " +
             " ".join(part.get_content() for part in m.walk() if not part.is_multipart())
             for m in mailbox.messages]
    bodies = hook.bodies
    assert mails and bodies, "letters went out by mail and webhook"
    found = []
    for where, texts in (("database", stored), ("letters", rendered), ("digest", digests), ("list", [listing]),
                         ("e-mail", mails), ("webhook bodies", bodies), ("demo log", [logs]),
                         ("service log", [r.getMessage() for r in caplog.records])):
        for text in texts:
            found += findings(where, text)
    assert not found, "\n".join(found[:20])
