"""On-disk embedding cache: one SQLite file per encoder id, rows keyed by sha256(encoder id + text).

The folder is the caller's (`Encoder.cache_dir`: XIAOBAO_CACHE through `models.settings`, default
var/embeddings). SQLite (WAL) rather than shards because cross-validation folds and worker processes read and write the
same cache concurrently, and a row per text makes partial hits cheap.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit


def text_key(encoder_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{encoder_id}\0{text}".encode()).digest()


class EmbeddingCache:
    def __init__(self, root: Path | str, encoder_id: str, dim: int) -> None:
        self.root = Path(root)
        self.encoder_id = encoder_id
        self.dim = dim
        self.path = self.root / f"{encoder_id[:32]}.sqlite"
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._lock = threading.Lock()  # one connection shared by the service's request threads

    def _db(self) -> sqlite3.Connection:
        # A connection must not cross a fork: reopen in each process.
        if self._conn is None or self._pid != os.getpid():
            self.root.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS emb (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        rows: list[tuple[bytes, bytes]] = []
        with self._lock:
            db = self._db()
            for i in range(0, len(keys), _CHUNK):
                chunk = list(keys[i:i + _CHUNK])
                rows += db.execute(f"SELECT k, v FROM emb WHERE k IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchall()
        for k, v in rows:
            vec = np.frombuffer(v, dtype=np.float32)
            if vec.size == self.dim:  # a row of another width is a stale file: ignore it
                found[k] = vec
        return found

    def put(self, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [(k, np.ascontiguousarray(v, dtype=np.float32).tobytes()) for k, v in items]
        if rows:
            with self._lock:
                db = self._db()
                with db:
                    db.execute("BEGIN")
                    db.executemany("INSERT OR REPLACE INTO emb (k, v) VALUES (?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM emb").fetchone()[0])

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
