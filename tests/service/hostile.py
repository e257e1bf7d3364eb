"""Hostile input for the pages, letters, e-mails and the digest: payloads an attacker would send
(script, img onerror, svg onload, attribute breakouts, closing </title> / </textarea> / </style>,
a javascript: link, template syntax, text that is already an entity, bidirectional controls), put
into every field a page shows, and the checks that none of it became markup.

`plant` sends them through the API as an upstream system and a department would: one regulator
referral per payload (so each gets a letter), its repeat, an acknowledgement, an extension, a
resolution for every other letter, an outcome and a silence; departments come from a routing file
whose names are payloads too (`write_routing`). `injected` and `INJECTED_JS` find what an escaping
bug would have created; `literal` is the text a page must show for a stored value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import pandas as pd
import yaml

from service.letters import mask_ref

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
PAYLOADS = (
    "<script>alert(9)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(2)><circle r=9></svg>",
    '"><b id=xss-dq onmouseover=alert(4)>',
    "'><i id=xss-sq onclick=alert(5)>",
    "</title><u id=xss-title>",
    "</textarea><s id=xss-ta onfocus=alert(6) autofocus>",
    "</style><p id=xss-style>",
    "<a href=javascript:alert(7) id=xss-js>",
    "{{ 7*7 }}{% raw %}&lt;i&gt;&amp;",
    "\u202e\u2066甲乙\u2069\u202c丙\u202a丁\u202d\u2067\u2068",
)
# Elements an escaping bug would create; none of the pages has them by design.
FORBIDDEN_TAGS = {"svg", "math", "iframe", "object", "embed", "marquee", "circle"}
CONSOLE_SCRIPT = "/console/static/console.js"
PROTECTION = "消费者权益保护部"


def strip_bidi(value: str) -> str:
    return value.translate({ord(c): None for c in BIDI})


def department(k: int) -> str:
    return f"部门{k}{PAYLOADS[k]}"


def stored(value: str) -> str:
    """What intake keeps of a free-text value made of these payloads: the same text without the
    bidirectional controls (nothing in them is personal data to mask)."""
    return strip_bidi(value)


def write_routing(path: Path) -> Path:
    """A routing file whose departments are named by the payloads; request k reaches department k
    through its branch."""
    departments = {PROTECTION: {"email": "xbb@bank.example"}}
    departments.update({department(k): {"email": f"h{k}@bank.example"} for k in range(len(PAYLOADS))})
    routes = [{"match": {"branch": stored(branch(k))}, "department": department(k)} for k in range(len(PAYLOADS))]
    path.write_text(yaml.safe_dump({"version": 1, "default_receiver": PROTECTION, "departments": departments,
                                    "routes": routes}, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def branch(k: int) -> str:
    return f"网点{k}{PAYLOADS[k]}"


def external_id(k: int, repeat: bool = False) -> str:
    """Ids are kept as sent, and refused with bidirectional controls: the planted ones have none."""
    return stored(f"{'R' if repeat else 'H'}{k}{PAYLOADS[k]}")


def fields_of(k: int) -> dict[str, str]:
    """The free-text fields of request k (as sent)."""
    p = PAYLOADS[k]
    return {"branch": branch(k), "customer_ref": f"C{k}{p}", "product": f"产品{k}{p}",
            "ack_note": f"签收{k}{p}", "reason": f"延期{k}{p}", "approved_by": f"批准{k}{p}",
            "resolve_note": f"办结{k}{p}", "outcome_note": f"结果{k}{p}", "silence_comment": f"静默{k}{p}",
            "text_head": f"附言{k}{p}。"}


class Http(Protocol):
    def post(self, url: str, **kw: Any) -> Any: ...
    def get(self, url: str, **kw: Any) -> Any: ...


@dataclass
class Planted:
    complaints: dict[int, int] = field(default_factory=dict)  # k → complaint id of request k
    repeats: dict[int, int] = field(default_factory=dict)  # k → complaint id of its repeat
    letters: dict[int, int] = field(default_factory=dict)  # k → letter id
    resolved: set[int] = field(default_factory=set)
    week: str = ""  # the ISO week the requests were received in (the last complete one)
    texts: dict[int, str] = field(default_factory=dict)  # k → the text sent


def letter_values(k: int, resolved: bool) -> list[str]:
    """What letter k must show literally: everything it holds from request k, its repeat, the
    department's notes and the department's name."""
    f = fields_of(k)
    values = [department(k), stored(f["branch"]), external_id(k), mask_ref(stored(f["customer_ref"])),
              stored(f["text_head"]), stored(f["ack_note"]), stored(f["reason"]), stored(f["approved_by"]),
              external_id(k, repeat=True)]
    return values + ([stored(f["resolve_note"])] if resolved else [])


def complaint_values(k: int, repeat: bool = False) -> list[str]:
    """What the complaint page of request k (or of its repeat) must show literally."""
    f = fields_of(k)
    return [external_id(k, repeat), stored(f["branch"]), mask_ref(stored(f["customer_ref"])),
            stored(f["text_head"]), department(k)]


def this_week(now: datetime | None = None) -> str:
    year, week, _ = (now or datetime.now(UTC)).astimezone(ZoneInfo("Asia/Shanghai")).isocalendar()
    return f"{year}-W{week:02d}"


def last_week_start(now: datetime, zone: ZoneInfo) -> datetime:
    local = now.astimezone(zone)
    monday = (local - timedelta(days=local.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    return monday - timedelta(days=7)


def plant(http: Http, admin: dict[str, str], intake: dict[str, str], corpus: pd.DataFrame,
          now: datetime | None = None) -> Planted:
    """Every payload in every field, through the API; `admin` and `intake` are Authorization headers."""
    now = now or datetime.now(UTC)
    start = last_week_start(now, ZoneInfo("Asia/Shanghai"))
    rows = corpus[corpus["escalated"] == "1"].sample(n=len(PAYLOADS), random_state=13).reset_index(drop=True)
    out = Planted(week=f"{start.isocalendar().year}-W{start.isocalendar().week:02d}")

    def ok(response: Any, *statuses: int) -> dict:
        assert response.status_code in statuses, response.text[:800]
        return response.json()

    for k, row in rows.iterrows():
        f = fields_of(int(k))
        text = f["text_head"] + row["text"]
        out.texts[int(k)] = text
        body = {"text": text, "channel": "监管转办", "branch": f["branch"], "customer_ref": f["customer_ref"],
                "product": f["product"], "received_at": (start + timedelta(days=2, hours=9 + int(k))).isoformat()}
        first = ok(http.post("/v1/complaints", json={**body, "external_id": external_id(int(k))}, headers=intake), 201)
        assert first["alert"] and first["alert"]["letter"], "a referral raises an alert and its letter"
        out.complaints[int(k)] = first["id"]
        out.letters[int(k)] = letter = first["alert"]["letter"]["id"]
        assert first["alert"]["department"] == department(int(k)), (k, first["alert"]["department"])
        ok(http.post(f"/v1/letters/{letter}/ack", json={"note": f["ack_note"]}, headers=admin), 200)
        ok(http.post(f"/v1/letters/{letter}/extend", json={"days": 60, "reason": f["reason"],
                                                            "approved_by": f["approved_by"]}, headers=admin), 200)
        again = ok(http.post("/v1/complaints", json={**body, "external_id": external_id(int(k), repeat=True),
                                                     "received_at": (start + timedelta(days=3)).isoformat()},
                             headers=intake), 201)
        out.repeats[int(k)] = again["id"]
        ok(http.post(f"/v1/complaints/{first['id']}/outcome", json={"note": f["outcome_note"], "escalated": True},
                     headers=admin), 200, 201)
        if k % 2:
            ok(http.post(f"/v1/letters/{letter}/resolve", json={"note": f["resolve_note"]}, headers=admin), 200)
            out.resolved.add(int(k))
        ok(http.post("/v1/silences", json={"branch": f["branch"], "comment": f["silence_comment"],
                                           "ends_at": (now + timedelta(days=1)).isoformat()}, headers=admin), 201)
    return out


# --- finding injected markup ----------------------------------------------------------------------------
def _bad_attribute(name: str, value: str | None) -> str | None:
    value = (value or "").strip().lower()
    if name.startswith("on"):
        return f"event handler {name}"
    if name in ("id", "class") and "xss" in value:
        return f"{name}={value}"
    if name in ("href", "src", "action", "formaction") and value.startswith("javascript:"):
        return f"{name}={value}"
    return None


class _Scan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in FORBIDDEN_TAGS:
            self.found.append(f"<{tag}>")
        if tag == "script" and dict(attrs).get("src") != CONSOLE_SCRIPT:
            self.found.append(f"<script {attrs}>")
        for name, value in attrs:
            bad = _bad_attribute(name, value)
            if bad:
                self.found.append(f"<{tag}> {bad}")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def scan(html: str) -> tuple[list[str], str]:
    """(what an escaping bug injected, the document's text with entities decoded)."""
    parser = _Scan()
    parser.feed(html)
    parser.close()
    return parser.found, "".join(parser.text)


def injected(html: str) -> list[str]:
    return scan(html)[0]


# The same in the browser, through shadow roots (the letter and the digest live in one).
INJECTED_JS = """() => {
  const found = [], roots = [document], forbidden = FORBIDDEN, consoleScript = "CONSOLE_SCRIPT";
  for (let i = 0; i < roots.length; i++) {
    for (const el of roots[i].querySelectorAll("*")) {
      if (el.shadowRoot) roots.push(el.shadowRoot);
      const tag = el.localName;
      if (forbidden.includes(tag)) found.push("<" + tag + ">");
      if (tag === "script" && el.getAttribute("src") !== consoleScript) found.push("<script> " + el.outerHTML);
      for (const a of el.attributes) {
        const v = a.value.trim().toLowerCase();
        if (a.name.startsWith("on")) found.push("<" + tag + "> " + a.name);
        if ((a.name === "id" || a.name === "class") && v.includes("xss")) found.push("<" + tag + "> " + a.name + "=" + v);
        if (["href", "src", "action", "formaction"].includes(a.name) && v.startsWith("javascript:"))
          found.push("<" + tag + "> " + a.name + "=" + v);
      }
    }
  }
  return found;
}""".replace("FORBIDDEN", json.dumps(sorted(FORBIDDEN_TAGS))).replace("CONSOLE_SCRIPT", CONSOLE_SCRIPT)
# Every text node of the page, shadow roots included, and the values of form fields; a text with
# highlighted phrases is also taken whole (its <mark>s split it into several text nodes).
TEXT_JS = """() => {
  const parts = [document.title], roots = [document];
  for (let i = 0; i < roots.length; i++) {
    const walker = document.createTreeWalker(roots[i], NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) parts.push(walker.currentNode.data);
    for (const el of roots[i].querySelectorAll("*")) {
      if (el.shadowRoot) roots.push(el.shadowRoot);
      if (el.localName === "option" || el.localName === "input") parts.push(el.value);
      if (el.querySelector(":scope > mark")) parts.push(el.textContent);
    }
  }
  return parts.join("\\n");
}"""


def missing(text: str, expected: list[str]) -> list[str]:
    """The expected values the page does not show literally."""
    return [value for value in expected if value not in text]

