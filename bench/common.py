"""Helpers shared by the benchmark scripts: where the data is, how results are written."""

from __future__ import annotations

import json
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def shared(relative: str) -> Path | None:
    """A shared benchmark file, or None with a message when the folder is absent."""
    path = SHARED / relative
    if not path.is_file():
        print(f"skip: {path} is absent (shared benchmark data lives outside the repository)", file=sys.stderr)
        return None
    return path


def machine() -> dict[str, Any]:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine(),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds")}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **result}, ensure_ascii=False, indent=2), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)
    return path


def median_seconds(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def replace_readme_block(name: str, markdown: str, readme: Path = ROOT / "README.md") -> None:
    """Put `markdown` between <!-- bench:NAME --> markers in the README (added at the end if absent)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = readme.read_text(encoding="utf-8")
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")
