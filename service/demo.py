"""`xiaobao demo`: replay the last weeks of the demo corpus through the intake API, so that alerts,
letters (and a digest) exist to look at. Idempotent: each request's external_id is its corpus id,
so a second run stores nothing new. Against a running service (`--url`, `--key`), or in-process
on the configured database with a temporary key that is revoked afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

DEFAULT_CORPUS = Path("data/demo/demo_corpus.csv")
BATCH = 200


class DemoError(Exception):
    """The replay cannot go on; str() is one line for the user."""


@dataclass
class DemoReport:
    sent: int = 0
    created: int = 0
    existing: int = 0
    alerts: int = 0
    letters_issued: list[str] = field(default_factory=list)
    letters_total: int = 0
    first_letters: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def last_weeks(corpus: Path, weeks: int) -> list[dict[str, Any]]:
    import pandas as pd

    if not corpus.is_file():
        raise DemoError(f"{corpus}: not found (make corpus builds it)")
    df = pd.read_csv(corpus, dtype=str, keep_default_na=False)
    missing = {"id", "text", "channel", "branch", "received_at"} - set(df.columns)
    if missing:
        raise DemoError(f"{corpus}: missing columns {', '.join(sorted(missing))}")
    received = pd.to_datetime(df["received_at"], errors="coerce")
    if received.isna().any():
        raise DemoError(f"{corpus}: row {int(received.isna().idxmax()) + 2}: received_at is not a time")
    since = received.max() - timedelta(weeks=weeks)
    chosen = df[received > since].assign(_t=received[received > since]).sort_values(["_t", "id"])
    return [_body(row) for row in chosen.to_dict("records")]


def _body(row: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {"external_id": row["id"], "text": row["text"], "channel": row["channel"],
                            "branch": row["branch"], "received_at": row["received_at"]}
    if row.get("customer_ref"):
        body["customer_ref"] = row["customer_ref"]
    if row.get("repeat_count"):
        body["repeat_count"] = int(float(row["repeat_count"]))
    if row.get("amount"):
        body["amount"] = float(row["amount"])
    return body


def replay(client: httpx.Client, key: str, items: list[dict[str, Any]], *, flush: bool = True) -> DemoReport:
    """POST the items in batches, then ask the service to issue the pending letters now."""
    headers = {"Authorization": f"Bearer {key}"}
    report = DemoReport()
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        r = client.post("/v1/complaints/batch", json={"items": chunk}, headers=headers)
        if r.status_code not in (200, 201):
            raise DemoError(f"intake answered {r.status_code}: {_message(r)}")
        answer = r.json()
        report.sent += len(chunk)
        report.created += answer["created"]
        report.existing += answer["existing"]
        report.alerts += sum(1 for i in answer["items"] if i["alert"] and i["created"])
    if flush:
        r = client.post("/v1/letters/flush", headers=headers)
        if r.status_code == 200:
            report.letters_issued = r.json()["letters"]
        elif r.status_code == 403:
            report.notes.append("the key may not issue letters now (admin or protection can); they go out when "
                                "the service's worker closes the grouping window")
        else:
            raise DemoError(f"flushing letters answered {r.status_code}: {_message(r)}")
    r = client.get("/v1/letters", params={"limit": 5}, headers=headers)
    if r.status_code == 200:
        report.letters_total = r.json()["total"]
        report.first_letters = r.json()["items"]
    return report


def _message(r: httpx.Response) -> str:
    try:
        return r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return r.text[:200]


@contextlib.contextmanager
def in_process(settings) -> Iterator[tuple[httpx.Client, str]]:
    """The app on the configured database, with an admin key made for this run and revoked after."""
    import secrets

    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.auth import create_key, revoke_key
    from service.db import Database

    db = Database(settings.database_url)
    db.upgrade()
    name = f"demo-replay-{secrets.token_hex(4)}"
    with db.transaction() as session:
        _, key = create_key(session, name, "admin")
    try:
        app = create_app(settings, database=db)
        with TestClient(app, base_url=settings.public_url) as client:
            if app.state.model.version is None:
                raise DemoError("no model is trained yet: run `make train` (or `xiaobao train --data "
                                f"{DEFAULT_CORPUS} --promote`) first")
            yield client, key
    finally:
        with db.transaction() as session:
            revoke_key(session, name=name)
        db.dispose()
