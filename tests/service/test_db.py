"""Storage: migrations match the models, constraints hold on both databases, times stay UTC."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, inspect, select, text, update
from sqlalchemy.exc import IntegrityError

from service.db import Database, DatabaseError, head_revision, normalise_url
from service.tables import (
    Alert,
    ApiKey,
    Base,
    Complaint,
    ComplaintOutcome,
    Letter,
    LetterSequence,
    OutboxMessage,
)
from tests.service.conftest import BACKENDS, throwaway_pg_database


def _complaint(external_id: str = "E1", **kw) -> Complaint:
    values = dict(external_id=external_id, text_masked="信用卡年费多扣", channel="电话客服", branch="营业部",
                  received_at=datetime(2026, 5, 1, 1, 0, tzinfo=UTC), prediction={"model_version": "v"},
                  model_version="v", needs_review=False)
    values.update(kw)
    return Complaint(**values)


def test_migrations_create_exactly_the_models(db):
    assert db.revision() == head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == [], f"models and migrations differ; write a migration: {diff}"


def _checks(engine) -> dict[str, set[str]]:
    inspector = inspect(engine)
    return {t: {c["name"] for c in inspector.get_check_constraints(t)} for t in inspector.get_table_names()
            if t != "alembic_version"}


def test_migrations_create_the_models_check_constraints(db):
    """compare_metadata leaves CHECK constraints out: compare them by name, table by table."""
    expected = {t.name: {c.name for c in t.constraints if isinstance(c, CheckConstraint)}
                for t in Base.metadata.sorted_tables}
    assert _checks(db.engine) == expected


@pytest.mark.parametrize("table, row", [
    ("letters", lambda: Letter(year=2026, seq=1, number="〔2026〕第0001号", department="d", status="sent")),
    ("letters", lambda: Letter(year=2026, seq=1, number="〔2026〕第0001号", department="d", risk_level="极高")),
    ("alerts", lambda: Alert(dedup_key="k", reason="risk_level", department="d", status="escalated")),
    ("alerts", lambda: Alert(dedup_key="k", reason="risk_level", department="d", risk_level="high")),
    ("outbox", lambda: OutboxMessage(idempotency_key="k", kind="email", receiver="a@example.com", payload={},
                                     status="lost")),
    ("complaints", lambda: _complaint(status="pending")),
    ("complaints", lambda: _complaint(risk_level="高风险")),
])
def test_statuses_and_risk_levels_outside_the_vocabulary_are_refused(db, table, row):
    with pytest.raises(IntegrityError, match="known"), db.transaction() as s:
        s.add(row())
    with db.transaction() as s:  # the vocabulary's own values pass
        s.add(Letter(year=2026, seq=1, number="〔2026〕第0001号", department="d", status="acknowledged", risk_level="中"))
        s.add(Alert(dedup_key="k", reason="risk_level", department="d", status="lapsed", risk_level="低"))
        s.add(OutboxMessage(idempotency_key="k", kind="email", receiver="a@example.com", payload={}, status="dead"))
        s.add(_complaint(status="closed", risk_level="高"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_latest_migration_downgrades_and_upgrades_again(backend, tmp_path):
    """0005 drops the unused departments table and adds the vocabulary's CHECK constraints; one step
    down brings the table back and takes the constraints away, on both databases."""
    if backend == "sqlite":
        _down_and_up(f"sqlite:///{tmp_path}/m.db")
    else:
        with throwaway_pg_database() as url:
            _down_and_up(url)


def _down_and_up(url: str) -> None:
    db = Database(url)
    try:
        db.upgrade()
        head = _checks(db.engine)
        assert "departments" not in head and "ck_letters_status_known" in head["letters"]
        with db.transaction() as s:
            s.add(Letter(year=2026, seq=1, number="〔2026〕第0001号", department="d", risk_level="高"))
        db.downgrade("-1")
        assert db.revision() == "0004"
        before = _checks(db.engine)
        assert "departments" in before
        assert before["letters"] == {"ck_letters_seq_positive"} and before["outbox"] == {"ck_outbox_attempts_not_negative"}
        db.upgrade()
        assert db.revision() == head_revision() and _checks(db.engine) == head
        with db.reading() as s:
            assert s.scalar(select(Letter.number)) == "〔2026〕第0001号"  # rows survive SQLite's table copies
    finally:
        db.dispose()


def test_downgrade_to_base_and_upgrade_again(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/m.db")
    db.upgrade()
    assert "complaints" in inspect(db.engine).get_table_names()
    db.downgrade("base")
    assert db.revision() is None
    assert "complaints" not in inspect(db.engine).get_table_names()
    db.upgrade()
    assert db.revision() == head_revision()
    db.dispose()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    db = Database(f"sqlite:///{tmp_path}/sub/dir/x.db")  # missing folders are created
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    db.dispose()


@pytest.mark.parametrize("url, problem", [
    ("sqlite://", "in-memory"), ("sqlite:///:memory:", "in-memory"), ("mysql://u@h/d", "unsupported"),
    ("not a url", "not a valid"),
])
def test_unusable_urls_are_refused_in_one_line(url, problem):
    with pytest.raises(DatabaseError, match=problem):
        Database(url)


def test_postgres_urls_use_psycopg3():
    assert normalise_url("postgres://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_url("postgresql://u@h/d") == "postgresql+psycopg://u@h/d"
    assert normalise_url("postgresql+psycopg://u@h/d") == "postgresql+psycopg://u@h/d"


def test_ping_names_an_unreachable_database():
    db = Database("postgresql://postgres@127.0.0.1:1/none")
    assert "unreachable" in db.ping()
    db.dispose()


def test_times_come_back_aware_utc(db):
    local = datetime(2026, 5, 1, 9, 30, tzinfo=timezone(timedelta(hours=8)))
    with db.transaction() as s:
        s.add(_complaint(received_at=local))
    with db.reading() as s:
        c = s.scalar(select(Complaint))
    assert c.received_at == local and c.received_at.tzinfo is not None
    assert c.received_at.utcoffset() == timedelta(0) and c.received_at.hour == 1
    with pytest.raises(Exception, match="naive"), db.transaction() as s:
        s.add(_complaint("E2", received_at=datetime(2026, 5, 1, 9, 30)))


def test_external_id_is_unique(db):
    with db.transaction() as s:
        s.add(_complaint("SAME"))
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(_complaint("SAME"))
    with db.reading() as s:
        assert len(s.scalars(select(Complaint)).all()) == 1


def test_outcomes_go_with_their_complaint_and_need_one(db):
    with db.transaction() as s:
        c = _complaint()
        c.outcomes.append(ComplaintOutcome(escalated=True))
        s.add(c)
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(ComplaintOutcome(complaint_id=987654, escalated=False))  # foreign keys are enforced
    with db.transaction() as s:
        s.delete(s.scalar(select(Complaint)))
    with db.reading() as s:
        assert s.scalars(select(ComplaintOutcome)).all() == []


def test_one_open_alert_per_dedup_key(db):
    with db.transaction() as s:
        s.add(Alert(dedup_key="C1|信用卡|定价收费", reason="risk_level", department="信用卡中心"))
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(Alert(dedup_key="C1|信用卡|定价收费", reason="risk_level", department="信用卡中心"))
    with db.transaction() as s:
        s.execute(update(Alert).values(status="resolved"))
        s.add(Alert(dedup_key="C1|信用卡|定价收费", reason="risk_level", department="信用卡中心"))
    with db.reading() as s:
        assert len(s.scalars(select(Alert)).all()) == 2


def test_letter_numbers_are_unique_per_year(db):
    with db.transaction() as s:
        s.add(Letter(year=2026, seq=1, number="〔2026〕第0001号", department="信用卡中心"))
        s.add(Letter(year=2027, seq=1, number="〔2027〕第0001号", department="信用卡中心"))
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(Letter(year=2026, seq=1, number="〔2026〕第0001号 bis", department="零售信贷部"))


def test_letter_sequence_counter_is_gapless_under_concurrent_workers(db):
    """The pattern the letters engineer will use: UPDATE … RETURNING on the year's row."""
    with db.transaction() as s:
        s.add(LetterSequence(year=2026, last_seq=0))
    taken: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(5):
                with db.transaction() as s:
                    seq = s.execute(update(LetterSequence).where(LetterSequence.year == 2026)
                                    .values(last_seq=LetterSequence.last_seq + 1)
                                    .returning(LetterSequence.last_seq)).scalar_one()
                    s.add(Letter(year=2026, seq=seq, number=f"〔2026〕第{seq:04d}号", department="d"))
                taken.append(seq)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(taken) == list(range(1, 41))


def test_outbox_idempotency_key_is_unique(db):
    with db.transaction() as s:
        s.add(OutboxMessage(idempotency_key="letter-1-email", kind="email", receiver="a@example.com", payload={}))
    with pytest.raises(IntegrityError), db.transaction() as s:
        s.add(OutboxMessage(idempotency_key="letter-1-email", kind="email", receiver="a@example.com", payload={}))


def test_api_keys_keep_only_hashes(db):
    from service.auth import create_key

    with db.transaction() as s:
        row, plaintext = create_key(s, "callcentre", "intake")
    with db.engine.connect() as conn:
        dump = " ".join(str(v) for r in conn.execute(text("SELECT * FROM api_keys")) for v in r)
    assert plaintext not in dump and row.key_hash in dump
    with db.reading() as s:
        assert s.scalar(select(ApiKey.scope)) == "intake"
