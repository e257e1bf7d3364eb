"""Reference receiver for 消保预警 webhooks: copy this file into a department's system.

It depends on the Python standard library only. What a receiver must do:

1. **Check the signature.** The service POSTs the JSON body with
   `X-Xiaobao-Timestamp: <Unix seconds>` and
   `X-Xiaobao-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`.
   Compare in constant time, over the raw bytes as received (not re-serialised JSON).
2. **Refuse replays.** A timestamp further than `tolerance` seconds (default 300) from the
   receiver's clock is refused, so a captured request cannot be sent again later.
3. **Act once per `X-Idempotency-Key`.** Delivery is at-least-once: after a crash or a lost
   answer the service sends the same message again, with the same key. Remember the keys acted
   on (here: a SQLite file, so it survives restarts) and answer a repeat 200 without acting.
4. **Answer 2xx only once the message is safely taken;** anything else is retried with backoff
   and, after the configured attempts, left as a dead letter the bank's operators see.

`verify(secret, headers, body)` and `SeenKeys` are the parts to reuse; `serve()` and
`python -m service.webhook_receiver --port 9000 --secret-env XB_WEBHOOK_SECRET --seen seen.db`
run a small HTTP server around them that appends each delivery to a JSON-lines log.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-Xiaobao-Signature", "X-Xiaobao-Timestamp"
IDEMPOTENCY_HEADER, EVENT_HEADER = "X-Idempotency-Key", "X-Xiaobao-Event"
DEFAULT_TOLERANCE = 300


class Rejected(Exception):
    """The request is not a valid webhook from the service; str() says why (answer 401)."""


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:  # plain dicts are case-sensitive; HTTP headers are not
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


def verify(secret: str | bytes, headers: Mapping[str, str], body: bytes, *,
           tolerance: float = DEFAULT_TOLERANCE, now: float | None = None) -> None:
    """Raises Rejected unless the signature is right and the timestamp within `tolerance` seconds."""
    timestamp, signature = _header(headers, TIMESTAMP_HEADER), _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signature:
        raise Rejected(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER}")
    try:
        sent = int(timestamp)
    except ValueError:
        raise Rejected("the timestamp is not a number") from None
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    expected = "sha256=" + hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    # Signature first, in constant time: the answer must not tell a forger which part was wrong.
    if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii", "replace")):
        raise Rejected("bad signature")
    age = (time.time() if now is None else now) - sent
    if abs(age) > tolerance:
        raise Rejected(f"timestamp {age:.0f} s away from now (tolerance {tolerance:.0f} s): a replay or a wrong clock")


class SeenKeys:
    """Idempotency keys already acted on, in a SQLite file (or memory with ":memory:")."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, at REAL NOT NULL)")
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        """Records `key`; True if it was new (act on the message), False for a repeat."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO seen (key, at) VALUES (?, ?)", (key, time.time()))
            return cur.rowcount == 1


Handler = Callable[[str, str, dict[str, Any]], None]  # (idempotency key, event, body)


def serve(secret: str, *, host: str = "127.0.0.1", port: int = 0, seen: SeenKeys | None = None,
          on_message: Handler | None = None, log_path: str | Path | None = None,
          tolerance: float = DEFAULT_TOLERANCE, fail_status: int | None = None) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call serve_forever, e.g. in a thread) that verifies each
    POST, acts once per idempotency key through `on_message`, and appends every delivery to
    `log_path` as a JSON line ({"key", "event", "status", "duplicate"}). `fail_status` plays a
    broken receiver (every request answered with it)."""
    seen = seen or SeenKeys()
    log_lock = threading.Lock()

    def log(entry: dict[str, Any]) -> None:
        if log_path is not None:
            with log_lock, open(log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            key, event = self.headers.get(IDEMPOTENCY_HEADER) or "", self.headers.get(EVENT_HEADER) or ""
            entry: dict[str, Any] = {"key": key, "event": event, "path": self.path, "at": time.time()}
            if fail_status is not None:
                status = fail_status
            else:
                try:
                    verify(secret, self.headers, body, tolerance=tolerance)
                    status = 200
                except Rejected as exc:
                    status, entry["rejected"] = 401, str(exc)
            if status == 200:
                entry["duplicate"] = not seen.first_time(key)
                if not entry["duplicate"] and on_message is not None:
                    on_message(key, event, json.loads(body))
            entry["status"] = status
            log(entry)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:  # the JSON-lines log says it all
            pass

    server = ThreadingHTTPServer((host, port), Receiver)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--secret-env", required=True, help="name of the variable holding the shared secret")
    p.add_argument("--seen", default="webhook-seen.db", help="SQLite file of the keys acted on")
    p.add_argument("--log", default=None, help="append every delivery to this JSON-lines file")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    p.add_argument("--fail-status", type=int, default=None, help="answer every request with this status")
    args = p.parse_args(argv)
    secret = os.environ.get(args.secret_env)
    if not secret:
        raise SystemExit(f"set {args.secret_env} to the webhook secret")
    server = serve(secret, host=args.host, port=args.port, seen=SeenKeys(args.seen), log_path=args.log,
                   tolerance=args.tolerance, fail_status=args.fail_status)
    print(f"receiving webhooks on http://{args.host}:{server.server_address[1]}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
