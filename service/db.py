"""Engine, sessions and migrations for SQLite (the embedded default) and PostgreSQL (psycopg 3).

Write transactions on SQLite start with BEGIN IMMEDIATE: the write lock is taken up front, so two
writers queue on the busy timeout instead of one failing when it upgrades a read lock (and the
letter-number row "lock" of PostgreSQL becomes the database lock on SQLite).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger("xiaobao.service.db")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_WRITE_OPTION = "xiaobao_write"
# An arbitrary constant: the PostgreSQL advisory lock that serialises migrations between workers.
_MIGRATION_LOCK_ID = 0x78_69_61_6F


class DatabaseError(Exception):
    """A database URL that cannot be used; str() is one line for the user."""


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// (as DATABASE_URL usually reads) → the psycopg 3 driver."""
    url = url.strip()
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _on_begin)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE_OPTION) else "BEGIN")


def make_engine(url: str, *, pool_size: int | None = None) -> Engine:
    """Pools sized to the server's 40 worker threads, each holding one connection at a time: SQLite
    connections are cheap and keep their pragmas; PostgreSQL ones count against max_connections."""
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database URL {url!r} is not a valid SQLAlchemy URL") from None
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            raise DatabaseError("use a SQLite file (sqlite:///path/to/file.db); an in-memory database "
                                "would be a different, empty database on each connection")
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=pool_size or 40, max_overflow=10)
        _sqlite_setup(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_size=pool_size or 20, max_overflow=10, pool_pre_ping=True)
    raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r}; use sqlite or postgresql")


class Database:
    """One engine and its two session factories: `reading()` and `transaction()`."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        self.engine = make_engine(url, pool_size=pool_size)
        self.url = self.engine.url.render_as_string(hide_password=True)
        writer = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(writer, expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def reading(self) -> Iterator[Session]:
        with self._read() as session:
            yield session

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """Commits when the block ends normally, rolls back on any exception."""
        with self._write() as session, session.begin():
            yield session

    def ping(self) -> str | None:
        """None when the database answers, otherwise the reason in one line."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any driver error means "not reachable" here
            return f"database unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return None

    def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def upgrade(self, revision: str = "head") -> None:
        run_migrations(self.engine, "upgrade", revision)

    def downgrade(self, revision: str) -> None:
        run_migrations(self.engine, "downgrade", revision)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


@functools.cache  # the scripts ship with the code; they do not change while it runs
def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Several workers starting at once migrate one after the other."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK_ID})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK_ID})
        return
    database = engine.url.database or ""
    with open(Path(database).expanduser().with_suffix(".migrate.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_migrations(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with _migration_lock(engine), engine.execution_options(**{_WRITE_OPTION: True}).begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, direction)(cfg, revision)
