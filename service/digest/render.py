"""The digest as HTML (charts embedded as PNG data URIs), plain text and xlsx.

Rendering only reads the WeeklyDigest: no database access here. Times are shown in the digest's
time zone (the bank's).
"""

from __future__ import annotations

import base64
import io
import unicodedata
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from service.digest import charts
from service.digest.schema import WeeklyDigest
from service.digest.wording import OVERDUE_KINDS, title, week_dates
from service.digest.xlsx import workbook
from service.templating import environment, render_html

TEMPLATES = Path(__file__).resolve().parent / "templates"
FORMATS = {"json": "application/json", "html": "text/html; charset=utf-8", "text": "text/plain; charset=utf-8",
           "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


# --- formatting helpers (Jinja filters, also used by the xlsx writer) -------------------------
def pct(share: float | None, digits: int = 1) -> str:
    return "–" if share is None else f"{share * 100:.{digits}f}%"


def signed_pct(change_pct: float | None) -> str:
    if change_pct is None:
        return "–"
    return f"{'+' if change_pct > 0 else ''}{change_pct:.2f}%"


def signed(n: int | None) -> str:
    return "–" if n is None else f"{'+' if n > 0 else ''}{n}"


def number(x: float | int | None, digits: int = 1) -> str:
    if x is None:
        return "–"
    return str(x) if isinstance(x, int) else f"{x:.{digits}f}"


def _local(value: datetime | None, zone: ZoneInfo) -> datetime | None:
    return None if value is None else value.astimezone(zone)


def local_time(value: datetime | None, zone: ZoneInfo, fmt: str = "%Y-%m-%d %H:%M") -> str:
    local = _local(value, zone)
    return "–" if local is None else local.strftime(fmt)


def width(text: str) -> int:
    """Display width in a terminal: CJK characters take two columns."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def pad(value: Any, size: int, right: bool = False) -> str:
    text = str(value)
    fill = " " * max(size - width(text), 0)
    return fill + text if right else text + fill


def clip(text: str | None, size: int) -> str:
    text = (text or "").replace("\n", " ").replace("\r", " ")
    out, used = "", 0
    for c in text:
        w = width(c)
        if used + w > size - 1 and len(out) < len(text):
            return out + "…"
        out, used = out + c, used + w
    return out


def _environment() -> Environment:
    env = environment(FileSystemLoader(TEMPLATES))
    env.filters.update(pct=pct, signed_pct=signed_pct, signed=signed, number=number, pad=pad, clip=clip)
    env.globals.update(OVERDUE_KINDS=OVERDUE_KINDS)  # statuses: the label filter (service.vocab)
    return env


_ENV = _environment()


def _context(digest: WeeklyDigest) -> dict[str, Any]:
    zone = ZoneInfo(digest.timezone)
    first, last = week_dates(digest)
    return {"d": digest, "title": title(digest), "first_day": first, "last_day": last,
            "t": lambda v, fmt="%Y-%m-%d %H:%M": local_time(v, zone, fmt)}


# --- formats ----------------------------------------------------------------------------------
def to_json(digest: WeeklyDigest) -> bytes:
    return digest.model_dump_json(indent=2).encode("utf-8")


def to_html(digest: WeeklyDigest, image_src: Callable[[str, bytes], str] | None = None) -> Markup:
    """Print-ready HTML. Charts are PNG data URIs unless `image_src(name, png)` says otherwise (an
    email may refer to inline attachments instead)."""
    pngs = charts.all_charts(digest)
    src = image_src or (lambda _name, png: "data:image/png;base64," + base64.b64encode(png).decode("ascii"))
    images = {name: src(name, png) for name, png in pngs.items()}
    return render_html(_ENV.get_template("digest.html.j2"), **_context(digest), images=images,
                       charts_numbered=charts.cjk_font() is None)


def to_text(digest: WeeklyDigest) -> str:
    return _ENV.get_template("digest.txt.j2").render(**_context(digest))


def to_xlsx(digest: WeeklyDigest) -> bytes:
    buf = io.BytesIO()
    workbook(digest).save(buf)
    return buf.getvalue()


def render(digest: WeeklyDigest, fmt: str) -> bytes:
    """The digest in `fmt` (json, html, text, xlsx) as bytes."""
    if fmt == "json":
        return to_json(digest)
    if fmt == "html":
        return to_html(digest).encode("utf-8")
    if fmt == "text":
        return to_text(digest).encode("utf-8")
    if fmt == "xlsx":
        return to_xlsx(digest)
    raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def filename(digest: WeeklyDigest, fmt: str) -> str:
    return f"digest-{digest.week}.{'txt' if fmt == 'text' else fmt}"

