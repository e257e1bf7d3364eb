"""Service fixtures. Every test that takes `db` (or `client`) runs once on SQLite and once on
PostgreSQL. PostgreSQL (127.0.0.1:5432, trust auth; `.ci/run` starts it) gets a throw-away database
per test session, dropped at the end; if it cannot be reached the PostgreSQL variants fail.
XIAOBAO_TEST_BACKENDS=sqlite runs the SQLite half only, for a quick local loop.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from service.app import create_app
from service.auth import create_key
from service.db import Database
from service.model_holder import ModelHolder
from service.settings import Settings
from service.tables import Base

BACKENDS = [b.strip() for b in os.environ.get("XIAOBAO_TEST_BACKENDS", "sqlite,postgresql").split(",") if b.strip()]
PG_SERVER = os.environ.get("XIAOBAO_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
SCOPES = ("intake", "admin", "protection", "department:信用卡中心")


@contextmanager
def throwaway_pg_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = f"xiaobao_test_{os.getpid()}_{secrets.token_hex(4)}"
    server = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        server.dispose()
        pytest.fail(f"PostgreSQL at {PG_SERVER} is unreachable ({str(exc.orig).splitlines()[0]}); start it "
                    "(.ci/run does) or set XIAOBAO_TEST_BACKENDS=sqlite for the SQLite half only", pytrace=False)
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with throwaway_pg_database() as url:
        yield url


def database_url(backend: str, request: pytest.FixtureRequest, tmp_path_factory) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/service.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session", params=BACKENDS)
def database(request, tmp_path_factory) -> Iterator[Database]:
    db = Database(database_url(request.param, request, tmp_path_factory))
    db.upgrade()
    yield db
    db.dispose()


def wipe(db: Database) -> None:
    with db.engine.begin() as conn:
        if db.backend == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def db(database) -> Database:
    """The session's database of this backend, emptied for the test."""
    wipe(database)
    return database


@pytest.fixture(scope="session")
def holder(trained_registry) -> ModelHolder:
    registry, _ = trained_registry
    h = ModelHolder(registry, probe_channel="电话客服")
    h.reload()
    return h


@pytest.fixture
def settings(db, trained_registry) -> Settings:
    registry, _ = trained_registry
    return Settings(database_url=db.engine.url.render_as_string(hide_password=False), registry=registry.root)


@pytest.fixture
def app(db, holder, settings):
    return create_app(settings, database=db, model=holder)


@pytest.fixture
def client(app) -> Iterator[TestClient]:
    # Server errors come back as responses, so tests can assert that bad input never gives a 500.
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def keys(db) -> dict[str, str]:
    """One key per scope, as `{scope: plaintext}`."""
    out = {}
    with db.transaction() as session:
        for scope in SCOPES:
            _, out[scope] = create_key(session, scope.replace(":", "-"), scope)
    return out


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def h(keys) -> dict[str, dict[str, str]]:
    """Authorization headers by scope: h['intake'], h['admin'], …"""
    return {scope: bearer(key) for scope, key in keys.items()}


@pytest.fixture(scope="session")
def corpus(demo_corpus) -> pd.DataFrame:
    return pd.read_csv(demo_corpus, dtype=str, keep_default_na=False)


def complaint_body(row: pd.Series | dict, **changes) -> dict:
    """An intake body from a demo-corpus row."""
    body = {"external_id": row["id"], "text": row["text"], "channel": row["channel"], "branch": row["branch"],
            "received_at": row["received_at"], "customer_ref": row["customer_ref"] or None,
            "repeat_count": int(row["repeat_count"]) if row["repeat_count"] else None,
            "amount": float(row["amount"]) if row["amount"] else None}
    body.update(changes)
    return body
