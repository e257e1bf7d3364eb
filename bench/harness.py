"""Real processes for the proofs and the service benchmark: throw-away PostgreSQL databases, the
service under uvicorn (`xiaobao serve`), outbox workers (`xiaobao worker`), keys. Everything binds
to 127.0.0.1; every process started here is stopped by the context managers that started it."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
XIAOBAO = [str(Path(sys.executable).parent / "xiaobao")]
PG_SERVER = os.environ.get("XIAOBAO_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def pg_database(prefix: str = "xiaobao_proof") -> Iterator[str]:
    """A fresh PostgreSQL database on PG_SERVER, dropped afterwards (WITH FORCE: killed servers
    may leave connections behind)."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    server = create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_SERVER.rsplit("/", 1)[0] + "/" + name
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


@contextlib.contextmanager
def database(backend: str, scratch: Path) -> Iterator[str]:
    if backend == "postgresql":
        with pg_database() as url:
            yield url
    else:
        yield f"sqlite:///{scratch / f'service-{secrets.token_hex(3)}.db'}"


def make_key(url: str, scope: str = "admin", name: str | None = None) -> str:
    from service.auth import create_key
    from service.db import Database

    db = Database(url, pool_size=1)
    try:
        db.upgrade()
        with db.transaction() as session:
            _, key = create_key(session, name or f"{scope.replace(':', '-')}-{secrets.token_hex(3)}", scope)
        return key
    finally:
        db.dispose()


def service_env(url: str, registry: Path | str | None = None, **settings: object) -> dict[str, str]:
    """The environment of a service process: the database, the registry and XIAOBAO_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIAOBAO_")}
    env.update(XIAOBAO_DATABASE_URL=url, XIAOBAO_LOG_LEVEL="warning", PYTHONUNBUFFERED="1")
    if registry is not None:
        env["XIAOBAO_REGISTRY"] = str(registry)
    env.update({f"XIAOBAO_{k.upper()}": str(v) for k, v in settings.items()})
    return env


class Process:
    """A child process in its own session (so kill() reaches uvicorn's worker processes too)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:  # the child keeps its own descriptor
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(self.args, env=self.env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL to the whole process group: no cleanup, no graceful shutdown."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_mb(self) -> list[float]:
        """Resident memory of the process and each child (uvicorn's workers), in MB."""
        if not self.alive():
            return []
        parent = psutil.Process(self.pid)
        out = []
        for p in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                out.append(p.memory_info().rss / 2**20)
        return out

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Server(Process):
    """`xiaobao serve` on a free port of 127.0.0.1."""

    def __init__(self, env: dict[str, str], log: Path, *, workers: int = 1, worker: bool = False,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [*XIAOBAO, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        super().__init__(args + (["--worker"] if worker else []), env, log)

    def wait_ready(self, timeout: float = 120) -> float:
        """Seconds from start to the first /readyz 200."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if not self.alive():
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return time.perf_counter() - self.started_at
            time.sleep(0.05)
        raise TimeoutError(f"{self.url}/readyz not 200 after {timeout:.0f} s:\n{self.tail()}")


def worker_process(env: dict[str, str], log: Path) -> Process:
    return Process([*XIAOBAO, "worker"], env, log)


@contextlib.contextmanager
def running(*procs: Process) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()
