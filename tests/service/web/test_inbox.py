"""The inbox's deadline arithmetic on letters with known deadlines (SQLite and PostgreSQL): what
counts as overdue and as due soon, and that a department counts only its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from service.auth import Principal
from service.letters import Access
from service.tables import Letter
from service.web import inbox

NOW = datetime(2026, 5, 6, 2, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _letters(db) -> None:
    cases = [  # (department, status, ack due, response due)
        ("信用卡中心", "issued", NOW - DAY, NOW + 10 * DAY),          # not acknowledged in time
        ("信用卡中心", "acknowledged", NOW - 5 * DAY, NOW - DAY),    # not answered in time
        ("信用卡中心", "issued", NOW + timedelta(hours=12), NOW + 10 * DAY),  # ack due in 12 h
        ("信用卡中心", "issued", NOW + 2 * DAY, NOW + 10 * DAY),     # ack due in 2 days: not yet "soon"
        ("信用卡中心", "acknowledged", NOW - DAY, NOW + 2 * DAY),    # response due in 2 days
        ("信用卡中心", "resolved", NOW - 5 * DAY, NOW - DAY),        # resolved: never overdue
        ("个人信贷部", "issued", NOW - DAY, NOW - DAY),              # someone else's
    ]
    with db.transaction() as session:
        for seq, (department, status, ack, response) in enumerate(cases, start=1):
            session.add(Letter(year=2026, seq=seq, number=f"〔2026〕第{seq:04d}号", department=department,
                               status=status, issued_at=NOW - 6 * DAY, ack_due_at=ack, response_due_at=response))


def test_overdue_and_due_soon_counts(db):
    _letters(db)
    card_centre = Access(Principal(1, "k", "department:信用卡中心"))
    counts = inbox.counts(db, card_centre, NOW)
    assert (counts.overdue, counts.overdue_ack, counts.overdue_response) == (2, 1, 1)
    assert counts.due_soon == 2
    assert (counts.awaiting_ack, counts.in_progress) == (3, 2)
    everyone = inbox.counts(db, Access(Principal(2, "p", "protection")), NOW)
    assert everyone.overdue == 3 and everyone.overdue_ack == 2 and everyone.overdue_response == 2


def test_status_filters_and_flags_agree_with_the_counts(db):
    _letters(db)
    access = Access(Principal(1, "k", "department:信用卡中心"))
    zone = ZoneInfo("Asia/Shanghai")
    overdue = inbox.letters_page(db, access, inbox.InboxQuery(status="overdue"), NOW, zone)
    assert sorted(r.number for r in overdue.rows) == ["〔2026〕第0001号", "〔2026〕第0002号"]
    assert {r.number: r.overdue for r in overdue.rows} == {"〔2026〕第0001号": ["ack"], "〔2026〕第0002号": ["response"]}
    soon = inbox.letters_page(db, access, inbox.InboxQuery(status="due_soon"), NOW, zone)
    assert sorted(r.number for r in soon.rows) == ["〔2026〕第0003号", "〔2026〕第0005号"]
    assert all(r.due_soon for r in soon.rows)
    by_response = inbox.letters_page(db, access, inbox.InboxQuery(sort="response_due", descending=False), NOW, zone)
    assert [r.number for r in by_response.rows][:2] == ["〔2026〕第0002号", "〔2026〕第0006号"]
    assert by_response.total == 6


def test_date_filters_are_local_days(db):
    _letters(db)
    access = Access(Principal(2, "p", "protection"))
    zone = ZoneInfo("Asia/Shanghai")
    issued_day = (NOW - 6 * DAY).astimezone(zone).date()
    same_day = inbox.InboxQuery(date_from=issued_day, date_to=issued_day)
    assert inbox.letters_page(db, access, same_day, NOW, zone).total == 7
    assert inbox.letters_page(db, access, inbox.InboxQuery(date_from=issued_day + DAY), NOW, zone).total == 0
    assert inbox.letters_page(db, access, inbox.InboxQuery(date_to=issued_day - DAY), NOW, zone).total == 0
