"""`xiaobao worker` and `xiaobao demo`, run as a user would."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from service.demo import last_weeks, replay
from service.digest.service import EVENT as DIGEST_EVENT
from service.tables import Complaint, Letter
from tests.service.alerting_support import Desk, count, messages, routing_file, settings_for
from tests.service.test_delivery import Smtp, free_port
from xiaobao.cli import main


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_worker_once_delivers_what_is_due(capsys, db, monkeypatch):
    smtp = Smtp(free_port()).start()
    try:
        monkeypatch.setenv("XIAOBAO_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("XIAOBAO_DIGEST_SCHEDULE", "off")  # the digest job is tested below
        desk = Desk(db, settings_for(db, group_window_minutes=0), start=datetime.now(UTC))
        desk.intake()
        url = desk.settings.database_url
        code, out, err = run(capsys, "worker", "--once", "--database-url", url)
        assert code == 0, err
        assert "messages sent 1, retrying 0, dead 0" in out
        assert len(smtp.inbox.received) == 1 and messages(db)[0].status == "sent"
        code, out, _ = run(capsys, "worker", "--once", "--database-url", url)
        assert "letters issued: 0" in out and "messages sent 0" in out
    finally:
        smtp.stop()


def test_worker_runs_the_weekly_digest_job(capsys, db, monkeypatch):
    smtp = Smtp(free_port()).start()
    try:
        monkeypatch.setenv("XIAOBAO_SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("XIAOBAO_DIGEST_SCHEDULE", "MON 00:00")  # the last complete week is always due
        code, out, err = run(capsys, "worker", "--once", "--database-url", settings_for(db).database_url)
        assert code == 0, err
        assert [m.event for m in messages(db)] == [DIGEST_EVENT]
        assert [m["To"] for m in smtp.inbox.received] == ["xiaobao-xbb@bank.example"]
        run(capsys, "worker", "--once", "--database-url", settings_for(db).database_url)
        assert len(smtp.inbox.received) == 1  # once per week
    finally:
        smtp.stop()


def test_worker_refuses_to_start_without_webhook_secrets_or_with_a_bad_routing_file(capsys, db, tmp_path, monkeypatch):
    url = settings_for(db).database_url
    monkeypatch.delenv("XB_TEST_SECRET", raising=False)
    monkeypatch.setenv("XIAOBAO_ROUTING_FILE", str(routing_file(tmp_path, webhook_url="https://oa.example/hook")))
    code, _, err = run(capsys, "worker", "--once", "--database-url", url)
    assert code == 2 and "XB_TEST_SECRET" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("departments: {办公室: {email: nobody}}\n", encoding="utf-8")
    monkeypatch.setenv("XIAOBAO_ROUTING_FILE", str(bad))
    code, _, err = run(capsys, "worker", "--once", "--database-url", url)
    assert code == 2 and "routing file" in err and "email[0]" in err


@pytest.fixture
def small_corpus(corpus, tmp_path):
    """The corpus's last 120 requests (its last days)."""
    path = tmp_path / "small.csv"
    corpus.sort_values("received_at").tail(120).to_csv(path, index=False)
    return path


def test_demo_replays_in_process_idempotently(capsys, db, small_corpus, trained_registry, monkeypatch):
    registry, _ = trained_registry
    monkeypatch.setenv("XIAOBAO_REGISTRY", str(registry.root))
    url = settings_for(db).database_url
    items = last_weeks(small_corpus, 1)
    code, out, err = run(capsys, "demo", "--weeks", "1", "--data", small_corpus, "--database-url", url)
    assert code == 0, err
    assert f"sent {len(items)}: {len(items)} stored, 0 known already" in out
    assert count(db, Complaint) == len(items) and count(db, Letter) >= 1
    total = count(db, Letter)  # the newest letters are listed (at most five), with their numbers and links
    assert "?format=html" in out and f"letters in all: {total}" in out and f"〔2026〕第{total:04d}号" in out
    code, out, _ = run(capsys, "demo", "--weeks", "1", "--data", small_corpus, "--database-url", url)
    assert code == 0 and f"0 stored, {len(items)} known already" in out and "letters issued now: 0" in out
    assert count(db, Complaint) == len(items)


def test_demo_options_are_checked(capsys, db, tmp_path):
    url = settings_for(db).database_url
    code, _, err = run(capsys, "demo", "--url", "http://127.0.0.1:1", "--database-url", url)
    assert code == 2 and "--url and --key together" in err
    code, _, err = run(capsys, "demo", "--data", tmp_path / "none.csv", "--database-url", url)
    assert code == 2 and "not found" in err
    code, _, err = run(capsys, "demo", "--weeks", "0", "--database-url", url)
    assert code == 2 and "--weeks" in err
    code, _, err = run(capsys, "demo", "--url", "http://127.0.0.1:1", "--key", "xb_x", "--data", tmp_path / "none.csv")
    assert code == 2


def test_demo_replay_against_the_api_with_a_key_that_cannot_flush(client, h, small_corpus, db):
    items = last_weeks(small_corpus, 1)[:20]
    report = replay(client, h["intake"]["Authorization"].split()[1], items)
    assert report.sent == report.created == 20 and report.letters_issued == []
    assert any("grouping window" in n for n in report.notes)
    report = replay(client, h["admin"]["Authorization"].split()[1], items)
    assert report.existing == 20 and report.letters_total == len(report.letters_issued) >= 1


def test_last_weeks_takes_the_most_recent_requests(small_corpus):
    items = last_weeks(small_corpus, 1)
    times = pd.to_datetime([i["received_at"] for i in items])
    assert times.is_monotonic_increasing and (times.max() - times.min()).days < 7
    assert all(i["external_id"].startswith("DEMO-") for i in items)
