"""Delivery through the outbox, proved against a real SMTP server (aiosmtpd on 127.0.0.1) and a
real HTTP receiver (http.server in a thread) that checks the HMAC signature and drops repeated
idempotency keys, as a receiver is asked to."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections import Counter
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.alerting_metrics import DeliveryCollector
from service.app import create_app
from service.outbox import Claimed, Delivery, EmailSender, enqueue_email, message_id, sign, verify
from service.routing import load_routing
from service.tables import LetterEvent, OutboxMessage
from tests.service.alerting_support import PII_TEXT, RAW_SECRETS, Desk, messages, routing_file, settings_for

SECRET = "test-secret-不外传"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Inbox:
    """An aiosmtpd handler: keeps every message; `fail` answers 451 (try again later)."""

    def __init__(self) -> None:
        self.received: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.fail = False

    async def handle_DATA(self, server, session, envelope):
        if self.fail:
            return "451 4.3.0 mailbox busy, try later"
        self.received.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                      policy=email.policy.default))
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    @property
    def processed(self) -> list[str]:
        """Message-IDs acted upon: a receiver drops one it has seen."""
        seen: list[str] = []
        for m in self.received:
            if m["Message-ID"] not in seen:
                seen.append(m["Message-ID"])
        return seen


class Smtp:
    def __init__(self, port: int) -> None:
        self.port, self.inbox, self.controller = port, Inbox(), None

    def start(self) -> Smtp:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp():
    server = Smtp(free_port()).start()
    yield server
    server.stop()


class Receiver:
    """A webhook receiver: verifies the signature, records every delivery, and acts on each
    idempotency key once. `status` is what it answers (e.g. 500 to play a broken receiver)."""

    def __init__(self) -> None:
        self.deliveries: list[dict] = []
        self.processed: list[str] = []
        self.bad_signatures = 0
        self.status = 200
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(SECRET, self.headers["X-Xiaobao-Timestamp"], body, self.headers["X-Xiaobao-Signature"])
                key = self.headers["X-Idempotency-Key"]
                with receiver.lock:
                    if not ok:
                        receiver.bad_signatures += 1
                    status = 401 if not ok else receiver.status
                    receiver.deliveries.append({"path": self.path, "key": key, "event": self.headers["X-Xiaobao-Event"],
                                                "body": json.loads(body), "raw": body, "status": status})
                    if status == 200 and key not in receiver.processed:
                        receiver.processed.append(key)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    monkeypatch.setenv("XB_TEST_SECRET", SECRET)
    r = Receiver()
    yield r
    r.close()


def desk_for(db, tmp_path, smtp_port: int, webhook_url: str | None = None, **changes) -> Desk:
    settings = settings_for(db, group_window_minutes=0, smtp_port=smtp_port, outbox_backoff_seconds=30,
                            routing_file=routing_file(tmp_path, webhook_url=webhook_url, protection_webhook=True)
                            if webhook_url else None, send_timeout_seconds=5, **changes)
    return Desk(db, settings)


# --- SMTP ----------------------------------------------------------------------------------------------
def test_letter_email_is_delivered_over_smtp(db, tmp_path, smtp):
    desk = desk_for(db, tmp_path, smtp.port)
    desk.intake(text=PII_TEXT)
    report = desk.worker.drain()
    assert (report.delivery.sent, report.delivery.failed, report.delivery.dead) == (1, 0, 0)
    [mail] = smtp.inbox.received
    [msg] = messages(db)
    assert msg.status == "sent" and msg.sent_at == desk.clock.now() and msg.attempts == 1
    assert mail["Message-ID"] == message_id(msg.idempotency_key, desk.settings.smtp_sender)
    assert mail["X-Idempotency-Key"] == msg.idempotency_key == "letter-2026-0001-issued-email"
    assert mail["To"] == "xykzx-fk@bank.example" and mail["From"] == "xiaobao@bank.example"
    assert "〔2026〕第0001号" in mail["Subject"] and "信用卡中心" in mail["Subject"]
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "投诉风险提示函" in text and "〔2026〕第0001号" in text and "<!DOCTYPE html>" in html
    assert "138****5678" in text
    raw = mail.as_string()
    for secret in RAW_SECRETS:
        assert secret not in raw and secret not in text and secret not in html
    with db.reading() as s:
        kinds = s.scalars(select(LetterEvent.kind).order_by(LetterEvent.id)).all()
    assert kinds == ["issued", "delivered"]


def test_mail_folder_instead_of_smtp_writes_one_file_per_message(db, tmp_path):
    """A trial without a mail server: letters land as .eml files; a resend replaces its own file."""
    import email

    folder = tmp_path / "mail"
    desk = desk_for(db, tmp_path, 1, mail_dir=folder)  # port 1: SMTP would fail if it were tried
    desk.intake(text=PII_TEXT)
    report = desk.worker.drain()
    assert (report.delivery.sent, report.delivery.failed) == (1, 0)
    [path] = folder.glob("*.eml")
    mail = email.message_from_bytes(path.read_bytes())
    assert mail["X-Idempotency-Key"] == "letter-2026-0001-issued-email"
    assert "〔2026〕第0001号" in str(email.header.make_header(email.header.decode_header(mail["Subject"])))
    [msg] = messages(db)
    EmailSender(desk.settings)(Claimed(msg.id, msg.idempotency_key, msg.kind, msg.receiver, msg.subject,
                                       msg.payload, msg.event, msg.letter_id, msg.attempts, "test"))
    assert list(folder.glob("*.eml")) == [path]


def test_reminders_copy_the_protection_department(db, tmp_path, smtp):
    desk = desk_for(db, tmp_path, smtp.port)
    desk.intake()
    desk.worker.drain()
    [letter_msg] = messages(db)
    desk.clock.advance(days=5)  # past the acknowledgement deadline
    report = desk.worker.drain()
    assert len(report.reminded) == 1 and report.delivery.sent == 1
    reminder = smtp.inbox.received[-1]
    assert reminder["Cc"] == "xiaobao-xbb@bank.example" and "催办" in reminder["Subject"]
    assert smtp.inbox.envelopes[-1][1] == ["xykzx-fk@bank.example", "xiaobao-xbb@bank.example"]
    assert reminder["Message-ID"] != smtp.inbox.received[0]["Message-ID"]


def test_retries_with_backoff_while_the_smtp_server_is_down(db, tmp_path):
    server = Smtp(free_port())  # not started: connections are refused
    desk = desk_for(db, tmp_path, server.port)
    desk.intake()
    assert desk.worker.drain().delivery.failed == 1
    [msg] = messages(db)
    assert msg.status == "failed" and msg.attempts == 1 and "SMTP 127.0.0.1" in msg.last_error
    assert timedelta(seconds=30) <= msg.next_attempt_at - desk.clock.now() <= timedelta(seconds=33)
    assert desk.worker.drain().delivery.claimed == 0  # not due yet
    desk.clock.advance(seconds=34)
    assert desk.worker.drain().delivery.failed == 1
    msg = messages(db)[0]
    assert msg.attempts == 2 and timedelta(seconds=60) <= msg.next_attempt_at - desk.clock.now() <= timedelta(seconds=66)
    server.start()
    try:
        server.inbox.fail = True  # up, but answering "try later"
        desk.clock.advance(seconds=70)
        assert desk.worker.drain().delivery.failed == 1
        assert "451" in messages(db)[0].last_error
        server.inbox.fail = False
        desk.clock.advance(seconds=135)  # third backoff: 120 s plus up to 10% jitter
        assert desk.worker.drain().delivery.sent == 1
    finally:
        server.stop()
    msg = messages(db)[0]
    assert msg.status == "sent" and msg.attempts == 4 and msg.last_error is None
    assert len(server.inbox.received) == 1


# --- webhooks ------------------------------------------------------------------------------------------
def test_webhook_is_signed_and_carries_an_idempotency_key(db, tmp_path, smtp, receiver):
    desk = desk_for(db, tmp_path, smtp.port, receiver.url)
    desk.intake(text=PII_TEXT)
    assert desk.worker.drain().delivery.sent == 2  # e-mail and webhook
    [hit] = receiver.deliveries
    assert receiver.bad_signatures == 0 and hit["status"] == 200
    assert hit["key"] == "letter-2026-0001-issued-webhook" and hit["event"] == "letter.issued"
    body = hit["body"]
    assert body["event"] == "letter.issued" and body["number"] == "〔2026〕第0001号"
    assert body["letter"]["items"][0]["summary"].startswith("客户张先生来电") and body["links"]["html"].endswith("format=html")
    for secret in RAW_SECRETS:
        assert secret not in hit["raw"].decode("utf-8")
    # the signature covers timestamp and body: change either and it no longer verifies
    ts = str(int(desk.clock.now().timestamp()))
    assert sign(SECRET, ts, hit["raw"]) == sign(SECRET, ts, hit["raw"])
    assert not verify(SECRET, str(int(ts) + 1), hit["raw"], sign(SECRET, ts, hit["raw"]))
    assert not verify(SECRET, ts, hit["raw"] + b" ", sign(SECRET, ts, hit["raw"]))


def test_a_webhook_that_keeps_failing_goes_dead_and_can_be_retried(db, tmp_path, smtp, receiver, holder, h):
    desk = desk_for(db, tmp_path, smtp.port, receiver.url, outbox_max_attempts=3)
    receiver.status = 500
    desk.intake()
    for _ in range(3):
        desk.worker.drain()
        desk.clock.advance(hours=1)
    hook = next(m for m in messages(db) if m.kind == "webhook")
    assert hook.status == "dead" and hook.attempts == 3 and "HTTP 500" in hook.last_error
    assert [d["status"] for d in receiver.deliveries] == [500, 500, 500]
    assert desk.worker.drain().delivery.claimed == 0  # dead stays dead
    with db.reading() as s:
        assert "undeliverable" in s.scalars(select(LetterEvent.kind)).all()
    gauges = {m.name: m for m in DeliveryCollector(db, desk.clock).collect()}
    assert gauges["xiaobao_outbox_dead"].samples[0].value == 1

    app = create_app(desk.settings, database=db, model=holder, clock=desk.clock)
    with TestClient(app, raise_server_exceptions=False) as c:
        dead = c.get("/v1/outbox?status=dead", headers=h["protection"]).json()
        assert dead["total"] == 1 and dead["items"][0]["id"] == hook.id and "HTTP 500" in dead["items"][0]["last_error"]
        assert c.get("/v1/outbox", headers=h["admin"]).json()["total"] == 2
        assert c.get("/v1/outbox?status=sent", headers=h["admin"]).json()["total"] == 1
        sent = next(m for m in messages(db) if m.status == "sent")
        assert c.post(f"/v1/outbox/{sent.id}/retry", headers=h["admin"]).status_code == 409
        assert c.post("/v1/outbox/999999/retry", headers=h["admin"]).status_code == 404
        assert c.get("/v1/outbox", headers=h["department:信用卡中心"]).status_code == 403
        assert c.get("/v1/outbox", headers=h["intake"]).status_code == 403
        assert c.get("/v1/outbox").status_code == 401
        assert c.get("/v1/outbox?status=lost", headers=h["admin"]).status_code == 422
        assert c.get("/v1/outbox?limit=9999", headers=h["admin"]).status_code == 422
        r = c.post(f"/v1/outbox/{hook.id}/retry", headers=h["protection"])
        assert r.status_code == 200 and r.json()["status"] == "pending" and r.json()["attempts"] == 0
    receiver.status = 200
    assert desk.worker.drain().delivery.sent == 1
    assert receiver.processed == [hook.idempotency_key]


def test_a_missing_webhook_secret_fails_the_message_clearly(db, tmp_path, smtp, receiver, monkeypatch):
    desk = desk_for(db, tmp_path, smtp.port, receiver.url)
    monkeypatch.delenv("XB_TEST_SECRET")
    desk.intake()
    desk.worker.drain()
    hook = next(m for m in messages(db) if m.kind == "webhook")
    assert hook.status == "failed" and "XB_TEST_SECRET is not set" in hook.last_error
    assert receiver.deliveries == []


# --- crashes and concurrent workers --------------------------------------------------------------------
def test_no_message_lost_or_acted_on_twice_after_a_worker_dies_mid_batch(db, tmp_path, smtp, receiver):
    desk = desk_for(db, tmp_path, smtp.port, receiver.url)
    for i in range(4):
        desk.intake(customer=f"C{i}")  # 4 letters: 4 e-mails and 4 webhooks
    crashed = Delivery(db, desk.settings, desk.clock)
    batch = crashed.claim()
    assert len(batch) == 8 and {m.status for m in messages(db)} == {"sending"}
    for message in batch[:5]:
        crashed.send(message)  # delivered, then the worker dies before recording it
    assert desk.worker.drain().delivery.claimed == 0  # the leases still hold: nobody else sends
    desk.clock.advance(seconds=desk.settings.outbox_lease_seconds + 1)
    report = desk.worker.drain()
    assert report.delivery.sent == 8
    assert all(crashed.settle(m, None) == "lost" for m in batch)  # the dead worker's late word is ignored
    assert {m.status for m in messages(db)} == {"sent"}
    keys = {m.idempotency_key for m in messages(db)}
    # some arrived twice (sent before the crash and again), but every receiver acted on each once
    assert len(receiver.deliveries) + len(smtp.inbox.received) == 8 + 5
    mailed = list(dict.fromkeys(m["X-Idempotency-Key"] for m in smtp.inbox.received))
    assert sorted(receiver.processed + mailed) == sorted(keys)
    assert len(smtp.inbox.processed) == 4 and len(receiver.processed) == 4
    twice = [k for k, n in Counter(m["Message-ID"] for m in smtp.inbox.received).items() if n == 2]
    assert twice, "a repeated e-mail keeps its Message-ID"


def test_concurrent_workers_never_send_the_same_message(db, tmp_path, smtp):
    desk = desk_for(db, tmp_path, smtp.port, outbox_batch_size=3)
    with db.transaction() as s:
        for i in range(24):
            enqueue_email(s, key=f"test-{i}", to=["x@bank.example"], subject=f"测试 {i}", text="正文",
                          now=desk.clock.now())
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        delivery = Delivery(db, desk.settings, desk.clock)
        try:
            barrier.wait()
            while delivery.run_once().claimed:
                pass
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    ids = [m["X-Idempotency-Key"] for m in smtp.inbox.received]
    assert sorted(ids) == sorted(f"test-{i}" for i in range(24))  # each once: no duplicates, none lost
    with db.reading() as s:
        assert set(s.scalars(select(OutboxMessage.status))) == {"sent"}


def test_the_worker_runs_in_the_background_of_serve(db, tmp_path, smtp, holder):
    settings = settings_for(db, group_window_minutes=0, smtp_port=smtp.port, run_worker=True, worker_poll_seconds=0.05)
    desk = Desk(db, settings)
    desk.intake()
    app = create_app(settings, database=db, model=holder, clock=desk.clock)
    with TestClient(app):
        for _ in range(100):
            if smtp.inbox.received:
                break
            threading.Event().wait(0.05)
    assert len(smtp.inbox.received) == 1 and app.state.worker is not None


def test_routing_contacts_are_what_the_messages_use(db, tmp_path, smtp, receiver):
    desk = desk_for(db, tmp_path, smtp.port, receiver.url)
    desk.intake(category="个人贷款", cause="合同条款")  # no webhook for retail lending
    assert [(m.kind, m.receiver) for m in messages(db)] == [("email", "grxd-fk@bank.example")]
    routing = load_routing(desk.settings)
    assert routing.contact("信用卡中心").webhook.url == receiver.url


def test_scheduled_jobs_run_each_round_in_their_own_transaction(db, tmp_path, smtp):
    desk = desk_for(db, tmp_path, smtp.port)
    seen = []

    def job(session, now):
        seen.append(now)
        enqueue_email(session, key=f"job-{len(seen)}", to=["x@bank.example"], subject="周报", text="正文", now=now)

    def broken(session, now):
        raise RuntimeError("a job that fails does not stop the others")

    desk.worker.jobs = [("broken", broken), ("job", job)]
    report = desk.worker.tick()
    assert seen == [desk.clock.now()] and report.delivery.sent == 1  # what a job queues goes out that round
    assert report.errors and "broken" in report.errors[0]
