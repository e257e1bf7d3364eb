"""API keys and what each scope may do.

A key is `xb_` + 43 random URL-safe characters, shown once when created. The database keeps its
sha256 (a fast hash is enough for 256 random bits) and the first characters as a visible prefix.

Scopes: `intake` predicts and submits; `admin` does everything; `protection` (消保部) reads all;
`department:<部门>` reads and gives feedback on the requests routed to that department.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.tables import ApiKey

KEY_PREFIX = "xb_"
SCOPES = ("intake", "admin", "protection")
DEPARTMENT_PREFIX = "department:"

# permission → the plain scopes that hold it; department scopes are handled in Principal.can.
PERMISSIONS: dict[str, frozenset[str]] = {
    "predict": frozenset({"intake", "admin"}),
    "intake": frozenset({"intake", "admin"}),
    "read": frozenset({"admin", "protection"}),
    "feedback": frozenset({"admin", "protection"}),
    "admin": frozenset({"admin"}),
    "operate": frozenset({"admin", "protection"}),  # silences, the outbox and its dead letters
}
DEPARTMENT_PERMISSIONS = frozenset({"read", "feedback"})


class KeyCommandError(Exception):
    """A key command that cannot be carried out; str() is one line for the user."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def validate_scope(scope: str) -> str:
    scope = scope.strip()
    if scope in SCOPES:
        return scope
    if scope.startswith(DEPARTMENT_PREFIX):
        department = scope[len(DEPARTMENT_PREFIX):].strip()
        if department and len(department) <= 100:
            return DEPARTMENT_PREFIX + department
        raise KeyCommandError(f"scope {scope!r}: name the department, e.g. department:信用卡中心")
    raise KeyCommandError(f"unknown scope {scope!r}; use intake, admin, protection or department:<部门>")


@dataclass(frozen=True)
class Principal:
    """The caller behind a valid key."""

    key_id: int
    name: str
    scope: str

    @property
    def department(self) -> str | None:
        return self.scope[len(DEPARTMENT_PREFIX):] if self.scope.startswith(DEPARTMENT_PREFIX) else None

    def can(self, permission: str) -> bool:
        if self.department is not None:
            return permission in DEPARTMENT_PERMISSIONS
        return self.scope in PERMISSIONS[permission]


def create_key(session: Session, name: str, scope: str) -> tuple[ApiKey, str]:
    """A new key row and the plaintext key (never stored)."""
    name = name.strip()
    if not name or len(name) > 100:
        raise KeyCommandError("a key needs a name of 1 to 100 characters")
    scope = validate_scope(scope)
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, scope=scope, key_hash=hash_key(plaintext), prefix=plaintext[:10])
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise KeyCommandError(f"a key named {name!r} exists already; choose another name or revoke it") from None
    return row, plaintext


def authenticate(session: Session, key: str) -> Principal | None:
    row = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key)))
    if row is None or row.revoked:
        return None
    return Principal(row.id, row.name, row.scope)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, *, name: str | None = None, key_id: int | None = None) -> ApiKey:
    query = select(ApiKey).where(ApiKey.name == name) if name is not None else select(ApiKey).where(
        ApiKey.id == key_id)
    row = session.scalar(query)
    if row is None:
        raise KeyCommandError(f"no key {name!r}" if name is not None else f"no key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row
