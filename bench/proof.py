"""`python -m bench.proof`: after `make proof`'s pytest run, sums the fuzzer's per-test lines
(bench/results/proof-fuzz.jsonl) into bench/results/proof-fuzz.json (cases per operation, answers
by status, failures) and prints every proof result found."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

from bench.common import RESULTS, write_result


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
        write_result("proof-fuzz", {"operations": len(ops), "cases": sum(o["cases"] for o in ops.values()),
                                    "min_cases_per_operation": min(o["cases"] for o in ops.values()),
                                    "failures": failures, "per_operation": ops})
        lines.unlink()
    for path in sorted(RESULTS.glob("proof-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        data.pop("per_operation", None)
        print(f"{path.name}: {json.dumps(data, ensure_ascii=False)[:1500]}")


if __name__ == "__main__":
    main()
