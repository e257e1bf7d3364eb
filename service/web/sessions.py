"""Console sign-in: sessions kept in the database, keyed by the sha256 of a random cookie token.

Why server-side rather than a signed cookie: signing out (or revoking the key) ends the session at
once, several `serve --workers` processes share it without a shared secret, and the cookie holds
nothing but an opaque token. Each session carries its CSRF synchroniser token; every POST form
sends it back and `csrf_matches` compares it in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update

from service.auth import Principal, authenticate
from service.db import Database
from service.settings import Settings
from service.tables import ApiKey, ConsoleSession

COOKIE = "xb_console"
LOGIN_CSRF_COOKIE = "xb_login_csrf"  # double-submit token of the sign-in form (no session exists yet)
TOUCH_SECONDS = 60  # last_seen_at is written at most once a minute: reading a page should not always write


class SignInError(Exception):
    """A key that cannot open the console; str() is the message shown (Chinese)."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


@dataclass(frozen=True)
class ConsoleUser:
    """Who is signed in: the key's principal (its scope decides what the API would allow) and the
    session's CSRF token."""

    principal: Principal
    csrf_token: str
    session_id: str

    @property
    def department(self) -> str | None:
        return self.principal.department

    @property
    def sees_all(self) -> bool:
        """The protection department and admins see every department's letters and requests."""
        return self.principal.department is None

    def display_name(self, settings: Settings) -> str:
        if self.principal.department:
            return self.principal.department
        suffix = "（管理员）" if self.principal.scope == "admin" else ""
        return settings.protection_department + suffix


def may_use_console(principal: Principal) -> bool:
    return principal.department is not None or principal.scope in ("protection", "admin")


def sign_in(db: Database, settings: Settings, key: str, now: datetime) -> tuple[str, ConsoleUser]:
    """A new session for a valid protection, admin or department key: (cookie token, user)."""
    key = key.strip()
    if not key:
        raise SignInError("请粘贴您的访问密钥。")
    token, csrf = new_token(), new_token()
    with db.transaction() as session:
        principal = authenticate(session, key)
        if principal is None:
            raise SignInError("密钥无效或已停用，请核对后重试。")
        if not may_use_console(principal):
            raise SignInError("该密钥仅用于系统接入（intake），不能登录控制台；请使用部门密钥或消保部密钥。")
        session.execute(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))  # tidy up
        row = ConsoleSession(id=token_hash(token), api_key_id=principal.key_id, csrf_token=csrf, created_at=now,
                             last_seen_at=now, expires_at=now + timedelta(hours=settings.console_session_hours))
        session.add(row)
    return token, ConsoleUser(principal, csrf, row.id)


def load(db: Database, settings: Settings, token: str | None, now: datetime) -> ConsoleUser | None:
    """The user behind a cookie token, or None when it is unknown, expired, idle too long, or its
    key was revoked (such a session is deleted)."""
    if not token or len(token) > 200:
        return None
    sid = token_hash(token)
    idle = timedelta(minutes=settings.console_idle_minutes)
    with db.reading() as session:
        found = session.execute(select(ConsoleSession, ApiKey).join(ApiKey, ApiKey.id == ConsoleSession.api_key_id)
                                .where(ConsoleSession.id == sid)).first()
        if found is None:
            return None
        row, key = found
        alive = row.expires_at > now and row.last_seen_at + idle > now and not key.revoked
        user = ConsoleUser(Principal(key.id, key.name, key.scope), row.csrf_token, sid)
        stale = (now - row.last_seen_at).total_seconds() > TOUCH_SECONDS
    if not alive:
        sign_out(db, token)
        return None
    if stale:
        with db.transaction() as session:
            session.execute(update(ConsoleSession).where(ConsoleSession.id == sid).values(last_seen_at=now))
    return user


def sign_out(db: Database, token: str | None) -> None:
    if not token:
        return
    with db.transaction() as session:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == token_hash(token)))
