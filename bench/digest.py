"""`python -m bench.digest`: the weekly digest for 10,000 complaints, on SQLite and PostgreSQL.

The demo corpus (3,660 requests over 30 weeks) is scored once by the registry's current model and
replicated with shifted ids and dates (each copy 30 weeks earlier) to 10,000 requests over about 90
weeks, so year-on-year has data. Closing times, alerts and letters (with acknowledgements, some late)
are added from a seeded generator. Each database is a throw-away one: a SQLite file in a temporary
folder, and a PostgreSQL database created on XIAOBAO_BENCH_PG_URL's server and dropped afterwards
(skipped with a message when the server does not answer).

Two shapes of the same 10,000 requests: "spread" (as above, about 130 in the digest's week) and
"dense" (70% of them received in the digest's week, the rest in the 4 weeks before), where every
section has thousands of rows to aggregate. Timed (median of 5, each in a fresh session): building
the digest of the last corpus week, and building plus rendering it as json, html (five matplotlib
charts), text and xlsx. Target: ≤ 5 s. Writes bench/results/digest.json and the README table.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import create_engine, insert, text

from bench.common import ROOT, replace_readme_block, write_result
from service.db import Database
from service.digest.build import Reference, build_digest
from service.digest.render import render
from service.digest.weeks import Week, week_of
from service.tables import Alert, Complaint, Letter

CORPUS = ROOT / "data" / "demo" / "demo_corpus.csv"
PG_SERVER = os.environ.get("XIAOBAO_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ZONE_NAME = "Asia/Shanghai"
FORMATS = ("json", "html", "text", "xlsx")
COPY_SHIFT = timedelta(weeks=30)
# Departments by category for the synthetic alerts (the routing file's job in the service).
DEPARTMENTS = {"信用卡": "信用卡中心", "个人贷款": "个人信贷部", "借记卡": "个人金融部", "人民币储蓄": "个人金融部",
               "支付结算": "运营管理部", "自营理财": "财富管理部", "银行代理业务": "财富管理部",
               "个人金融信息": "信息科技部", "人民币管理": "运营管理部", "外汇": "国际业务部"}


def current_registry(scratch: Path):
    """The registry whose current model scores the corpus: the project's, or, when it has no model
    this code can load, one trained on the demo corpus in `scratch`."""
    from models.registry import ModelLoadError, Registry
    from models.settings import ModelSettings

    registry = Registry.from_settings(ModelSettings.from_env())
    try:
        registry.load("current")
        return registry
    except ModelLoadError as exc:
        print(f"the registry's current model does not load ({exc}); training one in {scratch}", file=sys.stderr)
    from training.data import load_dataset
    from training.fit import TrainParams
    from training.pipeline import promote, train

    registry = Registry(scratch)
    promote(registry, train(load_dataset(CORPUS), TrainParams(), registry).version)
    return registry


def score_corpus(corpus: pd.DataFrame, registry) -> list[dict[str, Any]]:
    """The current model's whole prediction (with phrases) for every corpus row."""
    bundle = registry.load("current")
    fields = [{"channel": r.channel, "repeat_count": int(r.repeat_count) if r.repeat_count else None,
               "amount": float(r.amount) if r.amount else None} for r in corpus.itertuples()]
    return bundle.predict(corpus["text"].tolist(), fields, explain=True)


def synthetic(corpus: pd.DataFrame, predictions: list[dict[str, Any]], n: int, now: datetime,
              seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Rows for complaints, alerts and letters: the newest `n` of the corpus replicated backwards."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(ZONE_NAME)
    rng = np.random.default_rng(seed)
    received = [datetime.fromisoformat(t).replace(tzinfo=zone).astimezone(UTC) for t in corpus["received_at"]]
    order = sorted(range(len(corpus)), key=lambda i: received[i], reverse=True)
    complaints: list[dict[str, Any]] = []
    copy = 0
    while len(complaints) < n:
        for i in order:
            if len(complaints) >= n:
                break
            row, pred = corpus.iloc[i], predictions[i]
            at = received[i] - copy * COPY_SHIFT
            days = float(rng.gamma(2.0, 5.0))  # median about 8 days; a long tail past 15 and 30
            closed = at + timedelta(days=days)
            is_closed = rng.random() > 0.08 and closed < now
            complaints.append({
                "id": len(complaints) + 1, "external_id": f"SYN{copy}-{row['id']}", "text_masked": row["text"],
                "channel": row["channel"], "branch": row["branch"], "received_at": at,
                "customer_ref": row["customer_ref"] or None, "product": None,
                "amount": Decimal(row["amount"]) if row["amount"] else None,
                "repeat_count": int(row["repeat_count"]) if row["repeat_count"] else None,
                "prediction": pred, "model_version": pred["model_version"],
                "category": pred["category"]["label"], "category_probability": pred["category"]["probability"],
                "cause": pred["cause"]["label"], "cause_probability": pred["cause"]["probability"],
                "risk_score": pred["risk"]["score"], "risk_level": pred["risk"]["level"],
                "needs_review": pred["needs_review"], "status": "closed" if is_closed else "open",
                "closed_at": closed if is_closed else None, "alert_id": None, "created_at": at, "updated_at": at})
        copy += 1
    alerts, letters = [], []
    letter_of: dict[tuple[str, str], dict[str, Any]] = {}
    seq: dict[int, int] = defaultdict(int)
    for c in complaints:
        if c["risk_level"] != "高":
            continue
        department = DEPARTMENTS.get(c["category"], "消费者权益保护部")
        key = (department, c["received_at"].date().isoformat())
        letter = letter_of.get(key)
        if letter is None:
            issued = c["received_at"] + timedelta(hours=1)
            year = issued.year
            seq[year] += 1
            acked = issued + timedelta(days=float(rng.uniform(0.2, 3.5)))
            resolved = issued + timedelta(days=float(rng.uniform(3, 25)))
            letter = {"id": len(letters) + 1, "year": year, "seq": seq[year],
                      "number": f"〔{year}〕第{seq[year]:04d}号", "department": department, "status": "issued",
                      "group_key": f"{department}|{key[1]}", "risk_level": "高", "issued_at": issued,
                      "ack_due_at": issued + timedelta(days=2), "response_due_at": issued + timedelta(days=15),
                      "acknowledged_at": acked if rng.random() < 0.8 and acked < now else None,
                      "resolved_at": resolved if rng.random() < 0.7 and resolved < now else None,
                      "created_at": issued, "updated_at": issued}
            if letter["resolved_at"]:
                letter["status"] = "resolved"
            elif letter["acknowledged_at"]:
                letter["status"] = "acknowledged"
            letter_of[key] = letter
            letters.append(letter)
        alert = {"id": len(alerts) + 1, "dedup_key": f"{c['external_id']}|{c['category']}|{c['cause']}",
                 "status": "open", "reason": "risk_level", "department": department,
                 "customer_ref": c["customer_ref"], "category": c["category"], "cause": c["cause"],
                 "branch": c["branch"], "risk_score": c["risk_score"], "risk_level": "高", "occurrences": 1,
                 "letter_id": letter["id"], "opened_at": c["received_at"], "last_seen_at": c["received_at"],
                 "updated_at": c["received_at"]}
        alerts.append(alert)
        c["alert_id"] = alert["id"]
    return {"complaints": complaints, "alerts": alerts, "letters": letters}


def squeeze(data: dict[str, list[dict[str, Any]]], week: Week, now: datetime, seed: int = 1) -> None:
    """The dense case: 70% of the requests received in the digest's week, the rest in the 4 weeks
    before it (the phrase baseline), closing times drawn again."""
    rng = np.random.default_rng(seed)
    for c in data["complaints"]:
        offset = rng.uniform(0, 7) if rng.random() < 0.7 else -rng.uniform(0, 28)
        c["received_at"] = c["created_at"] = c["updated_at"] = week.start + timedelta(days=float(offset))
        if c["closed_at"] is not None:
            closed = c["received_at"] + timedelta(days=float(rng.gamma(2.0, 5.0)))
            c["closed_at"], c["status"] = (closed, "closed") if closed < now else (None, "open")


def load(db: Database, data: dict[str, list[dict[str, Any]]]) -> None:
    with db.transaction() as session:
        for table, rows in ((Letter, data["letters"]), (Alert, data["alerts"]), (Complaint, data["complaints"])):
            for i in range(0, len(rows), 2000):
                session.execute(insert(table), rows[i:i + 2000])


def time_digest(db: Database, week: Week, reference: Reference, now: datetime, repeat: int) -> dict[str, Any]:
    def build():
        with db.reading() as session:
            return build_digest(session, week, reference=reference, now=now)

    out: dict[str, Any] = {}
    digest = build()  # warm-up: query plans, matplotlib's font cache
    render(digest, "html")
    for fmt in ("build", *FORMATS):
        times, size = [], 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            d = build()
            if fmt != "build":
                size = len(render(d, fmt))
            times.append(time.perf_counter() - t0)
        out[fmt] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3),
                    **({"bytes": size} if size else {})}
        print(f"  {fmt:<6} median {out[fmt]['median_s']:.3f} s", file=sys.stderr)
    out["figures"] = {"week": digest.week, "this_week": digest.volume.this_week,
                      "yoy_pct": digest.volume.year_on_year.change_pct, "high_risk": digest.high_risk.total,
                      "letters_overdue": digest.letters.overdue, "psi": digest.model_health.psi,
                      "topics": [t.phrase for t in digest.topics.items[:5]]}
    return out


def table(r: dict[str, Any]) -> str:
    """The README table: median seconds per scenario, backend and format, against the 5 s target."""
    columns = [(sc, b) for sc, v in r["scenarios"].items() for b, res in v["backends"].items() if "skipped" not in res]
    names = {"spread": f"{r['rows']:,} over 90 weeks", "dense": f"{r['rows']:,}, 70% in the week"}
    rows = [f"| digest of {r['week']} | " + " | ".join(f"{b}, {names.get(sc, sc)}" for sc, b in columns)
            + " | target |", "|---" * (len(columns) + 2) + "|"]
    for fmt, label in (("build", "figures only (SQL + arithmetic)"), ("json", "JSON"),
                       ("html", "HTML with 5 charts"), ("text", "plain text"), ("xlsx", "xlsx with charts")):
        cells = [f"{r['scenarios'][sc]['backends'][b][fmt]['median_s']:.2f} s" for sc, b in columns]
        rows.append(f"| {label} | " + " | ".join(cells) + " | ≤ 5 s |")
    weekly = [f"{sc}: {r['scenarios'][sc]['backends'][b]['figures']['this_week']:,}" for sc, b in columns
              if b == columns[0][1]]
    skipped = [f"{sc}/{b}: {res['skipped']}" for sc, v in r["scenarios"].items()
               for b, res in v["backends"].items() if "skipped" in res]
    note = f" Skipped: {'; '.join(skipped)}." if skipped else ""
    return ("\n".join(rows) + f"\n\nRequests in the digest's week: {', '.join(weekly)}. Median of {r['repeat']}, "
            f"each a fresh session; measured {r['machine']['measured_at']} on {r['machine']['cpus']} cores.{note}")


def _postgres() -> tuple[str, Any] | None:
    name = f"xiaobao_bench_{os.getpid()}_{secrets.token_hex(3)}"
    server = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any driver error: the server is not there
        server.dispose()
        print(f"skip PostgreSQL: {PG_SERVER} does not answer ({type(exc).__name__})", file=sys.stderr)
        return None
    return PG_SERVER.rsplit("/", 1)[0] + "/" + name, (server, name)


def run_backend(backend: str, data: dict[str, list[dict[str, Any]]], week: Week, reference: Reference,
                now: datetime, repeat: int) -> dict[str, Any]:
    """Load `data` into a throw-away database of `backend` and time the digest there."""
    cleanup, folder = None, None
    if backend == "sqlite":
        folder = tempfile.TemporaryDirectory()
        url = f"sqlite:///{Path(folder.name) / 'digest.db'}"
    else:
        pg = _postgres()
        if pg is None:
            return {"skipped": f"{PG_SERVER} unreachable"}
        url, cleanup = pg
    db = Database(url)
    try:
        db.upgrade()
        t0 = time.perf_counter()
        load(db, data)
        print(f"{backend}: loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return time_digest(db, week, reference, now, repeat)
    finally:
        db.dispose()
        if cleanup:
            server, name = cleanup
            with server.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            server.dispose()
        if folder is not None:
            folder.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    if not CORPUS.is_file():
        from training.demo_corpus import main as build_corpus

        build_corpus([])
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(ZONE_NAME)
    corpus = pd.read_csv(CORPUS, dtype=str, keep_default_na=False)
    last = max(datetime.fromisoformat(t) for t in corpus["received_at"]).replace(tzinfo=zone)
    week = week_of(last, zone)
    now = week.end + timedelta(hours=8)  # Monday 08:00, when the scheduled digest goes out
    scratch = tempfile.TemporaryDirectory()
    registry = current_registry(Path(scratch.name))
    t0 = time.perf_counter()
    predictions = score_corpus(corpus, registry)
    print(f"scored the corpus in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    reference = Reference.from_registry(registry)
    results: dict[str, Any] = {"rows": args.rows, "week": week.label, "repeat": args.repeat, "target_s": 5.0,
                               "scenarios": {}}
    for scenario in ("spread", "dense"):
        data = synthetic(corpus, predictions, args.rows, now)
        if scenario == "dense":
            squeeze(data, week, now)
        print(f"{scenario}: {len(data['complaints'])} complaints, {len(data['alerts'])} alerts, "
              f"{len(data['letters'])} letters; digest of {week.label}", file=sys.stderr)
        results["scenarios"][scenario] = {"alerts": len(data["alerts"]), "letters": len(data["letters"]),
                                          "backends": {}}
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            results["scenarios"][scenario]["backends"][backend] = run_backend(backend, data, week, reference, now,
                                                                              args.repeat)
    path = write_result("digest", results)
    replace_readme_block("digest", table(json.loads(path.read_text(encoding="utf-8"))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
