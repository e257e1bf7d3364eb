"""Proofs against real processes on loopback: load on uvicorn with several workers and PostgreSQL,
kill -9 during intake, SMTP and webhook outages with a receiver that never recovers, and 4 uvicorn
workers with 2 outbox workers on one PostgreSQL database.

`make test` runs them small; `make proof` sets XIAOBAO_PROOF=full (100 clients for 60 s, longer
streams) and they write their figures to bench/results/proof-*.json."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql

import bench.loadgen
from bench.common import write_result
from bench.harness import Server, free_port, make_key, pg_database, running, service_env, worker_process
from bench.loadgen import Workload, run_sync
from service import webhook_receiver
from service.alerting import Alerting
from service.app import create_app
from service.clock import SystemClock
from service.db import Database
from service.outbox import Delivery
from service.routing import default_path, load_routing
from service.settings import Settings
from service.tables import Alert, Complaint, Letter, LetterItem, OutboxMessage
from service.worker import Worker

FULL = os.environ.get("XIAOBAO_PROOF") == "full"
SECRET_ENV, SECRET = "XB_PROOF_SECRET", "proof-secret-不外传"
pytestmark = pytest.mark.timeout(900)


# --- receivers ---------------------------------------------------------------------------------------
class Mailbox:
    """aiosmtpd on a fixed port; stop() and start() play an outage."""

    def __init__(self) -> None:
        self.port, self.messages, self.controller = free_port(), [], None
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's naming)
        mail = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(mail)
        return "250 OK"

    def start(self) -> Mailbox:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def keys(self) -> list[str]:
        with self.lock:
            return [m["X-Idempotency-Key"] for m in self.messages]


class Hook:
    """The reference receiver (service.webhook_receiver) on a fixed port, with its seen-keys file, so
    a restart remembers what it acted on."""

    def __init__(self, folder: Path, name: str, fail_status: int | None = None) -> None:
        self.port, self.folder, self.name, self.fail_status = free_port(), folder, name, fail_status
        self.seen = webhook_receiver.SeenKeys(folder / f"{name}-seen.db")
        self.log = folder / f"{name}.jsonl"
        self.acted: list[str] = []
        self.bodies: list[str] = []  # what was acted on, as JSON text
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.name}"

    def start(self) -> Hook:
        self.server = webhook_receiver.serve(SECRET, port=self.port, seen=self.seen, log_path=self.log,
                                             fail_status=self.fail_status,
                                             on_message=self._act)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _act(self, key: str, event: str, body: dict) -> None:
        self.acted.append(key)
        self.bodies.append(json.dumps(body, ensure_ascii=False))

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def deliveries(self) -> list[dict]:
        if not self.log.is_file():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines()]


CARD_TEXT = "客户反映信用卡年费被重复扣取两次，多次致电信用卡中心客服无人处理，要求退还年费并赔偿，称将向监管部门投诉。"


def text_of(rows: list[dict], i: int) -> str:
    """Every third request is about a credit card, so the card centre (which has a webhook) gets letters."""
    return CARD_TEXT + f"（第{i}次来电）" if i % 3 == 0 else rows[(i * 7) % len(rows)]["text"]


def routing_with(tmp_path: Path, hooks: dict[str, str], others: str | None = None) -> Path:
    """The shipped routing, with webhooks for the named departments (and `others` for the rest)."""
    raw = yaml.safe_load(default_path().read_text(encoding="utf-8"))
    if others:
        hooks = {**dict.fromkeys(raw["departments"], others), **hooks}
    for department, url in hooks.items():
        raw["departments"][department]["webhook"] = {"url": url, "secret_env": SECRET_ENV}
    path = tmp_path / "routing.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def outbox_counts(db: Database) -> Counter[str]:
    with db.reading() as session:
        return Counter(dict(session.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status))
                            .all()))


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def rows(corpus) -> list[dict]:
    return corpus.to_dict("records")


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv(SECRET_ENV, SECRET)
    return SECRET


# --- 2. load -----------------------------------------------------------------------------------------
def test_the_load_generator_runs_where_an_event_loop_is_already_running(monkeypatch):
    """A browser test's Playwright keeps a loop running in the worker's thread for the rest of the run."""
    async def finished(url, work, **kwargs):
        return f"report for {url}"

    monkeypatch.setattr(bench.loadgen, "run", finished)

    async def inside_a_loop():
        return run_sync("http://127.0.0.1:1", None)

    results: list[str] = []  # on a fresh thread: this one may hold Playwright's loop already
    thread = threading.Thread(target=lambda: results.append(asyncio.run(inside_a_loop())))
    thread.start()
    thread.join()
    assert results == ["report for http://127.0.0.1:1"]


def test_load_mixed_requests_on_several_workers_and_postgresql(trained_registry, rows, tmp_path):
    registry, _ = trained_registry
    clients, seconds, workers = (100, 60, 4) if FULL else (20, 4, 2)
    with pg_database() as url:
        key = make_key(url)
        # the limiter stays on (its cost is part of the figures) with a rate no client reaches
        env = service_env(url, registry.root, rate_limit_per_second=1_000_000)
        server = Server(env, tmp_path / "server.log", workers=workers)
        with running(server.start()):
            server.wait_ready()
            work = Workload(rows, key, replay_share=0.05)
            report = run_sync(server.url, work, clients=clients, seconds=seconds,
                              weights={"intake": 0.4, "predict": 0.4, "list": 0.2})
        db = Database(url, pool_size=1)
        with db.reading() as session:
            stored = session.scalar(select(func.count()).select_from(Complaint)
                                    .where(Complaint.external_id.like(f"load-{work.run_id}-%")))
        db.dispose()
    summary = report.summary()
    if FULL:
        write_result("proof-load", {"backend": "postgresql", "uvicorn_workers": workers, "stored": stored, **summary})
    assert report.errors == [], report.errors[:5]
    assert report.created_ids and len(set(report.created_ids)) == len(report.created_ids)
    assert stored == len(report.created_ids), (stored, len(report.created_ids), len(report.replayed_ids))
    assert set(report.replayed_ids) <= set(report.created_ids)


# --- 3. crash recovery -------------------------------------------------------------------------------
def _stream(url: str, key: str, rows: list[dict], stop: threading.Event, acked: dict, failed: list) -> None:
    """One client sending intake requests one after another; connection errors (the server died)
    are remembered as unanswered and the client keeps trying."""
    headers = {"Authorization": f"Bearer {key}"}
    i = 0
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            row = rows[i % len(rows)]
            body = {"external_id": f"crash-{threading.get_ident()}-{i}", "text": text_of(rows, i), "channel": "监管转办",
                    "branch": row["branch"], "received_at": row["received_at"], "customer_ref": f"C{i}"}
            i += 1
            try:
                r = client.post("/v1/complaints", json=body, headers=headers)
                if r.status_code in (200, 201):
                    acked[body["external_id"]] = r.status_code
                else:
                    failed.append((body, f"HTTP {r.status_code}"))
            except httpx.HTTPError as exc:
                failed.append((body, type(exc).__name__))
                time.sleep(0.05)


def test_kill_9_during_intake_loses_and_duplicates_nothing(trained_registry, rows, tmp_path, secret):
    registry, _ = trained_registry
    mailbox, hook = Mailbox().start(), Hook(tmp_path, "card").start()
    before, after = (20, 10) if FULL else (3, 2)
    try:
        with pg_database() as url:
            key = make_key(url, "intake")
            env = service_env(url, registry.root, group_window_minutes=0, smtp_port=mailbox.port,
                              routing_file=routing_with(tmp_path, {"信用卡中心": hook.url}),
                              outbox_lease_seconds=2, outbox_backoff_seconds=0.2, worker_poll_seconds=0.2,
                              rate_limit_per_second=0, digest_schedule="off")
            env[SECRET_ENV] = SECRET
            server = Server(env, tmp_path / "server.log", worker=True)
            acked: dict[str, int] = {}
            failed: list = []
            stop = threading.Event()
            with running(server.start()):
                server.wait_ready()
                clients = [threading.Thread(target=_stream, args=(server.url, key, rows, stop, acked, failed))
                           for _ in range(3)]
                for c in clients:
                    c.start()
                time.sleep(before)
                acked_before_kill = len(acked)
                server.kill()  # SIGKILL: no shutdown, transactions and deliveries cut wherever they are
                time.sleep(1)
                restarted = Server(env, tmp_path / "server2.log", worker=True, port=server.port)
                with running(restarted.start()):
                    restarted.wait_ready()
                    time.sleep(after)
                    stop.set()
                    for c in clients:
                        c.join()
                    # a client resends what got no answer: the same external_id, so at most once
                    with httpx.Client(base_url=restarted.url, timeout=30) as client:
                        for body, _ in failed:
                            r = client.post("/v1/complaints", json=body, headers={"Authorization": f"Bearer {key}"})
                            assert r.status_code in (200, 201), r.text
                            acked[body["external_id"]] = r.status_code
                    db = Database(url, pool_size=2)
                    wait_for(lambda: (c := outbox_counts(db)) and set(c) <= {"sent"}, 90, "the outbox to drain")
            with db.reading() as session:
                stored = Counter(session.scalars(select(Complaint.external_id)))
                messages = list(session.execute(select(OutboxMessage.kind, OutboxMessage.idempotency_key)))
                numbers = sorted(session.scalars(select(Letter.seq)))
            db.dispose()
    finally:
        mailbox.stop()
        hook.stop()
    assert acked_before_kill > 0 and failed, "the kill must interrupt a stream that had answers"
    assert set(stored) == set(acked) and all(n == 1 for n in stored.values())
    assert numbers == list(range(1, len(numbers) + 1))
    email_keys = {k for kind, k in messages if kind == "email"}
    hook_keys = {k for kind, k in messages if kind == "webhook"}
    mail_raw = Counter(mailbox.keys())
    assert set(mail_raw) == email_keys  # each letter's mail arrived; duplicates (if any) share a Message-ID
    assert sorted(hook.acted) == sorted(hook_keys) and len(hook.acted) == len(set(hook.acted))
    raw_hooks = Counter(d["key"] for d in hook.deliveries() if d["status"] == 200)
    result = {"acked_before_kill": acked_before_kill, "unanswered_then_resent": len(failed),
              "complaints": len(stored), "letters": len(numbers), "emails": len(email_keys),
              "email_deliveries_raw": sum(mail_raw.values()), "webhooks": len(hook_keys),
              "webhook_deliveries_raw": sum(raw_hooks.values()), "webhooks_acted_on": len(hook.acted)}
    if FULL:
        write_result("proof-crash", result)


# --- 4. delivery outages ------------------------------------------------------------------------------
def test_outages_deliver_everything_once_and_a_dead_receiver_is_visible(db, holder, settings, keys, rows, tmp_path,
                                                                         secret):
    mailbox, card, broken = Mailbox().start(), Hook(tmp_path, "card").start(), Hook(tmp_path, "cc", 500).start()
    outage = 4 if FULL else 2
    s = settings.model_copy(update={
        "group_window_minutes": 0, "smtp_port": mailbox.port, "outbox_backoff_seconds": 0.2,
        "outbox_backoff_max_seconds": 0.6, "outbox_max_attempts": 30 if FULL else 20, "worker_poll_seconds": 0.1,
        "routing_file": routing_with(tmp_path, {"信用卡中心": card.url}, others=broken.url),
        "rate_limit_per_second": 0, "digest_schedule": "off"})
    app = create_app(s, database=db, model=holder)
    worker = Worker(db, s, Alerting(s, load_routing(s), SystemClock()), SystemClock(),
                    delivery=Delivery(db, s, SystemClock()))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            mailbox.stop()
            card.stop()  # both down before anything is sent
            worker.start()
            for i, row in enumerate(rows[:12]):
                body = {"external_id": f"outage-{i}", "text": text_of(rows, i), "channel": "监管转办", "branch": row["branch"],
                        "received_at": row["received_at"], "customer_ref": f"C{i}"}
                assert client.post("/v1/complaints", json=body, headers={"Authorization": f"Bearer {keys['intake']}"}
                                   ).status_code == 201
            wait_for(lambda: outbox_counts(db)["failed"] > 0, 20, "failed attempts while the receivers are down")
            time.sleep(outage)
            assert outbox_counts(db)["sent"] == 0
            mailbox.start()
            card.start()
            wait_for(lambda: (c := outbox_counts(db)) and set(c) <= {"sent", "dead"} and c["dead"] > 0, 120,
                     "everything delivered and the broken receiver's messages dead")
            worker.stop()
            admin = {"Authorization": f"Bearer {keys['admin']}"}
            metrics = client.get("/metrics").text
            dead_listed = client.get("/v1/outbox?status=dead", headers=admin).json()
            digest = client.get("/v1/digests/weekly?format=text", headers=admin).text
            digest_json = client.get("/v1/digests/weekly", headers=admin).json()
    finally:
        worker.stop()
        mailbox.stop()
        card.stop()
        broken.stop()
    with db.reading() as session:
        messages = list(session.execute(select(OutboxMessage.kind, OutboxMessage.receiver, OutboxMessage.idempotency_key,
                                               OutboxMessage.status, OutboxMessage.attempts)))
    dead = [m for m in messages if m.status == "dead"]
    assert dead and all(m.receiver == broken.url for m in dead)
    assert all(m.status == "sent" for m in messages if m.receiver != broken.url)
    email_keys = {m.idempotency_key for m in messages if m.kind == "email"}
    card_keys = {m.idempotency_key for m in messages if m.receiver == card.url}
    assert set(mailbox.keys()) == email_keys and len(mailbox.keys()) == len(email_keys)
    assert sorted(card.acted) == sorted(card_keys)
    assert broken.acted == []
    assert f"xiaobao_outbox_dead {float(len(dead))}" in metrics
    assert dead_listed["total"] == len(dead) and all(m["last_error"] for m in dead_listed["items"])
    assert digest_json["letters"]["undeliverable"] == len(dead)
    assert "无法投递的消息" in digest and broken.url in digest
    max_attempts = max(m.attempts for m in messages if m.status == "sent")
    if FULL:
        write_result("proof-outages", {"outage_s": outage, "messages": len(messages), "emails": len(email_keys),
                                       "email_deliveries_raw": len(mailbox.keys()), "webhooks_card": len(card_keys),
                                       "webhook_deliveries_raw_card": sum(d["status"] == 200 for d in card.deliveries()),
                                       "dead": len(dead), "max_attempts_of_a_delivered_message": max_attempts})


# --- 5. several workers on PostgreSQL ----------------------------------------------------------------
def test_claims_lock_rows_with_skip_locked_on_postgresql(monkeypatch, tmp_path):
    """Delivery.claim's SELECT, as PostgreSQL receives it, locks with FOR UPDATE SKIP LOCKED."""
    from sqlalchemy.orm import Session

    seen: list[str] = []
    real = Session.scalars

    def spy(self, statement, *args, **kwargs):
        seen.append(str(statement.compile(dialect=postgresql.dialect())))
        return real(self, statement, *args, **kwargs)

    monkeypatch.setattr(Session, "scalars", spy)
    s = Settings(database_url=f"sqlite:///{tmp_path}/claim.db")
    db = Database(s.database_url)
    try:
        db.upgrade()
        Delivery(db, s, SystemClock()).claim()
    finally:
        db.dispose()
    assert any("FROM outbox" in sql and "FOR UPDATE SKIP LOCKED" in sql for sql in seen), seen


def test_four_uvicorn_workers_and_two_outbox_workers_on_postgresql(trained_registry, rows, tmp_path, secret):
    registry, _ = trained_registry
    customers, repeats = (40, 6) if FULL else (8, 3)
    mailbox, hook = Mailbox().start(), Hook(tmp_path, "card").start()
    try:
        with pg_database() as url:
            key = make_key(url, "admin")
            env = service_env(url, registry.root, group_window_minutes=60, smtp_port=mailbox.port,
                              routing_file=routing_with(tmp_path, {"信用卡中心": hook.url}), rate_limit_per_second=0,
                              worker_poll_seconds=0.2, digest_schedule="off")
            env[SECRET_ENV] = SECRET
            server = Server(env, tmp_path / "server.log", workers=4)
            with running(server.start()):
                server.wait_ready()
                # every customer's repeats arrive at once from different connections (and workers)
                headers = {"Authorization": f"Bearer {key}"}
                jobs = [(c, r) for r in range(repeats) for c in range(customers)]
                errors: list[str] = []

                def send(chunk: list[tuple[int, int]]) -> None:
                    with httpx.Client(base_url=server.url, timeout=60) as client:
                        for c, r in chunk:
                            row = rows[(c * 7) % len(rows)]
                            body = {"external_id": f"multi-{c}-{r}", "text": text_of(rows, c), "channel": "监管转办",
                                    "branch": row["branch"], "received_at": row["received_at"],
                                    "customer_ref": f"CUST{c:04d}"}
                            resp = client.post("/v1/complaints", json=body, headers=headers)
                            if resp.status_code != 201:
                                errors.append(f"{resp.status_code} {resp.text[:200]}")

                threads = [threading.Thread(target=send, args=(jobs[i::16],)) for i in range(16)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                assert not errors, errors[:5]

                def flush() -> None:  # grouping: several flushes at once still give one letter per department
                    httpx.post(server.url + "/v1/letters/flush", headers=headers, timeout=60).raise_for_status()

                flushers = [threading.Thread(target=flush) for _ in range(6)]
                for t in flushers:
                    t.start()
                for t in flushers:
                    t.join()
                workers = [worker_process(env, tmp_path / f"worker-{i}.log").start() for i in range(2)]
                db = Database(url, pool_size=2)
                with running(*workers):
                    wait_for(lambda: (c := outbox_counts(db)) and set(c) <= {"sent"}, 120, "two workers to deliver")
            with db.reading() as session:
                alerts = list(session.execute(select(Alert.dedup_key, Alert.occurrences, Alert.status)))
                letters = list(session.execute(select(Letter.id, Letter.seq, Letter.department, Letter.group_key)))
                items = list(session.scalars(select(LetterItem.complaint_id)))
                complaints = session.scalar(select(func.count()).select_from(Complaint))
                messages = list(session.execute(select(OutboxMessage.kind, OutboxMessage.idempotency_key)))
            db.dispose()
    finally:
        mailbox.stop()
        hook.stop()
    assert complaints == customers * repeats
    keys = Counter(a.dedup_key for a in alerts)
    assert all(n == 1 for n in keys.values()), "two alerts for one dedup key"
    assert sum(a.occurrences for a in alerts) == complaints  # every repeat joined its customer's alert
    seqs = sorted(seq for _, seq, _, _ in letters)
    assert seqs == list(range(1, len(letters) + 1)), seqs  # unique and gapless
    assert len({(d, g) for _, _, d, g in letters}) == len(letters)  # one letter per department and window
    assert len(items) == len(set(items)) == complaints  # each request in exactly one letter
    email_keys = {k for kind, k in messages if kind == "email"}
    hook_keys = {k for kind, k in messages if kind == "webhook"}
    assert Counter(mailbox.keys()) == Counter(dict.fromkeys(email_keys, 1))  # once each, not even a raw repeat
    raw = Counter(d["key"] for d in hook.deliveries())
    assert raw == Counter(dict.fromkeys(hook_keys, 1))
    if FULL:
        write_result("proof-multiworker", {"uvicorn_workers": 4, "outbox_workers": 2, "complaints": complaints,
                                           "alerts": len(alerts), "letters": len(letters), "emails": len(email_keys),
                                           "webhooks": len(hook_keys)})
