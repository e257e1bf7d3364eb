"""`xiaobao serve | keys … | db … | export-labels | routing check`: the service commands of the CLI."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from service import delivery_cli
from service.auth import KeyCommandError
from service.cli_common import ServiceCliError, load_settings, open_database
from service.db import DatabaseError
from service.digest import cli as digest_cli
from service.labels import ExportError
from service.settings import Settings

KNOWN_ERRORS: tuple[type[Exception], ...] = (ServiceCliError, KeyCommandError, DatabaseError, ExportError,
                                             *delivery_cli.KNOWN_ERRORS)


# --- serve -------------------------------------------------------------------------------------
def worker_process_environment(settings: Settings) -> dict[str, str]:
    """What `serve --workers N` must put in the environment for its worker processes: uvicorn spawns
    them and each calls `service.app:create_app()`, which reads `Settings()` from the environment
    (an import string is all uvicorn passes to them). The rest of the environment they inherit as it
    is; these are the settings serve's own options change."""
    return {"XIAOBAO_DATABASE_URL": settings.database_url, "XIAOBAO_RUN_WORKER": str(settings.run_worker).lower()}


def cmd_serve(args: argparse.Namespace) -> None:
    import logging

    import uvicorn

    settings = load_settings(args, run_worker=True) if args.worker else load_settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per migration step is noise at start
    open_database(settings).dispose()  # refuse to start on an unreachable database; migrate once, up front
    if args.workers > 1:  # each worker process refuses a bad routing file too, but say it once, up front
        from service.clock import SystemClock
        from service.routing import load_routing

        load_routing(settings).check_calendar(SystemClock().now().astimezone(settings.zone).date())
        os.environ.update(worker_process_environment(settings))  # the one write: inherited by the workers
        uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                    log_level=settings.log_level.lower())
        return
    from service.app import create_app

    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=settings.log_level.lower())


# --- keys --------------------------------------------------------------------------------------
def _print_key(row, plaintext: str) -> None:
    print(f"key {row.id} {row.name!r} (scope {row.scope}) — shown only now, store it safely:")
    print(plaintext)


def _fresh_name(session, name: str) -> str:
    from sqlalchemy import select

    from service.tables import ApiKey

    taken = set(session.scalars(select(ApiKey.name).where(ApiKey.name.startswith(name))))
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def cmd_keys(args: argparse.Namespace) -> None:
    from service import auth

    db = open_database(load_settings(args))
    try:
        if args.keys_cmd == "create":
            with db.transaction() as session:
                row, plaintext = auth.create_key(session, args.name, args.scope)
            _print_key(row, plaintext)
        elif args.keys_cmd == "ensure":
            path = Path(args.file)
            existing = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
            with db.transaction() as session:
                principal = auth.authenticate(session, existing) if existing else None
                if principal is not None and principal.scope == auth.validate_scope(args.scope):
                    print(f"key {principal.key_id} {principal.name!r} (scope {principal.scope}) from {path}:")
                    print(existing)
                    return
                row, plaintext = auth.create_key(session, _fresh_name(session, args.name), args.scope)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(plaintext + "\n", encoding="utf-8")
            path.chmod(0o600)
            _print_key(row, plaintext)
        elif args.keys_cmd == "list":
            with db.reading() as session:
                rows = auth.list_keys(session)
            if not rows:
                print("no keys; create one with `xiaobao keys create --name N --scope intake`", file=sys.stderr)
            for r in rows:
                state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
                print(f"{r.id:>4}  {r.name:<24} {r.scope:<28} {r.prefix}…  created {r.created_at:%Y-%m-%d %H:%M}  {state}")
        elif args.keys_cmd == "revoke":
            with db.transaction() as session:
                row = auth.revoke_key(session, name=args.name, key_id=args.id)
            print(f"key {row.id} {row.name!r} revoked at {row.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    finally:
        db.dispose()


# --- db ----------------------------------------------------------------------------------------
def cmd_db(args: argparse.Namespace) -> None:
    from service.db import head_revision

    db = open_database(load_settings(args), migrate=args.db_cmd == "upgrade")
    try:
        revision = db.revision()
        note = "latest" if revision == head_revision() else f"latest is {head_revision()}; run `xiaobao db upgrade`"
        print(f"{db.url}: schema revision {revision} ({note})")
    finally:
        db.dispose()


# --- export-labels -----------------------------------------------------------------------------
def cmd_export_labels(args: argparse.Namespace) -> None:
    from service.labels import export_labels

    settings = load_settings(args)
    db = open_database(settings)
    try:
        summary = export_labels(db, args.out, settings.zone)
    finally:
        db.dispose()
    counts = ", ".join(f"{k} {v}" for k, v in summary.labelled.items())
    print(f"wrote {summary.rows} labelled requests to {summary.path} (labelled: {counts})", file=sys.stderr)
    for warning in summary.warnings():
        print(f"note: {warning}", file=sys.stderr)


def export_outcomes(args: argparse.Namespace, out: Path) -> Path:
    """The outcomes recorded in the database of `--database-url` (or the settings') as a labelled
    file at `out`: what `xiaobao recalibrate --from-outcomes` refits on."""
    from service.labels import export_labels

    settings = load_settings(args)
    db = open_database(settings)
    try:
        summary = export_labels(db, out, settings.zone)
    finally:
        db.dispose()
    print(f"read {summary.rows} requests with outcomes from the database into {summary.path} "
          f"(escalation outcomes: {summary.labelled.get('escalated', 0)})", file=sys.stderr)
    return summary.path


# --- routing -----------------------------------------------------------------------------------
def cmd_routing(args: argparse.Namespace) -> None:
    """Validate a routing file the way `serve` will, and show where a request would go."""
    from service.routing import load_routing

    settings = load_settings(args)
    request = {"category": args.category, "cause": args.cause, "branch": args.branch, "channel": args.channel}
    known = {"category": (settings.categories, "XIAOBAO_CATEGORIES"), "cause": (settings.causes, "XIAOBAO_CAUSES"),
             "channel": (settings.channels, "XIAOBAO_CHANNELS")}
    for name, (labels, variable) in known.items():
        if request[name] and request[name] not in labels:
            raise ServiceCliError(f"--{name} {request[name]!r} is not a known {name} ({variable})")
    from service.clock import SystemClock
    from service.workdays import PACKAGE_VERSION, PACKAGE_YEARS

    routing = load_routing(settings, Path(args.file) if args.file else None)
    calendar_warnings = routing.check_calendar(SystemClock().now().astimezone(settings.zone).date())
    routes = sum(1 for _ in _walk(routing.routes))
    declared = f", declaring {', '.join(map(str, sorted(routing.years)))}" if routing.years else ""
    print(f"{routing.source}: valid; {len(routing.departments)} departments, {routes} routes, "
          f"default receiver {routing.default_receiver}, calendar: chinesecalendar {PACKAGE_VERSION} "
          f"({PACKAGE_YEARS[0]}-{PACKAGE_YEARS[-1]}) with {len(routing.holidays)} holidays and "
          f"{len(routing.workdays)} working days of this file on top{declared}")
    for warning in (*routing.warnings, *calendar_warnings):
        print(f"warning: {warning}")
    for name in routing.missing_secrets():
        print(f"warning: {name} is not set: a webhook signed with it cannot be sent (xiaobao worker refuses to start)")
    if any(request.values()):
        department, where = routing.explain(**request)
        given = ", ".join(f"{k}={v}" for k, v in request.items() if v)
        print(f"{given} → {department} ({where})")


def _walk(routes):
    for route in routes:
        yield route
        yield from _walk(route.routes)


def register(sub: argparse._SubParsersAction) -> None:
    dbopt = argparse.ArgumentParser(add_help=False)
    dbopt.add_argument("--database-url", default=None,
                       help="SQLAlchemy URL (default: $XIAOBAO_DATABASE_URL, $DATABASE_URL or sqlite:///var/xiaobao.db)")

    p = sub.add_parser("serve", parents=[dbopt], help="run the HTTP service")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="worker processes (each loads the model)")
    p.add_argument("--worker", action="store_true",
                   help="also run the delivery worker (letters, reminders, outbox) in each process")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("keys", help="API keys")
    ksub = p.add_subparsers(dest="keys_cmd", required=True)
    k = ksub.add_parser("create", parents=[dbopt], help="create a key; prints it as the last line")
    k.add_argument("--name", required=True)
    k.add_argument("--scope", required=True, help="intake | admin | protection | department:<部门>")
    k.set_defaults(func=cmd_keys)
    k = ksub.add_parser("ensure", parents=[dbopt],
                        help="reuse the key stored in FILE if it is valid, else create one and store it there")
    k.add_argument("--file", required=True)
    k.add_argument("--name", required=True)
    k.add_argument("--scope", required=True)
    k.set_defaults(func=cmd_keys)
    k = ksub.add_parser("list", parents=[dbopt], help="keys with scope, prefix and state")
    k.set_defaults(func=cmd_keys)
    k = ksub.add_parser("revoke", parents=[dbopt], help="revoke a key by name or id")
    which = k.add_mutually_exclusive_group(required=True)
    which.add_argument("--name")
    which.add_argument("--id", type=int)
    k.set_defaults(func=cmd_keys)

    p = sub.add_parser("db", help="the service database")
    dsub = p.add_subparsers(dest="db_cmd", required=True)
    d = dsub.add_parser("upgrade", parents=[dbopt], help="apply the migrations up to the latest")
    d.set_defaults(func=cmd_db)
    d = dsub.add_parser("current", parents=[dbopt], help="the schema revision the database is at")
    d.set_defaults(func=cmd_db)

    p = sub.add_parser("export-labels", parents=[dbopt],
                       help="write recorded outcomes as a training file for `xiaobao train --data`")
    p.add_argument("--out", required=True, help=".csv, .jsonl or .xlsx")
    p.set_defaults(func=cmd_export_labels)

    p = sub.add_parser("routing", help="the routing file of 投诉风险提示函")
    rsub = p.add_subparsers(dest="routing_cmd", required=True)
    r = rsub.add_parser("check", help="validate a routing file as serve would; with request fields, "
                                      "print the department a request would be routed to")
    r.add_argument("--file", default=None, help="default: $XIAOBAO_ROUTING_FILE or the shipped file")
    for name in ("category", "cause", "channel", "branch"):
        r.add_argument(f"--{name}", default=None)
    r.set_defaults(func=cmd_routing)

    digest_cli.register(sub, dbopt)
    delivery_cli.register(sub, dbopt)
