"""A small asyncio load generator: HTTP/1.1 keep-alive connections written by hand (a few tens of
microseconds of client CPU per request, where httpx spends about a millisecond: on 2 cores shared
with the server, the client's cost is the server's loss), closed or open loop.

- closed loop: each client sends its next request when the previous answer arrives (saturation);
- open loop: each client sends on a fixed schedule (`rate` requests a second, phase-shifted), and
  latency counts from the scheduled time, so a slow server is not flattered by a client that waits
  for it (no coordinated omission).

Operations are weighted: intake (`POST /v1/complaints`, a fresh external_id, or a replay of one
already answered), predict (`POST /v1/predict`, one text), list (`GET /v1/complaints?limit=20`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None,
                      ) -> tuple[int, bytes]:
        if self.writer is None:
            await self._open()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + (body or b""))
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise HttpError("connection closed")
            status = int(status_line.split(b" ", 2)[1])
            length, chunked, close = 0, False, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name, value = name.strip().lower(), value.strip()
                if name == "content-length":
                    length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
                elif name == "connection" and value.lower() == "close":
                    close = True
            if chunked:
                parts = []
                while True:
                    size = int((await self.reader.readline()).strip(), 16)
                    if size == 0:
                        await self.reader.readline()
                        break
                    parts.append(await self.reader.readexactly(size))
                    await self.reader.readline()
                data = b"".join(parts)
            else:
                data = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
            self.close()
            raise HttpError(f"{type(exc).__name__}: {exc}") from None
        if close:
            self.close()
        return status, data


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@dataclass
class OpStats:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = self.latencies_ms
        return {"requests": len(lat), "per_second": round(len(lat) / seconds, 1) if seconds else None,
                "statuses": dict(self.statuses),
                **{f"p{q}_ms": (round(v, 2) if (v := percentile(lat, q)) is not None else None)
                   for q in (50, 95, 99)},
                "max_ms": round(max(lat), 2) if lat else None}


@dataclass
class Report:
    mode: str
    clients: int
    seconds: float
    ops: dict[str, OpStats] = field(default_factory=lambda: defaultdict(OpStats))
    errors: list[str] = field(default_factory=list)
    created_ids: list[str] = field(default_factory=list)  # external_ids answered 201
    replayed_ids: list[str] = field(default_factory=list)  # answered 200 (known external_id)
    rate_per_client: float | None = None

    def summary(self) -> dict[str, Any]:
        total = sum(len(s.latencies_ms) for s in self.ops.values())
        everything = [x for s in self.ops.values() for x in s.latencies_ms]
        return {"mode": self.mode, "clients": self.clients, "seconds": round(self.seconds, 2),
                "rate_per_client": self.rate_per_client, "requests": total,
                "per_second": round(total / self.seconds, 1) if self.seconds else None,
                "errors": len(self.errors), "error_examples": self.errors[:5],
                "intake_201": len(self.created_ids), "intake_200": len(self.replayed_ids),
                "all": OpStats(everything).summary(self.seconds) if everything else None,
                "ops": {name: s.summary(self.seconds) for name, s in sorted(self.ops.items())}}


class Workload:
    """Builds the requests of each operation from corpus rows."""

    def __init__(self, rows: list[dict[str, Any]], key: str, *, replay_share: float = 0.05,
                 run_id: str | None = None, seed: int = 0) -> None:
        self.rows, self.key = rows, key
        self.replay_share = replay_share
        self.run_id = run_id or datetime.now(UTC).strftime("%H%M%S%f")
        self.random = random.Random(seed)
        self.counter = itertools.count()
        self.created: list[str] = []
        self.now = datetime.now(UTC)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}

    def intake(self) -> tuple[str, str, bytes, str]:
        if self.created and self.random.random() < self.replay_share:
            external_id = self.random.choice(self.created)
        else:
            external_id = f"load-{self.run_id}-{next(self.counter)}"
        row = self.rows[hash(external_id) % len(self.rows)]
        body = {"external_id": external_id, "text": row["text"], "channel": row["channel"], "branch": row["branch"],
                "received_at": (self.now - timedelta(minutes=self.random.randint(1, 600))).isoformat(),
                "customer_ref": row.get("customer_ref") or None}
        return "POST", "/v1/complaints", json.dumps(body, ensure_ascii=False).encode(), external_id

    def predict(self) -> tuple[str, str, bytes, str]:
        row = self.rows[self.random.randrange(len(self.rows))]
        body = {"text": row["text"], "channel": row["channel"]}
        return "POST", "/v1/predict", json.dumps(body, ensure_ascii=False).encode(), ""

    def list(self) -> tuple[str, str, bytes | None, str]:
        return "GET", "/v1/complaints?limit=20", None, ""


async def _one(conn: Connection, work: Workload, op: str, report: Report, scheduled: float | None) -> None:
    method, path, body, external_id = getattr(work, op)()
    start = scheduled if scheduled is not None else time.perf_counter()
    try:
        status, data = await conn.request(method, path, work.headers, body)
    except HttpError as exc:
        report.errors.append(f"{op}: {exc}")
        report.ops[op].statuses["error"] += 1
        return
    elapsed = (time.perf_counter() - start) * 1000
    stats = report.ops[op]
    stats.latencies_ms.append(elapsed)
    stats.statuses[str(status)] += 1
    if not 200 <= status < 300:
        report.errors.append(f"{op}: HTTP {status} {data[:200]!r}")
    if op == "intake" and status == 201:
        report.created_ids.append(external_id)
        work.created.append(external_id)
    elif op == "intake" and status == 200:
        report.replayed_ids.append(external_id)


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


async def run(url: str, work: Workload, *, clients: int, seconds: float, weights: dict[str, float],
              rate_per_client: float | None = None) -> Report:
    """Closed loop when `rate_per_client` is None, else open loop at that rate per client."""
    parts = urlsplit(url)
    report = Report("open" if rate_per_client else "closed", clients, seconds, rate_per_client=rate_per_client)
    start = time.perf_counter()
    stop = start + seconds

    async def client(i: int) -> None:
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        rng = random.Random(i)
        if rate_per_client:
            interval = 1 / rate_per_client
            t = start + interval * i / clients  # spread the clients' phases over one interval
            while t < stop:
                delay = t - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await _one(conn, work, _pick(rng, weights), report, t)
                t += interval
        else:
            while time.perf_counter() < stop:
                await _one(conn, work, _pick(rng, weights), report, None)
        conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    report.seconds = time.perf_counter() - start
    return report


def run_sync(url: str, work: Workload, **kwargs: Any) -> Report:
    """`run` to completion, from any thread: where this one already runs an event loop (Playwright's
    sync API keeps one in the thread that uses it), on a thread of its own."""
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # uvloop is a dependency; keep the generator usable without it
        runner = asyncio.run
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return runner(run(url, work, **kwargs))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: runner(run(url, work, **kwargs))).result()
