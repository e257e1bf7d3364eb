"""`xiaobao digest render | send`: the weekly digest from the command line."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from service.cli_common import ServiceCliError, load_settings, open_database


def _week(args: argparse.Namespace, settings):
    from service.digest.service import requested_week
    from service.digest.weeks import WeekError

    try:
        return requested_week(args.week, settings, datetime.now(UTC))
    except WeekError as exc:
        raise ServiceCliError(f"--week: {exc}") from None


def cmd_digest(args: argparse.Namespace) -> None:
    from service.digest import render, service

    settings = load_settings(args)
    week = _week(args, settings)
    db = open_database(settings)
    try:
        reference = service.registry_reference(settings)
        if args.digest_cmd == "render":
            fmt = args.format or {".html": "html", ".htm": "html", ".txt": "text", ".xlsx": "xlsx"}.get(
                Path(args.out).suffix.lower() if args.out else "", "json")
            digest = service.make_digest(db, week, reference, datetime.now(UTC))
            body = render.render(digest, fmt)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_bytes(body)
                print(f"wrote the {fmt} digest of {week.label} to {args.out} ({len(body):,} bytes)", file=sys.stderr)
            elif fmt == "xlsx":
                raise ServiceCliError("xlsx is binary: give --out FILE.xlsx")
            else:
                sys.stdout.write(body.decode("utf-8"))
            return
        try:
            result = service.send_now(db, settings, week, reference, datetime.now(UTC), force=args.force,
                                      source="cli", to=args.to or None)
        except service.NoRecipient as exc:
            raise ServiceCliError(str(exc)) from None
        if result.sent_to:
            print(f"digest {week.label} queued for {', '.join(result.sent_to)} (record {result.digest_id}); "
                  "the worker delivers it")
        if result.already_sent:
            print(f"digest {week.label} was sent already to {', '.join(result.already_sent)}; --force sends again")
    finally:
        db.dispose()


def register(sub: argparse._SubParsersAction, dbopt: argparse.ArgumentParser) -> None:
    p = sub.add_parser("digest", help="the weekly digest (投诉处理周报)")
    dsub = p.add_subparsers(dest="digest_cmd", required=True)
    weekopt = argparse.ArgumentParser(add_help=False)
    weekopt.add_argument("--week", default=None, help="ISO week YYYY-Www (default: the last complete week)")
    d = dsub.add_parser("render", parents=[dbopt, weekopt], help="write the digest of a week to a file or stdout")
    d.add_argument("--format", choices=("json", "html", "text", "xlsx"), default=None,
                   help="default: from the --out suffix, else json")
    d.add_argument("--out", default=None, help="file to write (default: stdout)")
    d.set_defaults(func=cmd_digest)
    d = dsub.add_parser("send", parents=[dbopt, weekopt],
                        help="e-mail the digest of a week now (through the outbox; once per recipient)")
    d.add_argument("--force", action="store_true", help="send again to recipients who had it")
    d.add_argument("--to", action="append", default=[], help="an address instead of the configured ones (repeatable)")
    d.set_defaults(func=cmd_digest)
