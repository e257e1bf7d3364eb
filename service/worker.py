"""The background worker: closes due grouping windows into letters, sends reminders for overdue
letters, and delivers the outbox. Run it as `xiaobao worker` (as many as you like: every step
claims its rows with row locks), or inside `xiaobao serve --worker`. Each step is its own
transaction; a failing step is logged and retried on the next round."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.alerting import Alerting
from service.clock import Clock
from service.db import Database
from service.outbox import Delivery, DeliveryReport
from service.settings import Settings

log = logging.getLogger("xiaobao.service.worker")

# A scheduled job: called each round in its own transaction with the worker clock's time (e.g. the
# weekly digest's scheduler); it must be safe to run from several workers at once.
Job = tuple[str, Callable[[Session, datetime], Any]]


@dataclass
class TickReport:
    letters: list[str] = field(default_factory=list)  # numbers issued by the flusher
    reminded: list[str] = field(default_factory=list)
    delivery: DeliveryReport = field(default_factory=DeliveryReport)
    errors: list[str] = field(default_factory=list)

    @property
    def busy(self) -> bool:
        return bool(self.letters or self.reminded or self.delivery.claimed)


class Worker:
    def __init__(self, db: Database, settings: Settings, alerting: Alerting, clock: Clock,
                 delivery: Delivery | None = None, jobs: Sequence[Job] = ()) -> None:
        self.db, self.settings, self.alerting, self.clock = db, settings, alerting, clock
        self.delivery = delivery or Delivery(db, settings, clock)
        self.jobs = list(jobs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def flush(self, *, force: bool = False) -> list[str]:
        with self.db.transaction() as session:
            return [letter.number for letter in self.alerting.letters.flush_due(session, force=force)]

    def escalate(self) -> list[str]:
        with self.db.transaction() as session:
            return [letter.number for letter in self.alerting.letters.escalate(session)]

    def run_job(self, job: Callable[[Session, datetime], Any]) -> Any:
        with self.db.transaction() as session:
            return job(session, self.clock.now())

    def tick(self) -> TickReport:
        """Letters first, then jobs, then delivery: what this round wrote goes out this round."""
        report = TickReport()
        steps: list[tuple[str, Callable[[], Any]]] = [("flush", self.flush), ("escalate", self.escalate)]
        steps += [(name, lambda job=job: self.run_job(job)) for name, job in self.jobs]
        steps.append(("deliver", self.delivery.run_once))
        for name, step in steps:
            try:
                result = step()
            except Exception as exc:  # keep the loop alive; the next round retries
                log.exception("worker step %s failed", name)
                report.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if name == "flush":
                report.letters = result
            elif name == "escalate":
                report.reminded = result
            elif name == "deliver":
                report.delivery = result
        if report.letters or report.reminded:
            log.info("issued %s; reminded %s", report.letters or "none", report.reminded or "none")
        return report

    def drain(self, max_rounds: int = 50) -> TickReport:
        """Rounds until nothing is left to do now (tests, `xiaobao worker --once`)."""
        total = TickReport()
        for _ in range(max_rounds):
            r = self.tick()
            total.letters += r.letters
            total.reminded += r.reminded
            total.errors += r.errors
            for name in ("claimed", "sent", "failed", "dead", "lost_lease"):
                setattr(total.delivery, name, getattr(total.delivery, name) + getattr(r.delivery, name))
            if not r.busy:
                break
        return total

    def run_forever(self) -> None:
        log.info("worker running: poll every %.1fs", self.settings.worker_poll_seconds)
        while not self._stop.is_set():
            report = self.tick()
            if not report.delivery.claimed:  # a full batch means more may be waiting: go again at once
                self._stop.wait(self.settings.worker_poll_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="xiaobao-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
