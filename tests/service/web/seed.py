"""Demo requests for the console tests, sent through the intake API so that alerts and letters come
about as in production: regulator referrals (监管转办) always raise an alert, and with
XIAOBAO_GROUP_WINDOW_MINUTES=0 each alert gets its letter inside the intake transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

SEED_ROWS = 48
REFERRAL_EVERY = 4  # every 4th request comes as a regulator referral: enough letters for every page


def seed_bodies(corpus: pd.DataFrame, now: datetime | None = None, rows: int = SEED_ROWS) -> list[dict[str, Any]]:
    """`rows` demo requests received over the last 20 days (the oldest letters are overdue by now),
    every REFERRAL_EVERY-th sent as a referral; each with its own customer so nothing is deduplicated."""
    now = now or datetime.now(UTC)
    sample = corpus.sample(n=rows, random_state=7).reset_index(drop=True)
    bodies = []
    for i, row in sample.iterrows():
        received = now - timedelta(days=20) + timedelta(hours=int(i) * 20 * 24 / rows)
        bodies.append({
            "external_id": f"WEB-{i:03d}", "text": row["text"],
            "channel": "监管转办" if i % REFERRAL_EVERY == 0 else row["channel"], "branch": row["branch"],
            "received_at": received.isoformat(), "customer_ref": f"C9{int(i):07d}",
            "repeat_count": int(row["repeat_count"]) if row["repeat_count"] else None,
            "amount": float(row["amount"]) if row["amount"] else None})
    return bodies


def seed(post: Callable[[dict[str, Any]], dict[str, Any]], corpus: pd.DataFrame, **kw: Any) -> list[dict[str, Any]]:
    """Submits the requests one by one (as a bank's intake would) and returns the intake answers."""
    return [post(body) for body in seed_bodies(corpus, **kw)]
