"""`python -m bench.letters`: a grouping window of 100 alerts turned into its 投诉风险提示函 (issue 3's
target: ≤ 1 s), on SQLite and PostgreSQL.

Through the API in process: 100 regulator referrals (每件监管转办 raises an alert) from 100 customers
land in one department's open window; then `POST /v1/letters/flush` is timed: the letter number, its
100 items, the HTML and plain-text renderings, the outbox messages and the events, in one transaction.
Baseline in the same run: the flush of a window holding a single alert, so the difference is what the
99 further alerts cost. Median of 5 windows each. Writes bench/results/letters.json and the README's
bench:letters table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from fastapi.testclient import TestClient

from bench.common import ROOT, replace_readme_block, write_result
from bench.harness import database, make_key

CORPUS = ROOT / "data" / "demo" / "demo_corpus.csv"


def one_department_routing(folder: Path) -> Path:
    """The shipped routing without its routes: every alert goes to the default receiver, so the whole
    window is one letter whatever the model predicts."""
    from service.routing import default_path

    raw = yaml.safe_load(default_path().read_text(encoding="utf-8"))
    raw["routes"] = []
    path = folder / "routing-one-department.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), encoding="utf-8")
    return path


def time_windows(url: str, routing: Path, texts: list[str], sizes: tuple[int, ...], repeat: int) -> dict[str, Any]:
    from service.app import create_app
    from service.clock import ManualClock
    from service.settings import Settings

    key = make_key(url)  # also migrates the database
    clock = ManualClock(datetime.now(UTC))
    settings = Settings(database_url=url, routing_file=routing, group_window_minutes=60, rate_limit_per_second=0,
                        digest_schedule="off")
    headers = {"Authorization": f"Bearer {key}"}
    out: dict[str, Any] = {}
    n = 0
    with TestClient(create_app(settings, clock=clock)) as client:
        for size in sizes:
            seconds, items = [], []
            for _ in range(repeat):
                for _ in range(size):
                    n += 1
                    body = {"external_id": f"bench-letter-{n}", "text": texts[n % len(texts)], "channel": "监管转办",
                            "branch": "城东支行", "customer_ref": f"BL{n:06d}",
                            "received_at": clock.now().isoformat()}
                    r = client.post("/v1/complaints", json=body, headers=headers)
                    if r.status_code != 201 or not r.json()["alert"]:
                        raise SystemExit(f"bench.letters: intake gave {r.status_code} without an alert: {r.text[:200]}")
                t0 = time.perf_counter()
                r = client.post("/v1/letters/flush", headers=headers)
                seconds.append(time.perf_counter() - t0)
                r.raise_for_status()
                [number] = r.json()["letters"]
                newest = client.get("/v1/letters", headers=headers, params={"limit": 1}).json()["items"]
                letter = client.get(f"/v1/letters/{newest[0]['id']}", headers=headers).json()
                assert letter["number"] == number
                items.append(len(letter["items"]))
                clock.advance(minutes=61)
            out[str(size)] = {"median_s": round(statistics.median(seconds), 4),
                              "runs_s": [round(s, 4) for s in seconds], "items_per_letter": items}
    return out


def table(r: dict[str, Any]) -> str:
    rows = ["| window | SQLite | PostgreSQL | target |", "|---|---|---|---|"]
    for size, label, target in (("100", "100 alerts → one letter (flush, render HTML + text, queue)", "≤ 1 s"),
                                ("1", "baseline, same run: 1 alert → one letter", "")):
        cells = []
        for backend in ("sqlite", "postgresql"):
            f = r["backends"].get(backend, {})
            cells.append(f"{f[size]['median_s'] * 1000:.0f} ms" if size in f else f.get("skipped", "–"))
        rows.append(f"| {label} | {cells[0]} | {cells[1]} | {target} |")
    rows.append("")
    rows.append(f"Median of {r['repeat']} windows each, through `POST /v1/letters/flush` in process; "
                f"measured {r['machine']['measured_at']} on {r['machine']['cpus']} cores (`python -m bench.letters`).")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    texts = pd.read_csv(CORPUS, dtype=str, keep_default_na=False)["text"].tolist()[:500]
    result: dict[str, Any] = {"repeat": args.repeat, "backends": {}}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        routing = one_department_routing(scratch)
        for backend in [b for b in args.backends.split(",") if b]:
            try:
                with database(backend, scratch) as url:
                    result["backends"][backend] = time_windows(url, routing, texts, (100, 1), args.repeat)
            except Exception as exc:  # PostgreSQL not reachable: say so, keep the rest
                if backend != "postgresql":
                    raise
                print(f"skip PostgreSQL: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
                result["backends"][backend] = {"skipped": "PostgreSQL unreachable"}
    path = write_result("letters", result)
    replace_readme_block("letters", table(json.loads(path.read_text(encoding="utf-8"))))
    return result


if __name__ == "__main__":
    main()
