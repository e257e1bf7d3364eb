"""`python -m bench.proof`: after `make proof`'s pytest run, sums the fuzzer's per-test lines
(bench/results/proof-fuzz.jsonl) into bench/results/proof-fuzz.json (cases per operation, answers
by status, failures), prints every proof result found, and writes their table into bench/README.md."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from typing import Any

from bench.common import RESULTS, ROOT, replace_readme_block, write_result


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def table() -> str:
    """The proofs' figures as a markdown table for bench/README.md; a proof not run yet shows as such."""
    rows = ["| proof | result | measured |", "|---|---|---|"]

    def add(name: str, what: str, text: Any) -> None:
        r = _load(name)
        rows.append(f"| {what} | {text(r) if r else 'not run yet'} | {r['machine']['measured_at'] if r else '–'} |")

    add("proof-fuzz", "schema fuzzing (schemathesis)",
        lambda r: f"{r['cases']:,} cases over {r['operations']} operations, at least {r['min_cases_per_operation']:,} "
                  f"for each that takes input ({', '.join(r.get('operations_without_input', [])) or 'none'} take none: "
                  f"one request per run), {r['failures']} failures")

    def load(r: dict) -> str:
        a, i = r["all"], r["ops"]["intake"]
        return (f"{r['clients']} clients × {r['seconds']:.0f} s, {r['uvicorn_workers']} uvicorn workers, PostgreSQL: "
                f"{r['requests']:,} requests ({r['per_second']:.0f}/s), {r['errors']} errors; p50 {a['p50_ms']:.0f} ms · "
                f"p95 {a['p95_ms']:.0f} ms · p99 {a['p99_ms']:.0f} ms (saturated: closed loop on 2 cores); "
                f"{i['statuses'].get('201', 0):,} intake 201s, {r['stored']:,} complaints stored")

    add("proof-load", "load, mixed intake/predict/list", load)
    add("proof-crash", "kill -9 during intake",
        lambda r: f"{r['acked_before_kill']} answered before the kill, {r['unanswered_then_resent']} unanswered and "
                  f"resent; {r['complaints']:,} complaints stored once each, {r['letters']} letters numbered "
                  f"gaplessly, {r['emails']} e-mail messages ({r['email_deliveries_raw']} SMTP deliveries), "
                  f"{r['webhooks']} webhooks acted on {r['webhooks_acted_on']} times "
                  f"({r['webhook_deliveries_raw']} raw deliveries; a repeat is dropped by its idempotency key)")
    add("proof-outages", "SMTP and webhook receiver down, then back",
        lambda r: f"{r['outage_s']} s outage: {r['emails']} e-mails delivered with {r['email_deliveries_raw']} "
                  f"deliveries, {r['webhooks_card']} webhooks with {r['webhook_deliveries_raw_card']}; "
                  f"{r['dead']} messages to the receiver that never recovers dead-lettered")
    add("proof-multiworker", "4 uvicorn + 2 outbox workers, PostgreSQL",
        lambda r: f"{r['complaints']} complaints, {r['alerts']} alerts (one per dedup key), {r['letters']} letters "
                  f"numbered gaplessly, {r['emails']} e-mails and {r['webhooks']} webhooks delivered once each")
    return "\n".join(rows)


def main() -> None:
    lines = RESULTS / "proof-fuzz.jsonl"
    if lines.is_file():
        per_op: dict[str, Counter] = defaultdict(Counter)
        statuses: dict[str, Counter] = defaultdict(Counter)
        failures = 0
        for line in lines.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            per_op[r["operation"]][f"{r['backend']}/{r['auth']}"] += r["cases"]
            statuses[r["operation"]].update(r["statuses"])
            failures += r["failures"]
        ops = {op: {"cases": sum(c.values()), "by_backend_and_auth": dict(c), "statuses": dict(statuses[op])}
               for op, c in sorted(per_op.items())}
        # An operation without parameters or body (/healthz, say) has one possible request per run.
        fixed = sorted(op for op, c in per_op.items() if max(c.values()) <= 1)
        write_result("proof-fuzz", {"operations": len(ops), "cases": sum(o["cases"] for o in ops.values()),
                                    "min_cases_per_operation": min(o["cases"] for op, o in ops.items()
                                                                   if op not in fixed),
                                    "operations_without_input": fixed,
                                    "failures": failures, "per_operation": ops})
        lines.unlink()
    for path in sorted(RESULTS.glob("proof-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("per_operation", None)
        print(f"{path.name}: {json.dumps(data, ensure_ascii=False)[:1500]}")
    replace_readme_block("proof", table(), readme=ROOT / "bench" / "README.md")


if __name__ == "__main__":
    main()
