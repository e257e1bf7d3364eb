"""Alembic environment. The service passes its own connection (service.db.run_migrations); the
alembic command line (`alembic -c service/migrations/alembic.ini …`) gets the URL from Settings."""

from __future__ import annotations

from alembic import context

from service.tables import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _render_item(kind: str, obj, autogen_context):
    # Migrations spell out plain SQLAlchemy types so they never import the (changing) models.
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(connection) -> None:
    # Batch mode lets later migrations ALTER tables on SQLite, which cannot alter in place.
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True,
                      render_item=_render_item)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    from service.db import Database
    from service.settings import Settings

    url = config.get_main_option("sqlalchemy.url") or Settings().database_url
    database = Database(url)
    try:
        with database.engine.execution_options(xiaobao_write=True).begin() as conn:
            _configure(conn)
    finally:
        database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run()
