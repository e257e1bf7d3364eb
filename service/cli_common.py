"""What every service command of the CLI shares (`service/cli.py`, `service/delivery_cli.py`,
`service/digest/cli.py`): the one-line error, the settings and the database. A module of its own so
those three import it rather than each other."""

from __future__ import annotations

import argparse

from pydantic import ValidationError

from service.db import Database
from service.settings import Settings


class ServiceCliError(Exception):
    """A one-line message for the user; the CLI exits with status 2."""


def load_settings(args: argparse.Namespace, **overrides: object) -> Settings:
    """The settings from the environment, `--database-url` and `overrides` (a command's own options)
    winning; a bad value is a one-line error."""
    if getattr(args, "database_url", None):
        overrides["database_url"] = args.database_url
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        raise ServiceCliError(f"setting {name} (XIAOBAO_{name.upper()}): {err['msg']}") from None


def open_database(settings: Settings, *, migrate: bool = True) -> Database:
    """The database, reachable and at the latest schema, or a one-line error."""
    db = Database(settings.database_url)
    problem = db.ping()
    if problem:
        db.dispose()
        raise ServiceCliError(f"{db.url}: {problem}")
    if migrate:
        db.upgrade()
    return db
