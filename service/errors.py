"""The refusals domain code raises: `NotFound`, `Conflict`, `Invalid`.

Each carries a stable `code` (what a caller can switch on), a one-line `message` and, where one
field is at fault, its name. They say nothing of HTTP: the API maps them to a status and a JSON
body in one handler (service.api.errors), the console to its pages and notices (service.web.routes).
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A refusal the caller can act on; `code` defaults to the kind's own."""

    default_code: ClassVar[str]

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field
        self.code = code or self.default_code


class NotFound(DomainError):
    """No such record, or not one the caller may see (the same answer, so ids reveal nothing)."""

    default_code = "not_found"


class Conflict(DomainError):
    """The record exists, but its state does not allow the change (resolved already, …)."""

    default_code = "conflict"


class Invalid(DomainError):
    """A value the caller sent cannot be accepted; `field` names it."""

    default_code = "invalid_field"


def invalid(field: str, message: str) -> Invalid:
    """An `Invalid` naming the field, its message prefixed with it ("channel: …")."""
    return Invalid(f"{field}: {message}", field=field)
