"""`python -m bench.service`: the service under load on loopback, on SQLite and PostgreSQL, each
figure beside a baseline measured in the same run.

- intake and predict latency and throughput with 50 clients: closed loop (saturation: each client
  sends again as soon as it is answered) and open loop (50 clients × 1 request a second, latency
  from the scheduled send time); issue 3's targets are intake p99 ≤ 50 ms and predict p99 ≤ 25 ms;
- baselines: a bare FastAPI endpoint under the same uvicorn and load generator (the HTTP floor),
  and `bundle.predict` in process (the model alone);
- batch scoring through POST /v1/predict (1,000 texts) against the bundle in process;
- cold start (process start to the first /readyz 200) and resident memory per uvicorn worker,
  against a bare FastAPI process.

The load generator (bench/loadgen.py) runs on the same 2 cores as the server: what it spends, the
server does not get. The machine's load average is recorded with the figures. Writes
bench/results/service.json and the README's bench:service table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import ROOT, replace_readme_block, write_result
from bench.harness import Server, database, make_key, running, service_env
from bench.loadgen import Workload, run_sync

CORPUS = ROOT / "data" / "demo" / "demo_corpus.csv"
BARE_APP = '''
from fastapi import FastAPI
app = FastAPI()

@app.post("/v1/predict")
def predict(body: dict) -> dict:
    return {"ok": True}

@app.get("/readyz")
def readyz() -> dict:
    return {"status": "ready"}
'''


def current_registry():
    """The registry of the environment's model settings (XIAOBAO_REGISTRY, default models/registry)."""
    from models.registry import Registry
    from models.settings import ModelSettings

    registry = Registry.from_settings(ModelSettings.from_env())
    registry.load("current")  # fails early, with the reason, when there is no usable model
    return registry


def bare_server(scratch: Path, workers: int) -> Server:
    """The bare FastAPI app under the same uvicorn settings as the service."""
    (scratch / "bare_app.py").write_text(BARE_APP, encoding="utf-8")
    server = Server({**os.environ, "PYTHONPATH": str(scratch)}, scratch / "bare.log")
    server.args = [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1", "--port", str(server.port),
                   "--workers", str(workers), "--log-level", "warning", "--http", "httptools", "--loop", "uvloop"]
    return server


def in_process_predict(rows: list[dict], registry, n: int = 400) -> dict[str, float]:
    bundle = registry.load("current")
    texts = [r["text"] for r in rows[:n]]
    times = []
    for text in texts:
        t0 = time.perf_counter()
        bundle.predict([text], [{"channel": "电话客服"}], explain=True)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    t0 = time.perf_counter()
    batch = [r["text"] for r in rows[:1000]]
    bundle.predict(batch, [{}] * len(batch), explain=True)
    batch_s = time.perf_counter() - t0
    return {"p50_ms": round(times[len(times) // 2], 3), "p99_ms": round(times[int(len(times) * 0.99)], 3),
            "batch_1000_texts_per_s": round(len(batch) / batch_s, 1)}


def run_load(url: str, rows: list[dict], key: str, op: str, *, clients: int, seconds: float,
             rate: float | None) -> dict[str, Any]:
    work = Workload(rows, key, replay_share=0.0)
    report = run_sync(url, work, clients=clients, seconds=seconds, weights={op: 1.0}, rate_per_client=rate)
    summary = report.summary()
    return {"clients": clients, "rate_per_client": rate, "errors": summary["errors"], **summary["ops"][op]}


def batch_over_http(url: str, key: str, rows: list[dict]) -> float:
    import httpx

    items = [{"text": r["text"]} for r in rows[:1000]]
    with httpx.Client(base_url=url, timeout=120) as client:
        client.post("/v1/predict", json={"items": items[:10]}, headers={"Authorization": f"Bearer {key}"})
        t0 = time.perf_counter()
        r = client.post("/v1/predict", json={"items": items}, headers={"Authorization": f"Bearer {key}"})
        r.raise_for_status()
        return round(len(items) / (time.perf_counter() - t0), 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", default="sqlite,postgresql")
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--rate", type=float, default=1.0, help="open loop: requests a second per client")
    p.add_argument("--workers", type=int, default=2, help="uvicorn workers (one per core)")
    args = p.parse_args(argv)
    rows = pd.read_csv(CORPUS, dtype=str, keep_default_na=False).to_dict("records")
    models = current_registry()
    registry = models.root
    result: dict[str, Any] = {"load_average_start": os.getloadavg(), "uvicorn_workers": args.workers,
                              "clients": args.clients, "seconds": args.seconds, "open_rate_per_client": args.rate,
                              "in_process": in_process_predict(rows, models), "backends": {}}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        bare = bare_server(scratch, args.workers)
        with running(bare.start()):
            bare_cold = bare.wait_ready()
            bare_rss = bare.rss_mb()
            base = {}
            for mode, rate in (("closed", None), ("open", args.rate)):
                base[mode] = run_load(bare.url, rows, "none", "predict", clients=args.clients, seconds=args.seconds,
                                      rate=rate)
        result["bare_fastapi"] = {"cold_start_s": round(bare_cold, 2), "rss_mb": [round(x) for x in bare_rss],
                                  **base}
        for backend in [b for b in args.backends.split(",") if b]:
            with database(backend, scratch) as url:
                key = make_key(url)
                env = service_env(url, registry, rate_limit_per_second=1_000_000, digest_schedule="off")
                server = Server(env, scratch / f"{backend}.log", workers=args.workers)
                with running(server.start()):
                    cold = server.wait_ready()
                    rss = server.rss_mb()
                    figures: dict[str, Any] = {"cold_start_s": round(cold, 2), "rss_mb": [round(x) for x in rss]}
                    for op in ("predict", "intake"):
                        for mode, rate in (("closed", None), ("open", args.rate)):
                            figures[f"{op}_{mode}"] = run_load(server.url, rows, key, op, clients=args.clients,
                                                               seconds=args.seconds, rate=rate)
                    figures["batch_http_texts_per_s"] = batch_over_http(server.url, key, rows)
                    figures["rss_mb_after"] = [round(x) for x in server.rss_mb()]
                result["backends"][backend] = figures
    result["load_average_end"] = os.getloadavg()
    path = write_result("service", result)
    markdown = table(json.loads(path.read_text(encoding="utf-8")))
    replace_readme_block("service", markdown)
    replace_readme_block("service", markdown, readme=ROOT / "bench" / "README.md")
    return result


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f} ms"


def table(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    bare, local = r["bare_fastapi"], r["in_process"]
    n, rate = r["clients"], r["open_rate_per_client"]
    rows = [f"{n} clients on loopback, {r['uvicorn_workers']} uvicorn workers, {r['seconds']:.0f} s per run; "
            f"closed loop = as fast as answers come, open loop = {n} × {rate:g} request/s with latency from the "
            "scheduled send. The load generator shares the 2 cores with the server. Load average "
            f"{r['load_average_start'][0]:.2f} at the start, {r['load_average_end'][0]:.2f} at the end.", "",
            "| measure | SQLite | PostgreSQL | baseline, same run | target |", "|---|---|---|---|---|"]
    backs = r["backends"]

    def cell(backend: str, key: str, what: str) -> str:
        f = backs.get(backend, {}).get(key)
        if not f:
            return "–"
        if what == "lat":
            return f"p50 {_ms(f['p50_ms'])} · p95 {_ms(f['p95_ms'])} · p99 {_ms(f['p99_ms'])}"
        return f"{f['per_second']:,.0f} req/s" + (f" ({f['errors']} errors)" if f["errors"] else "")

    for op, target in (("predict", "p99 ≤ 25 ms"), ("intake", "p99 ≤ 50 ms")):
        for mode in ("closed", "open"):
            label = f"{op} {'saturation (closed loop)' if mode == 'closed' else f'{n} × {rate:g}/s (open loop)'}"
            b = bare[mode]
            base = (f"bare FastAPI p50 {_ms(b['p50_ms'])} · p99 {_ms(b['p99_ms'])}, {b['per_second']:,.0f} req/s"
                    if op == "predict" else "")
            rows.append(f"| {label}: latency | {cell('sqlite', f'{op}_{mode}', 'lat')} | "
                        f"{cell('postgresql', f'{op}_{mode}', 'lat')} | {base} | {target} |")
            rows.append(f"| {label}: throughput | {cell('sqlite', f'{op}_{mode}', 'tput')} | "
                        f"{cell('postgresql', f'{op}_{mode}', 'tput')} | | |")
    rows.append(f"| model alone, one text (in process) | | | p50 {local['p50_ms']:.2f} ms · p99 {local['p99_ms']:.2f} ms"
                " (bundle.predict with explanations) | |")
    def value(backend: str, key: str, fmt: str) -> str:
        v = backs.get(backend, {}).get(key)
        return "–" if v is None else fmt.format(v)

    rows.append(f"| batch scoring, 1,000 texts in one POST /v1/predict | "
                f"{value('sqlite', 'batch_http_texts_per_s', '{:,.0f} texts/s')} | "
                f"{value('postgresql', 'batch_http_texts_per_s', '{:,.0f} texts/s')} | "
                f"{local['batch_1000_texts_per_s']:,.0f} texts/s in process | |")
    rows.append(f"| cold start (process start → /readyz 200) | {value('sqlite', 'cold_start_s', '{:.2f} s')} | "
                f"{value('postgresql', 'cold_start_s', '{:.2f} s')} | bare FastAPI {bare['cold_start_s']:.2f} s | |")

    def rss(backend: str) -> str:
        values = backs.get(backend, {}).get("rss_mb_after") or []
        return f"{statistics.median(values[1:]):.0f} MB" if len(values) > 1 else "–"

    bare_rss = bare["rss_mb"]
    rows.append(f"| memory per uvicorn worker (RSS, after the runs) | {rss('sqlite')} | {rss('postgresql')} | bare FastAPI "
                f"{statistics.median(bare_rss[1:]) if len(bare_rss) > 1 else bare_rss[0]:.0f} MB | |")
    stamp = m.get("measured_at", "")
    return "\n".join(rows) + f"\n\nMeasured {stamp} on {m.get('cpus', '?')} cores (`python -m bench.service`)."


if __name__ == "__main__":
    main()
