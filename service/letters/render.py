"""Letters as print-ready HTML (A4) and plain text, and the short notices (reminder, repeat,
resolved), from Jinja2 templates in service/resources. Templates get the letter's JSON view only,
which holds masked data only, so nothing else can leak into a rendering."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from jinja2 import PackageLoader
from markupsafe import Markup

from service.letters.deadlines import last_day
from service.letters.schemas import LetterOut
from service.settings import Settings
from service.templating import environment, render_html

EVENT_NAMES = {"issued": "发函", "delivered": "送达", "undeliverable": "无法送达", "acknowledged": "签收",
               "reminded": "催办", "repeat": "再次来访", "extended": "延期", "resolved": "办结"}
OVERDUE_NAMES = {"ack": "逾期未签收", "response": "逾期未反馈"}


class LetterRenderer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        zone = settings.zone
        env = environment(PackageLoader("service", "resources"), keep_trailing_newline=True)

        def local(moment: datetime | None) -> str:
            if moment is None:
                return "—"
            t = moment.astimezone(zone)
            return f"{t.year}年{t.month}月{t.day}日 {t:%H:%M}"

        def day(value: date | datetime | None) -> str:
            if value is None:
                return "—"
            if isinstance(value, datetime):
                value = value.astimezone(zone).date()
            return f"{value.year}年{value.month}月{value.day}日"

        def due(deadline: datetime | None) -> str:
            """An end-of-day deadline shows as its last day."""
            return day(last_day(deadline, zone)) if deadline else "—"

        env.filters.update(local=local, day=day, due=due)
        env.globals.update(event_names=EVENT_NAMES, overdue_names=OVERDUE_NAMES)  # statuses: the label filter
        self._html = env.get_template("letter.html.j2")
        self._text = env.get_template("letter.txt.j2")
        self._notice = env.get_template("notice.txt.j2")

    def _context(self, letter: LetterOut) -> dict[str, Any]:
        s = self.settings
        return {"letter": letter, "sender": letter.sender, "ack_working_days": s.ack_working_days,
                "alert_channels": s.alert_channels,
                "reminder_hours": s.reminder_interval_hours, "public_url": s.public_url}

    def html(self, letter: LetterOut) -> Markup:
        return render_html(self._html, self._context(letter))

    def text(self, letter: LetterOut) -> str:
        return self._text.render(self._context(letter))

    def notice(self, kind: str, letter: LetterOut, **extra: Any) -> str:
        return self._notice.render(self._context(letter), kind=kind, note=extra.get("note"),
                                   summary=extra.get("summary"))
