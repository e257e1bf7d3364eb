"""The routing file: which department receives the alert for a request, and how to reach it.

A tree of routes read top to bottom, first match wins (as in Alertmanager), from the request's
(category, cause, branch, channel) to a 职能部室; a default receiver; each department's e-mail and
webhook; overrides of the working-day calendar. The labels live in the file, not here: this module only
checks that the file names labels the service knows, so a typo fails at start instead of routing
everything to the default receiver. The shipped default is `service/resources/routing.yaml`.

`calendar: {holidays, workdays, years}`: the State Council's working days come from chinesecalendar
(`service.workdays:WorkCalendar.china`); `holidays` and `workdays` override it day by day, and
`years` declares years whose whole schedule the file lists (a year the package does not have yet).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from service.settings import Settings
from service.workdays import PACKAGE_YEARS, CalendarNotCovered, WorkCalendar, calendar_notices

MATCH_KEYS = ("category", "cause", "branch", "channel")
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RoutingError(Exception):
    """The routing file cannot be used; str() is one line naming the file and the place at fault."""


@dataclass(frozen=True)
class Webhook:
    url: str
    secret_env: str

    def secret(self) -> str | None:
        return os.environ.get(self.secret_env) or None


@dataclass(frozen=True)
class Contact:
    department: str
    emails: tuple[str, ...] = ()
    webhook: Webhook | None = None


@dataclass(frozen=True)
class Route:
    where: str  # "routes[3].routes[0]": for messages and for explaining a decision
    match: Mapping[str, frozenset[str]]
    department: str | None
    routes: tuple[Route, ...] = ()

    def fits(self, request: Mapping[str, str | None]) -> bool:
        return all(request.get(key) in allowed for key, allowed in self.match.items())

    def resolve(self, request: Mapping[str, str | None]) -> tuple[str, str] | None:
        """(department, where) of the first fitting route in this subtree, or None."""
        if not self.fits(request):
            return None
        for child in self.routes:
            found = child.resolve(request)
            if found:
                return found
        return (self.department, self.where) if self.department else None


@dataclass(frozen=True)
class Routing:
    source: str
    default_receiver: str
    departments: Mapping[str, Contact]
    routes: tuple[Route, ...]
    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)
    warnings: tuple[str, ...] = ()
    years: frozenset[int] = field(default_factory=frozenset)  # calendar.years: schedules the file lists whole

    @cached_property
    def calendar(self) -> WorkCalendar:
        """The working-day calendar: chinesecalendar with this file's days on top."""
        return WorkCalendar.china(self.holidays, self.workdays, self.years)

    def check_calendar(self, today: date) -> list[str]:
        """At start-up: a RoutingError (one line) when the calendar does not cover `today`'s year,
        else warnings to log (the next year is not covered and is near)."""
        try:
            return [f"routing file {self.source}: calendar: {w}" for w in calendar_notices(self.calendar, today)]
        except CalendarNotCovered as exc:
            raise RoutingError(f"routing file {self.source}: calendar: {exc}") from None

    def route(self, *, category: str | None, cause: str | None, branch: str | None,
              channel: str | None) -> str:
        return self.explain(category=category, cause=cause, branch=branch, channel=channel)[0]

    def explain(self, **request: str | None) -> tuple[str, str]:
        """(department, the route that chose it, or "default_receiver")."""
        for route in self.routes:
            found = route.resolve(request)
            if found:
                return found
        return self.default_receiver, "default_receiver"

    def contact(self, department: str) -> Contact:
        """A department no longer in the file (its letters outlive an edit) is reached through the
        default receiver, so nothing addressed to it is silently dropped."""
        return self.departments.get(department) or self.departments[self.default_receiver]

    def missing_secrets(self) -> list[str]:
        return sorted({c.webhook.secret_env for c in self.departments.values()
                       if c.webhook is not None and c.webhook.secret() is None})


# --- loading and checking ----------------------------------------------------------------------------
DEFAULT_FILE = "routing.yaml"


def default_path() -> Path:
    return Path(str(resources.files("service") / "resources" / DEFAULT_FILE))


def load_routing(settings: Settings, path: Path | None = None) -> Routing:
    """The file at `path`, XIAOBAO_ROUTING_FILE or the shipped default. A label the service does not
    know is an error in a file of your own (a typo would route silently to the default receiver);
    in the shipped default, written for the default label lists, it only warns (`Routing.warnings`):
    a deployment with other lists still starts, and should bring its own file."""
    strict = path is not None or settings.routing_file is not None
    path = path or settings.routing_file or default_path()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RoutingError(f"routing file {path}: not found (XIAOBAO_ROUTING_FILE)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutingError(f"routing file {path}: cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise RoutingError(f"routing file {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_routing(raw, settings, str(path), strict=strict)


def parse_routing(raw: Any, settings: Settings, source: str = "<routing>", *, strict: bool = True) -> Routing:
    return _Parser(settings, source, strict).parse(raw)


class _Parser:
    def __init__(self, settings: Settings, source: str, strict: bool) -> None:
        self.settings, self.source, self.strict = settings, source, strict
        self.warnings: list[str] = []
        self.labels: dict[str, list[str] | None] = {
            "category": settings.categories, "cause": settings.causes, "channel": settings.channels, "branch": None}

    def fail(self, where: str, message: str) -> RoutingError:
        return RoutingError(f"routing file {self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: Iterable[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, found {type(value).__name__}")
        unknown = sorted(str(k) for k in value if k not in set(allowed))
        if unknown:
            raise self.fail(where, f"unknown key {unknown[0]!r}; expected {', '.join(allowed)}")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "expected a non-empty text")
        return value.strip()

    def parse(self, raw: Any) -> Routing:
        if raw is None:
            raise self.fail("top level", "the file is empty")
        top = self.mapping(raw, "top level", ("version", "default_receiver", "departments", "routes", "calendar"))
        if top.get("version", 1) != 1:
            raise self.fail("version", f"unsupported version {top.get('version')!r}; this service reads version 1")
        departments = self.departments(top.get("departments"))
        receiver = self.text(top.get("default_receiver"), "default_receiver")
        if receiver not in departments:
            raise self.fail("default_receiver", f"{receiver!r} is not listed under departments")
        protection = self.settings.protection_department
        if protection not in departments:
            raise self.fail("departments", f"the protection department {protection!r} (XIAOBAO_PROTECTION_DEPARTMENT) "
                                           "must be listed: reminders are copied to it")
        routes_raw = top.get("routes", [])
        if not isinstance(routes_raw, list):
            raise self.fail("routes", "expected a list of routes")
        routes = tuple(self.route(r, f"routes[{i}]", departments) for i, r in enumerate(routes_raw))
        holidays, workdays, years = self.calendar(top.get("calendar") or {})
        return Routing(self.source, receiver, departments, routes, holidays, workdays, tuple(self.warnings), years)

    def departments(self, raw: Any) -> dict[str, Contact]:
        if not raw:
            raise self.fail("departments", "list at least one department")
        if not isinstance(raw, dict):
            raise self.fail("departments", f"expected a mapping of department names, found {type(raw).__name__}")
        out = {}
        for name, spec in raw.items():
            where = f"departments.{name}"
            name = self.text(name, where)
            spec = self.mapping(spec or {}, where, ("email", "webhook"))
            emails = spec.get("email") or []
            emails = [emails] if isinstance(emails, str) else emails
            if not isinstance(emails, list):
                raise self.fail(f"{where}.email", "expected an address or a list of addresses")
            for i, address in enumerate(emails):
                if not isinstance(address, str) or not _EMAIL.match(address.strip()):
                    raise self.fail(f"{where}.email[{i}]", f"{address!r} is not an e-mail address")
            webhook = None
            if spec.get("webhook") is not None:
                hook = self.mapping(spec["webhook"], f"{where}.webhook", ("url", "secret_env"))
                url = self.text(hook.get("url"), f"{where}.webhook.url")
                if not url.startswith(("http://", "https://")):
                    raise self.fail(f"{where}.webhook.url", f"{url!r} is not an http(s) URL")
                env = self.text(hook.get("secret_env"), f"{where}.webhook.secret_env")
                if not _ENV_NAME.match(env):
                    raise self.fail(f"{where}.webhook.secret_env",
                                    "name the environment variable that holds the secret, not the secret")
                webhook = Webhook(url, env)
            if not emails and webhook is None:
                raise self.fail(where, "give an email or a webhook, or the department cannot be reached")
            out[name] = Contact(name, tuple(a.strip() for a in emails), webhook)
        return out

    def route(self, raw: Any, where: str, departments: Mapping[str, Contact]) -> Route:
        spec = self.mapping(raw, where, ("match", "department", "routes"))
        match: dict[str, frozenset[str]] = {}
        for key, value in self.mapping(spec.get("match") or {}, f"{where}.match", MATCH_KEYS).items():
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values:
                raise self.fail(f"{where}.match.{key}", "expected a label or a non-empty list of labels")
            known = self.labels[key]
            for v in values:
                if not isinstance(v, str) or not v.strip():
                    raise self.fail(f"{where}.match.{key}", f"{v!r} is not a label")
                if known is not None and v not in known:
                    problem = self.fail(f"{where}.match.{key}", f"{v!r} is not a known {key}; known: {', '.join(known)}")
                    if self.strict:
                        raise problem
                    self.warnings.append(f"{problem} (this condition never matches; set XIAOBAO_ROUTING_FILE)")
            match[key] = frozenset(v.strip() for v in values)
        department = spec.get("department")
        if department is not None:
            department = self.text(department, f"{where}.department")
            if department not in departments:
                raise self.fail(f"{where}.department", f"{department!r} is not listed under departments")
        children_raw = spec.get("routes") or []
        if not isinstance(children_raw, list):
            raise self.fail(f"{where}.routes", "expected a list of routes")
        children = tuple(self.route(c, f"{where}.routes[{i}]", departments) for i, c in enumerate(children_raw))
        if department is None and not children:
            raise self.fail(where, "a route needs a department or child routes")
        return Route(where, match, department, children)

    def calendar(self, raw: Any) -> tuple[frozenset[date], frozenset[date], frozenset[int]]:
        spec = self.mapping(raw, "calendar", ("holidays", "workdays", "years"))
        years_raw = spec.get("years") or []
        if not isinstance(years_raw, list):
            raise self.fail("calendar.years", "expected a list of years (2027)")
        for i, year in enumerate(years_raw):
            if isinstance(year, bool) or not isinstance(year, int) or not 1900 < year < 2200:
                raise self.fail(f"calendar.years[{i}]", f"{year!r} is not a year")
        years = frozenset(years_raw)
        out = []
        for key in ("holidays", "workdays"):
            days = spec.get(key) or []
            if not isinstance(days, list):
                raise self.fail(f"calendar.{key}", "expected a list of dates (YYYY-MM-DD)")
            parsed = set()
            for i, day in enumerate(days):
                if isinstance(day, str):
                    try:
                        day = date.fromisoformat(day)
                    except ValueError:
                        raise self.fail(f"calendar.{key}[{i}]", f"{day!r} is not a date (YYYY-MM-DD)") from None
                if not isinstance(day, date):
                    raise self.fail(f"calendar.{key}[{i}]", f"{day!r} is not a date (YYYY-MM-DD)")
                parsed.add(day)
            out.append(frozenset(parsed))
        holidays, workdays = out
        both = sorted(holidays & workdays)
        if both:
            raise self.fail("calendar", f"{both[0].isoformat()} is listed under both holidays and workdays")
        # A day of a year nobody covers is a partial schedule: the year still refuses to start.
        covered = set(PACKAGE_YEARS) | years
        for year in sorted({d.year for d in holidays | workdays} - covered):
            self.warnings.append(f"{self.fail('calendar', f'lists days of {year} but does not cover it')} "
                                 f"(add {year} to calendar.years once its whole schedule is listed)")
        # China has public holidays every year: a declared year without one is most likely unfinished.
        for year in sorted(y for y in years - set(PACKAGE_YEARS) if not any(d.year == y for d in holidays)):
            self.warnings.append(f"{self.fail('calendar.years', f'{year} is declared but no holiday of {year} is listed')}"
                                 f" (every weekday of {year} counts as a working day)")
        return holidays, workdays, years
