"""The messages a letter sends (issued, repeat, reminder, resolved): outbox rows, written in the
transaction that changes the letter, to the contacts the routing file lists; the worker delivers
them once that transaction has committed (service.outbox)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from service.outbox import enqueue_email, enqueue_webhook
from service.routing import Routing
from service.settings import Settings
from service.tables import Letter


def notify(session: Session, routing: Routing, settings: Settings, now: datetime, letter: Letter, event: str,
           tag: str, *, subject: str, text: str, html: str | None, body: dict[str, Any],
           cc_protection: bool) -> None:
    """Messages to the letter's department (email and webhook, as the routing file lists them);
    with `cc_protection`, the protection department is copied (Cc, and its own webhook)."""
    contact = routing.contact(letter.department)
    protection = routing.contact(settings.protection_department)
    copy = cc_protection and protection.department != contact.department
    base = f"letter-{letter.year}-{letter.seq:04d}-{tag}"
    payload = {"event": event, "number": letter.number, "department": letter.department, **body,
               "links": {"json": f"{settings.public_url}/v1/letters/{letter.id}",
                         "html": f"{settings.public_url}/v1/letters/{letter.id}?format=html"}}
    if contact.emails or (copy and protection.emails):
        to = list(contact.emails) or list(protection.emails)
        cc = [a for a in protection.emails if a not in to] if copy else []
        enqueue_email(session, key=f"{base}-email", to=to, cc=cc, subject=subject, text=text, html=html,
                      event=event, letter_id=letter.id, now=now)
    if contact.webhook:
        enqueue_webhook(session, key=f"{base}-webhook", url=contact.webhook.url,
                        secret_env=contact.webhook.secret_env, body=payload, event=event, letter_id=letter.id,
                        now=now)
    if copy and protection.webhook:
        enqueue_webhook(session, key=f"{base}-webhook-cc", url=protection.webhook.url,
                        secret_env=protection.webhook.secret_env, body=payload, event=event, letter_id=letter.id,
                        now=now)
