"""The digest's wording every format shares (HTML and text in `service/digest/render.py`, the workbook
in `service/digest/xlsx.py`): the title and the labels of overdue kinds (statuses are labelled by service.vocab). Its own
module so the two renderers import it rather than each other."""

from __future__ import annotations

from datetime import date, timedelta
from zoneinfo import ZoneInfo

from service.digest.schema import WeeklyDigest

OVERDUE_KINDS = {"ack": "未按时签收", "response": "未按时办结", "ack+response": "未签收且未办结"}


def week_dates(digest: WeeklyDigest) -> tuple[date, date]:
    zone = ZoneInfo(digest.timezone)
    return digest.start.astimezone(zone).date(), (digest.end.astimezone(zone) - timedelta(seconds=1)).date()


def title(digest: WeeklyDigest) -> str:
    first, last = week_dates(digest)
    return f"投诉处理周报 {digest.week}（{first:%Y年%m月%d日} 至 {last:%m月%d日}）"
