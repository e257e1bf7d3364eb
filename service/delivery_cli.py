"""`xiaobao worker | demo`: the delivery worker and the demo replay."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
from pathlib import Path

from service.cli_common import ServiceCliError, load_settings, open_database
from service.demo import DemoError
from service.routing import RoutingError

KNOWN_ERRORS: tuple[type[Exception], ...] = (RoutingError, DemoError)


def cmd_worker(args: argparse.Namespace) -> None:
    from service.alerting import Alerting
    from service.clock import SystemClock
    from service.digest.service import DigestJob
    from service.routing import load_routing
    from service.worker import Worker

    settings = load_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    routing = load_routing(settings)
    clock = SystemClock()
    calendar_warnings = routing.check_calendar(clock.now().astimezone(settings.zone).date())
    missing = routing.missing_secrets()
    if missing:  # a webhook without its secret could only fail: say so before sending anything
        raise ServiceCliError(f"webhook secret variable(s) {', '.join(missing)} not set (named in {routing.source})")
    for warning in (*routing.warnings, *calendar_warnings):
        logging.getLogger("xiaobao.service").warning("%s", warning)
    db = open_database(settings)
    worker = Worker(db, settings, Alerting(settings, routing, clock), clock, jobs=[DigestJob(settings).job()])
    try:
        if args.once:
            report = worker.drain()
            d = report.delivery
            print(f"letters issued: {len(report.letters)} {' '.join(report.letters)}".rstrip())
            print(f"reminders: {len(report.reminded)}; messages sent {d.sent}, retrying {d.failed}, dead {d.dead}")
            for error in report.errors:
                print(f"error: {error}", file=sys.stderr)
            return
        signal.signal(signal.SIGTERM, lambda *_: worker.stop(timeout=0))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the worker; claimed leases simply run out
            worker.run_forever()
    finally:
        db.dispose()


def cmd_demo(args: argparse.Namespace) -> None:
    import httpx

    from service.demo import in_process, last_weeks, replay

    if args.weeks < 1:
        raise ServiceCliError("--weeks must be at least 1")
    if bool(args.url) != bool(args.key):
        raise ServiceCliError("give --url and --key together (or neither, to replay in-process)")
    items = last_weeks(Path(args.data), args.weeks)
    print(f"replaying {len(items)} requests of the last {args.weeks} weeks of {args.data}", file=sys.stderr)
    if args.url:
        with httpx.Client(base_url=args.url.rstrip("/"), timeout=120) as client:
            try:
                report = replay(client, args.key, items)
            except httpx.HTTPError as exc:
                raise ServiceCliError(f"{args.url}: {type(exc).__name__}: {exc}") from None
        base = args.url.rstrip("/")
    else:
        settings = load_settings(args)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        with in_process(settings) as (client, key):
            report = replay(client, key, items)
        base = settings.public_url
    print(f"sent {report.sent}: {report.created} stored, {report.existing} known already; "
          f"{report.alerts} raised or joined an alert")
    print(f"letters issued now: {len(report.letters_issued)}; letters in all: {report.letters_total}")
    for letter in report.first_letters:
        print(f"  {letter['number']}  {letter['department']}  {letter['items_count']} 件  "
              f"{base}/v1/letters/{letter['id']}?format=html")
    for note in report.notes:
        print(f"note: {note}")


def register(sub: argparse._SubParsersAction, dbopt: argparse.ArgumentParser) -> None:
    p = sub.add_parser("worker", parents=[dbopt],
                       help="close grouping windows into letters, send reminders and the weekly digest, deliver the outbox")
    p.add_argument("--once", action="store_true", help="do what is due now, then exit")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", parents=[dbopt],
                       help="replay the last weeks of the demo corpus through the intake API")
    p.add_argument("--weeks", type=int, default=4)
    p.add_argument("--data", default="data/demo/demo_corpus.csv", help="the corpus (default: the demo corpus)")
    p.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8000 (default: in-process)")
    p.add_argument("--key", help="its API key (admin, to issue the letters at once)")
    p.set_defaults(func=cmd_demo)
